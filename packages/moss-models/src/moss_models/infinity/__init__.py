"""Infinity (FoundationVision/Infinity) as a model family: checkpoint-compatible transformer, BSQ VAE, text
encoder, schedules, the MoSs presets, and :class:`InfinityFamily` (the math the core generator calls)."""

import functools

from moss_models.core.registry import ModelEntry, register_model
from moss_models.infinity import presets  # noqa: F401  (registers the paper's thresholds)
from moss_models.infinity.accounting import count_backbone_flops, estimate_kv_cache
from moss_models.infinity.config import CONFIGS, InfinityConfig, get_config
from moss_models.infinity.family import InfinityFamily, checked_schedule, meta_family
from moss_models.infinity.loading import (
    CHECKPOINT_ENV,
    DTYPES,
    RELEASE_FILES,
    CheckpointNotFoundError,
    build,
    generator,
    load_infinity,
    load_transformer,
    load_vae,
    random_infinity,
    release_paths,
)
from moss_models.infinity.schedules import ASPECT_RATIOS, InfinitySchedule, get_schedule
from moss_models.infinity.text import HashedTextEncoder, T5TextEncoder, TextBatch
from moss_models.infinity.transformer import InfinityTransformer, TextContext
from moss_models.infinity.vae import BSQVAE, BSQVAEConfig


def _schedule_of(config: InfinityConfig):
    def schedule(resolution, aspect_ratio=1.0, *, arch=None):
        """The model's schedule without building it (``arch``: config fields a random-weight run changes)."""
        return checked_schedule(config.with_(**(arch or {})) if arch else config, resolution, aspect_ratio)

    return schedule


def _layer_groups_of(config: InfinityConfig):
    def layer_groups(arch=None) -> tuple[range, ...]:
        """The block chunks as ranges of layers, without building the model."""
        c = config.with_(**(arch or {})) if arch else config
        per = c.blocks_per_chunk
        return tuple(range(i * per, (i + 1) * per) for i in range(c.block_chunks))

    return layer_groups


for _name, _config in CONFIGS.items():
    register_model(
        ModelEntry(
            _name,
            "infinity",
            build,
            _schedule_of(_config),
            default_weights="release" if _name in RELEASE_FILES else "random",
            default_resolution=_config.max_resolution,
            description=f"Infinity {_name.removeprefix('infinity_')}",
            layer_groups=_layer_groups_of(_config),
            release_paths=functools.partial(release_paths, _name) if _name in RELEASE_FILES else None,
        )
    )

__all__ = [
    "ASPECT_RATIOS",
    "BSQVAE",
    "CHECKPOINT_ENV",
    "CONFIGS",
    "DTYPES",
    "RELEASE_FILES",
    "BSQVAEConfig",
    "CheckpointNotFoundError",
    "HashedTextEncoder",
    "InfinityConfig",
    "InfinityFamily",
    "InfinitySchedule",
    "InfinityTransformer",
    "T5TextEncoder",
    "TextBatch",
    "TextContext",
    "build",
    "count_backbone_flops",
    "estimate_kv_cache",
    "generator",
    "get_config",
    "get_schedule",
    "load_infinity",
    "load_transformer",
    "load_vae",
    "meta_family",
    "random_infinity",
    "release_paths",
]
