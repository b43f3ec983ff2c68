"""Writes every image and its record as soon as its batch finishes, atomically, so runs resume cleanly.

The run-directory layout, the record format and the atomic writes belong to moss-eval
(:mod:`moss_eval.records`: :class:`~moss_eval.records.RunDirectory`, :class:`~moss_eval.records.ImageRecord`);
this module is the Lightning callback that uses them, plus the W&B table of a finished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from moss_eval.records import ImageRecord, RunDirectory
from moss_run.machine import machine_info


def _as_record(record: ImageRecord | dict[str, Any]) -> ImageRecord:
    if isinstance(record, ImageRecord):
        return record
    return ImageRecord.from_dict(record, source=f"prediction record {record.get('id')!r}")


class ImageRecordWriter(BasePredictionWriter):
    """Writes each prediction ``{"image": uint8 HWC array, "record": ImageRecord | dict}`` into the run directory.

    The PNG first, then its record (so a record means a complete image); at the end, rank 0 rebuilds
    ``records.jsonl`` and ``summary.json`` (kept in :attr:`summary`) and logs them to W&B if a W&B logger is set.
    """

    def __init__(self, run_dir: str | Path, run_info: dict):
        super().__init__(write_interval="batch")
        self.run_dir = Path(run_dir)
        self.run = RunDirectory(self.run_dir)
        self.run_info = dict(run_info)
        self.summary: dict | None = None
        self.written = 0

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        for item in prediction:
            record = _as_record(item["record"])
            self.run.write_image(record.id, item["image"])
            self.run.write_record(record)
            self.written += 1

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("moss-writer-done")  # every rank has written its shard
        if trainer.is_global_zero:
            self.summary = self.run.finalize(with_machine(self.run_info))
            _log_to_wandb(trainer, self.run, self.summary)


def with_machine(run_info: dict) -> dict:
    """``summary.json``'s run fields: ``run_info`` and the machine that wrote the summary (``machine``; a resumed run
    may have drawn earlier images on another, and images are reproducible per CPU, not across instruction sets)."""
    return {**run_info, "machine": machine_info()}


def _log_to_wandb(trainer, run_dir: RunDirectory, summary: dict) -> None:
    from lightning.pytorch.loggers import WandbLogger

    loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    if not loggers:
        return
    import wandb

    run = loggers[0].experiment
    table = wandb.Table(
        columns=[
            "id",
            "prompt",
            "seed",
            "image",
            "backbone_s",
            "tokens_processed",
            "kv_cache_bytes",
            "forward_passes",
        ]
    )
    for r in run_dir.read_records():
        table.add_data(
            r.id,
            r.prompt,
            r.seed,
            wandb.Image(str(run_dir.path / r.image), caption=r.prompt),
            r.latency_s.get("backbone"),
            r.tokens_processed,
            r.kv_cache_bytes,
            r.forward_passes,
        )
    run.log({"images": table})
    flat = {"num_images": summary["num_images"]}
    for stage, stats in summary["latency_s"].items():
        if stats:
            flat[f"latency_s/{stage}/median"] = stats["median"]
    for key in ("tokens_processed", "kv_cache_bytes", "peak_memory_bytes", "flops", "forward_passes"):
        if summary[key]:
            flat[f"{key}/mean"] = summary[key]["mean"]
    run.summary.update(flat)
