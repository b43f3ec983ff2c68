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
from moss_models.infinity import MossConfig, get_schedule
from moss_run.data import PromptDataset, collate_items
from moss_run.errors import UserError
from moss_run.models import check_model_files
from moss_run.module import GenerationModule, warn_fallback
from moss_run.writer import ImageRecordWriter, atomic_write_text, completed_ids, finalize_run

log = logging.getLogger("moss.run")


class PromptDataModule(L.LightningDataModule):
    """Serves the prompts that are not done yet; rank 0 decides which, so every rank shards the same list."""

    def __init__(self, dataset: PromptDataset, run_dir: Path, batch_size: int):
        super().__init__()
        self.dataset, self.run_dir, self.batch_size = dataset, run_dir, batch_size
        self.todo: PromptDataset | None = None

    def setup(self, stage: str) -> None:
        todo = [it.id for it in self.dataset.items if it.id not in completed_ids(self.run_dir)]
        self.todo = self.dataset.subset(self.trainer.strategy.broadcast(todo, src=0))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.todo, batch_size=self.batch_size, shuffle=False, collate_fn=collate_items)


def moss_config(cfg: DictConfig) -> MossConfig | None:
    m = cfg.moss
    if m.thresholds is None:
        return None
    thresholds = tuple(float(t) for t in _plain(m.thresholds))
    if m.num_draft_scales is not None:
        scales = len(get_schedule(cfg.generation.resolution, cfg.generation.aspect_ratio).grids)
        if scales - int(m.num_draft_scales) != len(thresholds):
            raise UserError(
                f"moss.num_draft_scales={m.num_draft_scales} leaves {scales - int(m.num_draft_scales)} refine scales "
                f"of the {scales}-scale schedule, but moss.thresholds has {len(thresholds)} entries {list(thresholds)}; "
                f"give one threshold per refine scale"
            )
    return MossConfig(
        thresholds=thresholds,
        scorer=cfg.dispatch.name,
        scorer_params=_plain(cfg.dispatch.params) or {},
        mode=cfg.attn.mode,
        backend=cfg.attn.backend,
        sa_impl=cfg.attn.sa_impl,
    )


def _plain(value):
    """Plain Python containers (resolver results already are)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def check_machine(cfg: DictConfig, moss: MossConfig | None, fallbacks: list[str]) -> str:
    """Errors for what this machine cannot run; returns the RoPE implementation to use."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    cuda = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not cuda:
        raise UserError(
            f"trainer.accelerator={accelerator} needs a CUDA GPU and torch sees none (torch.cuda.is_available() is "
            "False). Use trainer=cpu, or trainer=ddp trainer.accelerator=cpu trainer.devices=N for several CPU "
            "processes."
        )
    if moss is not None:
        try:
            get_backend(moss.backend)
        except BackendUnavailableError as err:
            raise UserError(
                f"attn={cfg.attn.name}: {err}. Use attn=cssa (torch sdpa) or attn=cssa_flex instead."
            ) from None
    rope_impl = cfg.attn.rope_impl
    gpu_run = cuda and accelerator in ("gpu", "cuda", "auto")
    if rope_impl == "triton" and not gpu_run and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        warn_fallback(
            fallbacks,
            f"attn={cfg.attn.name} asks for the Triton RoPE kernels, which need CUDA (or TRITON_INTERPRET=1 on CPU); "
            "this run used the torch RoPE reference instead",
        )
        rope_impl = "torch"
    return rope_impl


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
        "attn": cfg.attn.name,
        "dispatch": cfg.dispatch.name,
    }
    fallbacks: list[str] = []
    check_model_files(cfg.model)
    moss = moss_config(cfg)
    rope_impl = check_machine(cfg, moss, fallbacks)
    try:
        dataset = instantiate(cfg.data)
    except Exception as err:  # Hydra wraps errors raised by the target; surface ours plainly
        cause = err.__cause__ or err
        if isinstance(cause, UserError):
            raise cause from None
        raise
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    done = completed_ids(run_dir) & {it.id for it in dataset.items}
    if len(done) == len(dataset):
        log.info(
            "all %d images of %s are already in %s; rebuilding the summary",
            len(dataset),
            dataset.source,
            run_dir,
        )
        return finalize_run(run_dir, run_info)
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
        generation=OmegaConf.to_container(cfg.generation, resolve=True),
        moss=moss,
        rope_impl=rope_impl,
        measure=OmegaConf.to_container(cfg.measure),
        run_info=run_info,
        fallbacks=fallbacks,
    )
    try:
        trainer.predict(
            module,
            datamodule=PromptDataModule(dataset, run_dir, int(cfg.generation.batch_size)),
            return_predictions=False,
        )
    finally:
        if logger and hasattr(logger, "experiment") and trainer.is_global_zero:
            import wandb

            wandb.finish()
    return writer.summary or {}
