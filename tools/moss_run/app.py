"""The main job: compose → check → build → Lightning predict → records, summary, W&B."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from moss_eval import RunDirectory
from moss_run.data import PromptDataset, collate_items
from moss_run.module import GenerationModule
from moss_run.prepare import Prepared
from moss_run.writer import ImageRecordWriter, with_machine

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


def _cluster_managed() -> bool:
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


def run(cfg: DictConfig, prepared: Prepared, after: Callable[[Any], None] | None = None) -> dict:
    """Generate the prepared run's missing images with Lightning; returns the run's summary.

    ``after(wandb_run_or_None)`` runs on rank 0 once the folder is complete, while the run's W&B run is still open
    (the quality step logs its scores there).
    """
    run_dir, dataset, run_info = prepared.run_dir, prepared.dataset, prepared.run_info
    folder = RunDirectory(run_dir)
    done = folder.completed_ids() & {it.id for it in dataset.items}
    if len(done) == len(dataset):
        summary = folder.finalize(with_machine(run_info))
        report(run_dir, summary, written=0, note=f"all {len(dataset)} images were already there")
        if after is not None:
            logger = instantiate(cfg.logger) if cfg.get("logger") else None
            try:
                after(_wandb_run(logger))
            finally:
                if _wandb_run(logger) is not None:
                    import wandb

                    wandb.finish()
        return summary
    if done:
        log.info("resuming in %s: %d of %d images done", run_dir, len(done), len(dataset))
    quiet_third_party_logs()

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
        generation=prepared.generation,
        method=prepared.method,
        measure=OmegaConf.to_container(cfg.measure),
        run_info=run_info,
        fallbacks=prepared.fallbacks,
        warmup_condition=prepared.dataset.items[0].condition,
    )
    try:
        trainer.predict(
            module,
            datamodule=PromptDataModule(dataset, run_dir, int(prepared.generation.batch_size)),
            return_predictions=False,
        )
        summary = writer.summary or {}
        if trainer.is_global_zero:
            report(run_dir, summary, written=writer.written, logger=logger)
            if after is not None:
                after(_wandb_run(logger))
    finally:
        if logger and hasattr(logger, "experiment") and trainer.is_global_zero:
            import wandb

            wandb.finish()
    return summary


def _wandb_run(logger):
    """The open W&B run of a Lightning W&B logger (None for other loggers or none)."""
    from lightning.pytorch.loggers import WandbLogger

    return logger.experiment if isinstance(logger, WandbLogger) else None


def quiet_third_party_logs() -> None:
    """Silence what a user cannot act on: Lightning's device and advertising lines, matplotlib's font cache."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "matplotlib",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


def report(run_dir: Path, summary: dict, *, written: int, note: str = "", logger=None) -> None:
    """The run's last line: how many images were written, where, and the headline numbers."""
    total = summary.get("num_images", 0)
    backbone = ((summary.get("latency_s") or {}).get("backbone") or {}).get("median")
    tokens = (summary.get("tokens_processed") or {}).get("median")
    kv = (summary.get("kv_cache_bytes") or {}).get("median")
    parts = [
        f"moss: wrote {written} image{'s' if written != 1 else ''} ({total} in the folder) to {run_dir}"
        + (f" [{note}]" if note else ""),
        f"backbone median {backbone:.4f} s/image" if backbone is not None else "",
        f"{tokens:.0f} tokens" if tokens is not None else "",
        f"KV cache {kv / 2**20:.2f} MiB/image" if kv is not None else "",
    ]
    wandb_dir = getattr(getattr(logger, "experiment", None), "dir", None) if logger else None
    if wandb_dir:
        parts.append(f"W&B run files in {Path(wandb_dir).parent}")
    line = "; ".join(p for p in parts if p)
    record = logging.LogRecord(log.name, logging.INFO, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:  # run.log; the console gets the plain line below
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(line, flush=True)
