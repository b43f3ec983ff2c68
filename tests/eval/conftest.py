"""Shared helpers of the moss-eval tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moss_eval import ImageRecord, RunDirectory


def write_run_dir(path: Path, items: list[dict[str, Any]], *, moss: str = "k2") -> list[dict[str, Any]]:
    """A run folder as tools/run.py writes it: ``images/<id>.png`` then ``records/<id>.json`` per item.

    Each item: ``image`` (uint8 (H, W, 3)) and ``prompt``; optional ``id`` (default ``<index:05d>``), ``seed``
    (default the index) and ``extra`` (record keys beyond the format's, e.g. ``benchmark``). Returns the records as
    dicts, in order.
    """
    run = RunDirectory(path)
    records = []
    for i, item in enumerate(items):
        image = np.asarray(item["image"])
        rid = item.get("id", f"{i:05d}")
        run.write_image(rid, image)
        record = ImageRecord(
            id=rid, index=i, prompt=item["prompt"], seed=item.get("seed", i), run_name=f"tiny-{moss}",
            model="tiny", moss=moss, attn="cssa", image=f"images/{rid}.png", resolution=image.shape[0],
            latency_s={"backbone": 0.1, "total": 0.2}, tokens_processed=10, forward_passes=3, kv_cache_bytes=100,
            extra=dict(item.get("extra") or {}),
        )  # fmt: skip
        run.write_record(record)
        records.append(record.to_dict())
    return records
