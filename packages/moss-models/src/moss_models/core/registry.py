"""Registered models by name: ``moss_models.load(name, weights=..., checkpoints=..., device=...)``.

A family registers its models (``moss_models/<family>/__init__.py``) with a builder that returns a ready
:class:`~moss_models.core.generator.NextScaleGenerator`; ``conf/model/*.yaml`` instantiate through :func:`load`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

WEIGHTS = ("release", "random")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Callable[
        ..., Any
    ]  # (name, *, weights, checkpoints, device, seed, **options) -> NextScaleGenerator
    schedule: Callable[
        [Any, float], Any
    ]  # (resolution, aspect_ratio) -> schedule with .grids, without a model
    default_weights: str = "release"
    default_resolution: Any = None
    description: str = ""
    # (arch) -> the block groups of the model (ranges of layers), without building it; None: not known up front
    layer_groups: Callable[[dict], tuple[range, ...]] | None = None
    # what the model is conditioned on: "prompts" (text) or "labels" (class ids)
    conditions: str = "prompts"
    # (checkpoint root) -> {role: path} of the release files, raising CheckpointNotFoundError (one paragraph naming
    # every missing file) when some are missing; None: the model has no release files
    release_paths: Callable[[Any], dict] | None = None


MODELS: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> None:
    MODELS[entry.name] = entry


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]


#: the model ``load()`` gives without a name: the trained testbed shipped with the package (CPU, no downloads)
DEFAULT_MODEL = "testbed"


def load(
    name: str = DEFAULT_MODEL,
    weights: str | None = None,
    *,
    checkpoints: str | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    family: str | None = None,
    resolution: Any = None,
    **options: Any,
):
    """A ready generator for a registered model (default: :data:`DEFAULT_MODEL`, the trained testbed).

    ``weights``: ``release`` (the official files under ``checkpoints`` / ``$MOSS_CHECKPOINTS``) or ``random``
    (the real architecture with seeded random weights); default: the model's own (``random`` for the embedded
    tiny models, which have no release). ``family``, if given, must be the model's family (a config check);
    ``resolution`` sets the generator's default resolution (else the model's largest).
    ``options`` go to the family's builder (Infinity: ``dtype``, ``arch``, ``text_encoder``).
    """
    entry = model_entry(name)
    weights = weights or entry.default_weights
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}; choose one of {list(WEIGHTS)}")
    if family is not None and family != entry.family:
        raise ValueError(f"model {name!r} is of family {entry.family!r}, not {family!r}")
    generator = entry.builder(
        name, weights=weights, checkpoints=checkpoints, device=device, seed=seed, **options
    )
    if resolution is not None:
        generator.default_resolution = resolution
    return generator
