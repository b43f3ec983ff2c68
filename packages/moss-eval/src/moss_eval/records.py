"""The run-record format: one JSON object per generated image, and the run directory that holds them.

An :class:`ImageRecord` is one image's record, exactly the JSON object stored on disk::

    {"id", "index", "prompt", "seed", "run_name", "model", "moss", "attn", "dispatch", "image", "resolution",
     "aspect_ratio", "batch_size", "latency_s": {stage: seconds, ...}, "tokens_processed", "tokens_per_pass",
     "forward_passes", "kv_cache_bytes", "peak_memory_bytes", "flops", "fallbacks", "rank", **extra}

Keys beyond these go into :attr:`ImageRecord.extra` and are written flat next to them, so a new key needs no
schema change. Only :data:`REQUIRED_FIELDS` must be present when reading; the others default to ``None`` (or an
empty list).

A :class:`RunDirectory` is the folder of one run::

    images/<id>.png        the image (RGB)
    records/<id>.json      its record (written after the PNG: a record means the image is complete)
    records.jsonl          every record, one JSON line each, in prompt order (rebuilt by finalize())
    summary.json           means and medians over all records, fallbacks, run information
    config.yaml            the resolved configuration

Every file is written to a temporary name in the same folder, fsynced and renamed over the target
(:func:`atomic_write_bytes`), so a killed run never leaves a half-written image or record behind, and a rerun
into the same folder needs only the ids missing from :meth:`RunDirectory.completed_ids`. Files are created
with mode ``0o644 & ~umask`` (runs are shared between users).

Only the standard library is used; :meth:`RunDirectory.write_image` needs pillow (the ``moss-eval[sweep]``
extra), imported on first use.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import secrets
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "FILE_MODE",
    "REQUIRED_FIELDS",
    "RUN_FIELDS",
    "ImageRecord",
    "RecordFormatError",
    "RunDirectory",
    "atomic_write_bytes",
    "atomic_write_text",
    "png_bytes",
    "summarize_records",
]

# Keys a record must have to be read (what the sweep summary needs); the others default.
REQUIRED_FIELDS = (
    "prompt",
    "seed",
    "run_name",
    "model",
    "moss",
    "attn",
    "image",
    "resolution",
    "latency_s",
    "tokens_processed",
    "forward_passes",
    "kv_cache_bytes",
)
# Fields that describe the run, not the image: every record of one run directory must agree on them.
RUN_FIELDS = ("run_name", "model", "moss", "attn", "dispatch", "resolution", "aspect_ratio")
# Mode of every file written here, before the umask is applied.
FILE_MODE = 0o644


class RecordFormatError(ValueError):
    """A record (or a file of records) is malformed: not JSON, not an object, or missing a required key."""


# ----------------------------------------------------------------------------------------------- writing


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, ``os.replace``.

    The parent folder is created if needed. The file gets mode ``0o644 & ~umask`` (the temporary file is
    created with that mode, so the rename never exposes a narrower or wider one). On any error the temporary
    file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, FILE_MODE)  # the kernel applies the umask: 0o644 & ~umask
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"could not create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def png_bytes(image: Any) -> bytes:
    """A uint8 ``(H, W, 3)`` array (NumPy, as PIL takes it) encoded as PNG; needs pillow."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError(
            "writing PNG images needs pillow: install the moss-eval[sweep] extra "
            "(uv pip install 'moss-eval[sweep]') or pillow itself"
        ) from err
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- records


@dataclass(kw_only=True)
class ImageRecord:
    """One image's record; :meth:`to_dict` is the JSON object stored in ``records/<id>.json``.

    Field order is the JSON key order. Keys the format does not name live in :attr:`extra` and are written
    flat after the named ones (they must not repeat a field name).
    """

    id: str | None = None
    index: int | None = None
    prompt: str
    seed: int
    run_name: str
    model: str | None
    moss: str
    attn: str
    dispatch: str | None = None
    image: str  # path of the PNG relative to the run directory: images/<id>.png
    resolution: Any  # as configured (an int such as 1024, or a name)
    aspect_ratio: float | str | None = None
    batch_size: int | None = None
    latency_s: dict[str, float]  # stage -> seconds per image; "backbone" and "total" among them
    tokens_processed: int | None
    tokens_per_pass: list[int] = field(default_factory=list)
    forward_passes: int | None
    kv_cache_bytes: int | None
    peak_memory_bytes: int | None = None  # None off CUDA
    flops: int | None = None  # None unless counted
    fallbacks: list[str] = field(default_factory=list)
    rank: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.latency_s, Mapping):
            raise RecordFormatError(
                f"latency_s must be an object of per-stage seconds, got {type(self.latency_s).__name__}"
            )
        clash = sorted(set(self.extra) & _FIELD_NAMES)
        if clash:
            raise ValueError(f"extra repeats record fields: {', '.join(clash)}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every field in order, then the ``extra`` keys (a deep copy)."""
        out = {name: copy.deepcopy(getattr(self, name)) for name in _FIELD_ORDER}
        out.update(copy.deepcopy(self.extra))
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as one line of JSON (no trailing newline)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, source: str | None = None) -> ImageRecord:
        """Read a record object; keys the format does not name go into ``extra``.

        Raises :class:`RecordFormatError` (a ``ValueError``) naming ``source`` (a file, ``file:line``) when
        ``d`` is not a dict, lacks one of :data:`REQUIRED_FIELDS`, or its ``latency_s`` is not an object.
        """
        where = f"{source}: " if source else ""
        if not isinstance(d, Mapping):
            raise RecordFormatError(f"{where}a record must be a JSON object, got {type(d).__name__}")
        missing = [k for k in REQUIRED_FIELDS if k not in d]
        if missing:
            raise RecordFormatError(f"{where}record lacks {', '.join(missing)}")
        if not isinstance(d["latency_s"], Mapping):
            raise RecordFormatError(f"{where}latency_s must be an object of per-stage seconds")
        d = copy.deepcopy(dict(d))
        known = {k: d.pop(k) for k in _FIELD_ORDER if k in d}
        return cls(**known, extra=d)


