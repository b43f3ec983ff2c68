"""The main job: compose → check → build → Lightning predict → records, summary, W&B."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from moss_attention import BackendUnavailableError, get_backend
from moss_eval import RunDirectory
from moss_models import Method
from moss_run.data import PromptDataset, collate_items
from moss_run.errors import UserError
from moss_run.models import check_model_files
from moss_run.module import GenerationModule, warn_fallback
from moss_run.writer import ImageRecordWriter

log = logging.getLogger("moss.run")


class PromptDataModule(L.LightningDataModule):
    """Serves the prompts that are not done yet; rank 0 decides which, so every rank shards the same list."""

    def __init__(self, dataset: PromptDataset, run_dir: Path, batch_size: int):
        super().__init__()
        self.dataset, self.run_dir, self.batch_size = dataset, run_dir, batch_size
        self.todo: PromptDataset | None = None

    def setup(self, stage: str) -> None:
        todo = [it.id for it in self.dataset.items if it.id not in RunDirectory(self.run_dir).completed_ids()]
        self.todo = self.dataset.subset(self.trainer.strategy.broadcast(todo, src=0))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.todo, batch_size=self.batch_size, shuffle=False, collate_fn=collate_items)


def build_object(node: DictConfig, key: str):
    """``instantiate`` one config group, with the errors its classes raise as user errors naming the key."""
    try:
        return instantiate(node)
    except Exception as err:  # Hydra wraps errors raised by the target; surface ours plainly
        cause = err.__cause__ or err
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, ValueError | TypeError):
            raise UserError(f"{key}: {cause}") from None
        raise


def build_method(cfg: DictConfig) -> Method:
    """The method of ``conf/moss`` (its ``attn`` and ``dispatch`` groups nested in it), checked on the run's
    schedule before any model is built."""
    from moss_models.core import model_entry

    method = build_object(cfg.moss, f"moss={cfg.moss.name}")
    try:
        schedule = model_entry(cfg.model.name).schedule(
            cfg.generation.resolution, cfg.generation.aspect_ratio
        )
    except ValueError as err:
        raise UserError(f"generation.resolution={cfg.generation.resolution}: {err}") from None
    try:
        method.plan(schedule.grids)
    except ValueError as err:
        raise UserError(f"moss={cfg.moss.name}: {err}") from None
    return method


def check_machine(cfg: DictConfig, method: Method, fallbacks: list[str]) -> Method:
    """Errors for what this machine cannot run; returns the method with the attention this machine runs."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    cuda = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not cuda:
        raise UserError(
            f"trainer.accelerator={accelerator} needs a CUDA GPU and torch sees none (torch.cuda.is_available() is "
            "False). Use trainer=cpu, or trainer=ddp trainer.accelerator=cpu trainer.devices=N for several CPU "
            "processes."
        )
    attn_name = HydraConfig.get().runtime.choices.get("attn")
    try:
        get_backend(method.attention.backend)
    except BackendUnavailableError as err:
        raise UserError(
            f"attn={attn_name}: {err}. Use attn=cssa (torch sdpa) or attn=cssa_flex instead."
        ) from None
    rope_impl = method.attention.rope_impl
    gpu_run = cuda and accelerator in ("gpu", "cuda", "auto")
    if rope_impl == "triton" and not gpu_run and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        warn_fallback(
            fallbacks,
            f"attn={attn_name} asks for the Triton RoPE kernels, which need CUDA (or TRITON_INTERPRET=1 on CPU); "
            "this run used the torch RoPE reference instead",
        )
        return method.with_attention(method.attention.with_(rope_impl="torch"))
    return method


def _cluster_managed() -> bool:
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


def run(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    choices = HydraConfig.get().runtime.choices
    run_info = {
        "run_name": cfg.run_name,
        "model": choices.get("model"),
        "moss": cfg.moss.name,
        "attn": choices.get("attn"),
        "dispatch": choices.get("dispatch"),
    }
    fallbacks: list[str] = []
    check_model_files(cfg.model)
    method = check_machine(cfg, build_method(cfg), fallbacks)
    generation = build_object(cfg.generation, "generation")
    dataset = build_object(cfg.data, "data")
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        RunDirectory(run_dir).write_config(OmegaConf.to_yaml(cfg, resolve=True))

    done = RunDirectory(run_dir).completed_ids() & {it.id for it in dataset.items}
    if len(done) == len(dataset):
        log.info(
            "all %d images of %s are already in %s; rebuilding the summary",
            len(dataset),
            dataset.source,
            run_dir,
        )
        return RunDirectory(run_dir).finalize(run_info)
    if done:
        log.info("resuming in %s: %d of %d images done", run_dir, len(done), len(dataset))

    trainer_cfg = OmegaConf.to_container(cfg.trainer)
    if (
        trainer_cfg.get("strategy") == "ddp"
        and HydraConfig.get().mode == RunMode.MULTIRUN
        and not _cluster_managed()
    ):
        # Lightning's ddp relaunches this script per rank, and the relaunched script would run the whole sweep
        # again; spawning keeps one sweep and one folder per point. (Under SLURM or torchrun the ranks already
        # exist and nothing is relaunched, so ddp stays.)
        log.info("inside a Hydra multirun: using strategy=ddp_spawn instead of ddp")
        trainer_cfg["strategy"] = "ddp_spawn"
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    writer = ImageRecordWriter(run_dir, run_info)
    trainer = instantiate(trainer_cfg, callbacks=[writer], logger=logger)
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    module = GenerationModule(
        instantiate(cfg.model),
        generation=generation,
        method=method,
        measure=OmegaConf.to_container(cfg.measure),
        run_info=run_info,
        fallbacks=fallbacks,
    )
    try:
        trainer.predict(
            module,
            datamodule=PromptDataModule(dataset, run_dir, int(generation.batch_size)),
            return_predictions=False,
        )
    finally:
        if logger and hasattr(logger, "experiment") and trainer.is_global_zero:
            import wandb

            wandb.finish()
    return writer.summary or {}
