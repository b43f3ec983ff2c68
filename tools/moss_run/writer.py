"""Writes every image and its record as soon as its batch finishes, atomically, so runs resume cleanly.

Layout of a run directory::

    images/<id>.png        the image (RGB)
    records/<id>.json      its record (written after the PNG: a record means the image is complete)
    records.jsonl          every record, one JSON line each, in prompt order (rebuilt at the end of each run)
    summary.json           means and medians over all records, fallbacks, run information
    config.yaml            the resolved Hydra configuration

Every file is written to a temporary name in the same folder and renamed, so a killed run never leaves a
half-written image or record behind. A rerun into the same folder generates only the missing ids.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_png(path: Path, image: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def completed_ids(run_dir: Path) -> set[str]:
    """Ids whose image and record are both on disk."""
    records = run_dir / "records"
    if not records.is_dir():
        return set()
    return {p.stem for p in records.glob("*.json") if (run_dir / "images" / f"{p.stem}.png").is_file()}


def read_records(run_dir: Path) -> list[dict]:
    records = [json.loads(p.read_text()) for p in (run_dir / "records").glob("*.json")]
    return sorted(records, key=lambda r: (r["index"], r["id"]))


def _stats(values: Iterable[float | None]) -> dict | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {
        "mean": statistics.fmean(vals),
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
    }


def summarize_records(records: list[dict], run_info: dict) -> dict:
    stages = sorted({k for r in records for k in r["latency_s"]})
    fallbacks = sorted({f for r in records for f in r.get("fallbacks", [])})
    return {
        **run_info,
        "num_images": len(records),
        "latency_s": {s: _stats(r["latency_s"].get(s) for r in records) for s in stages},
        "tokens_processed": _stats(r["tokens_processed"] for r in records),
        "forward_passes": _stats(r["forward_passes"] for r in records),
        "kv_cache_bytes": _stats(r["kv_cache_bytes"] for r in records),
        "peak_memory_bytes": _stats(r["peak_memory_bytes"] for r in records),
        "flops": _stats(r["flops"] for r in records),
        "fallbacks": fallbacks,
    }


def finalize_run(run_dir: Path, run_info: dict) -> dict:
    """Rebuild records.jsonl and summary.json from the per-image records (idempotent)."""
    records = read_records(run_dir)
    atomic_write_text(run_dir / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    summary = summarize_records(records, run_info)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


class ImageRecordWriter(BasePredictionWriter):
    def __init__(self, run_dir: str | Path, run_info: dict):
        super().__init__(write_interval="batch")
        self.run_dir = Path(run_dir)
        self.run_info = dict(run_info)
        self.summary: dict | None = None
        self.written = 0

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        for item in prediction:
            record = item["record"]
            save_png(self.run_dir / "images" / f"{record['id']}.png", item["image"])
            atomic_write_text(self.run_dir / "records" / f"{record['id']}.json", json.dumps(record) + "\n")
            self.written += 1

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("moss-writer-done")  # every rank has written its shard
        if trainer.is_global_zero:
            self.summary = finalize_run(self.run_dir, self.run_info)
            _log_to_wandb(trainer, self.run_dir, self.summary)


def _log_to_wandb(trainer, run_dir: Path, summary: dict) -> None:
    from lightning.pytorch.loggers import WandbLogger

    loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    if not loggers:
        return
    import wandb

    run = loggers[0].experiment
    records = read_records(run_dir)
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
    for r in records:
        table.add_data(
            r["id"],
            r["prompt"],
            r["seed"],
            wandb.Image(str(run_dir / r["image"]), caption=r["prompt"]),
            r["latency_s"].get("backbone"),
            r["tokens_processed"],
            r["kv_cache_bytes"],
            r["forward_passes"],
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
