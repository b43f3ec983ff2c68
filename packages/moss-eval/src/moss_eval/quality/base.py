"""What every quality evaluator is: the weight files it needs, and one call that scores a run directory.

An evaluator is built from a config (``conf/eval/<name>.yaml``, ``_target_`` to its class) and used in two steps:

1. :meth:`Evaluator.weight_files` lists every local file or folder it will read. The caller checks them all with
   :func:`check_weights` **before any image is generated**, so a missing detector is one clear error naming the
   config key, the path and what belongs there, not a crash after an hour of generation.
2. :meth:`Evaluator.evaluate` scores the images of a run directory (:class:`EvalInput`) and returns an
   :class:`EvalResult`: headline scores, named tables (per task, per category), per-image values and
   information about how the numbers were made (models, thresholds, versions). :meth:`EvalResult.write` stores it
   atomically as ``<run>/eval/<name>.json`` beside the records.

Nothing here imports a model library: each evaluator imports transformers / open_clip / torch-fidelity where
it builds its models, so ``import moss_eval`` stays fast and the scoring rules can be tested with fake models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from moss_eval.records import atomic_write_text

__all__ = [
    "EVAL_DIR",
    "EvalInput",
    "EvalResult",
    "Evaluator",
    "MissingWeightsError",
    "WeightFile",
    "check_weights",
]

EVAL_DIR = "eval"  # <run>/eval/<name>.json


@dataclass(frozen=True)
class WeightFile:
    """One local file or folder an evaluator reads.

    ``key`` is the config key that names it (``eval.geneval.detector``), so the error says what to override;
    ``what`` says what belongs there and where it comes from (``"Mask2Former Swin-S COCO instance, a transformers
    folder (config.json, model.safetensors): facebook/mask2former-swin-small-coco-instance"``). For a folder,
    ``contains`` lists the files that must be inside it.
    """

    key: str
    path: Path | str | None
    what: str
    kind: Literal["file", "dir"] = "file"
    contains: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """What is missing, as paths (empty when everything is there)."""
        if self.path is None or str(self.path) == "":
            return [f"<unset> ({self.key} is not set)"]
        path = Path(self.path).expanduser()
        if self.kind == "file":
            return [] if path.is_file() else [str(path)]
        if not path.is_dir():
            return [str(path)] + [str(path / name) for name in self.contains]
        return [str(path / name) for name in self.contains if not (path / name).exists()]


class MissingWeightsError(FileNotFoundError):
    """Weight files the requested evaluators need are missing; the message names every one of them."""

    def __init__(self, missing: Sequence[tuple[str, WeightFile, list[str]]]):
        self.missing = list(missing)
        parts = []
        for evaluator, wf, paths in self.missing:
            parts.append(f"{evaluator}: {wf.key}={wf.path} ({wf.what}) is missing {', '.join(paths)}")
        super().__init__(
            "the evaluators need weight files that are not there: "
            + "; ".join(parts)
            + ". Download them (see the README, 'Quality') and point the config keys above at them, "
            "e.g. eval.<name>.<key>=/path; nothing is downloaded automatically."
        )


def check_weights(evaluators: Iterable[Evaluator]) -> None:
    """Raise :class:`MissingWeightsError` naming every missing file of every evaluator (not just the first)."""
    missing = []
    for ev in evaluators:
        for wf in ev.weight_files():
            paths = wf.missing()
            if paths:
                missing.append((ev.name, wf, paths))
    if missing:
        raise MissingWeightsError(missing)


@dataclass
class EvalInput:
    """What an evaluator scores: a run directory's records (``ImageRecord.to_dict()`` form, prompt order).

    ``reference_dir`` is the run with the same prompts and seeds at ``moss=off`` (fidelity evaluators pair each
    image with its twin there); None when no reference was asked for. ``device`` is where models run.
    """

    run_dir: Path
    records: list[dict[str, Any]]
    reference_dir: Path | None = None
    device: str = "cpu"
    batch_size: int = 8

    def image_path(self, record: dict[str, Any], run_dir: Path | None = None) -> Path:
        return Path(run_dir or self.run_dir) / record["image"]

    def load_image(self, record: dict[str, Any], run_dir: Path | None = None):
        """The record's image as an RGB ``PIL.Image`` (pillow imported here)."""
        from PIL import Image

        with Image.open(self.image_path(record, run_dir)) as im:
            return im.convert("RGB")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # 0-d tensors and NumPy scalars
        obj = obj.item()
    return _finite_or_none(obj)


@runtime_checkable
class Evaluator(Protocol):
    """A quality measure over a run directory. See the module docstring."""

    name: str

    def weight_files(self) -> list[WeightFile]: ...

    def evaluate(self, inputs: EvalInput) -> EvalResult: ...


@dataclass
class EvalResult:
    """One evaluator's numbers for one run.

    * ``scores``: the headline numbers, flat (``{"overall": 0.71, "single_object": 0.98, ...}``);
    * ``tables``: named tables, each a list of rows (dicts with the same keys), for W&B tables and the JSON;
    * ``per_image``: record id → that image's values;
    * ``info``: how the numbers were made (model folders, thresholds, package versions, prompt variant).
    """

    name: str
    scores: dict[str, float | None]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    per_image: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "name": self.name,
                "scores": self.scores,
                "tables": self.tables,
                "per_image": self.per_image,
                "info": self.info,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        return cls(
            name=data["name"],
            scores=dict(data.get("scores") or {}),
            tables=dict(data.get("tables") or {}),
            per_image=dict(data.get("per_image") or {}),
            info=dict(data.get("info") or {}),
        )

    def path(self, run_dir: str | Path) -> Path:
        return Path(run_dir) / EVAL_DIR / f"{self.name}.json"

    def write(self, run_dir: str | Path) -> Path:
        """Atomically write ``<run_dir>/eval/<name>.json``; returns the path."""
        path = self.path(run_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    @classmethod
    def read(cls, run_dir: str | Path, name: str) -> EvalResult:
        return cls.from_dict(json.loads((Path(run_dir) / EVAL_DIR / f"{name}.json").read_text()))