_FIELD_ORDER = tuple(f.name for f in fields(ImageRecord) if f.name != "extra")
_FIELD_NAMES = frozenset((*_FIELD_ORDER, "extra"))


def _record_order(record: ImageRecord) -> tuple:
    return (record.index if isinstance(record.index, int) else math.inf, str(record.id))


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


def summarize_records(
    records: Iterable[ImageRecord | Mapping[str, Any]], run_info: Mapping[str, Any]
) -> dict[str, Any]:
    """``summary.json``: ``run_info``, the number of images, stats (mean, median, min, max) and fallbacks."""
    records = [r if isinstance(r, ImageRecord) else ImageRecord.from_dict(r) for r in records]
    stages = sorted({k for r in records for k in r.latency_s})
    fallbacks = sorted({f for r in records for f in (r.fallbacks or [])})
    return {
        **run_info,
        "num_images": len(records),
        "latency_s": {s: _stats(r.latency_s.get(s) for r in records) for s in stages},
        "tokens_processed": _stats(r.tokens_processed for r in records),
        "forward_passes": _stats(r.forward_passes for r in records),
        "kv_cache_bytes": _stats(r.kv_cache_bytes for r in records),
        "peak_memory_bytes": _stats(r.peak_memory_bytes for r in records),
        "flops": _stats(r.flops for r in records),
        "fallbacks": fallbacks,
    }


# ----------------------------------------------------------------------------------------------- run directory


class RunDirectory:
    """The folder of one run (layout in the module docstring); nothing is created until something is written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def images_dir(self) -> Path:
        return self.path / "images"

    @property
    def records_dir(self) -> Path:
        return self.path / "records"

    @property
    def records_jsonl(self) -> Path:
        return self.path / "records.jsonl"

    @property
    def summary_json(self) -> Path:
        return self.path / "summary.json"

    @property
    def config_yaml(self) -> Path:
        return self.path / "config.yaml"

    def image_path(self, id: str) -> Path:
        return self.images_dir / f"{id}.png"

    def record_path(self, id: str) -> Path:
        return self.records_dir / f"{id}.json"

    def completed_ids(self) -> set[str]:
        """Ids whose image and record are both on disk (a record is written only after its image)."""
        if not self.records_dir.is_dir():
            return set()
        return {p.stem for p in self.records_dir.glob("*.json") if self.image_path(p.stem).is_file()}

    def write_image(self, id: str, image: Any) -> Path:
        """Save a uint8 ``(H, W, 3)`` array (NumPy, as PIL takes it) as ``images/<id>.png``, atomically."""
        path = self.image_path(id)
        atomic_write_bytes(path, png_bytes(image))
        return path

    def write_record(self, record: ImageRecord) -> Path:
        """Write ``records/<id>.json`` atomically; call it after :meth:`write_image` (a record means done)."""
        if not isinstance(record, ImageRecord):
            raise TypeError(f"write_record takes an ImageRecord, got {type(record).__name__}")
        if record.id is None or not str(record.id):
            raise ValueError(f"a record needs an id to be written to {self.records_dir}")
        path = self.record_path(str(record.id))
        atomic_write_text(path, record.to_json() + "\n")
        return path

    def read_records(self) -> list[ImageRecord]:
        """Every ``records/*.json``, sorted by ``(index, id)``; :class:`RecordFormatError` names a bad file."""
        if not self.records_dir.is_dir():
            return []
        records = []
        for file in sorted(self.records_dir.glob("*.json")):
            try:
                obj = json.loads(file.read_text())
            except json.JSONDecodeError as err:
                raise RecordFormatError(f"{file}: not JSON ({err.msg})") from None
            records.append(ImageRecord.from_dict(obj, source=str(file)))
        return sorted(records, key=_record_order)

    def read_jsonl(self) -> list[ImageRecord]:
        """The records of ``records.jsonl`` in file order (blank lines skipped); errors name ``file:line``."""
        records = []
        for n, line in enumerate(self.records_jsonl.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordFormatError(f"{self.records_jsonl}:{n}: not JSON ({err.msg})") from None
            records.append(ImageRecord.from_dict(obj, source=f"{self.records_jsonl}:{n}"))
        return records

    def finalize(self, run_info: Mapping[str, Any]) -> dict[str, Any]:
        """Rebuild ``records.jsonl`` and ``summary.json`` from ``records/`` (idempotent); returns the summary."""
        records = self.read_records()
        atomic_write_text(self.records_jsonl, "".join(r.to_json() + "\n" for r in records))
        summary = summarize_records(records, run_info)
        atomic_write_text(self.summary_json, json.dumps(summary, indent=2) + "\n")
        return summary

    def write_config(self, text: str) -> Path:
        """Write ``config.yaml`` (the resolved configuration) atomically."""
        atomic_write_text(self.config_yaml, text)
        return self.config_yaml
