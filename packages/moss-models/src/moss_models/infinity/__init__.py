"""Infinity (FoundationVision/Infinity): checkpoint-compatible transformer, BSQ VAE, text encoder, generation."""

from moss_models.infinity.config import CONFIGS, InfinityConfig, get_config
from moss_models.infinity.loading import (
    CHECKPOINT_ENV,
    RELEASE_FILES,
    CheckpointNotFoundError,
    load_infinity,
    load_transformer,
    load_vae,
    random_infinity,
    release_paths,
)
from moss_models.infinity.pipeline import (
    GenerationResult,
    GenerationStats,
    InfinityGenerator,
    MossConfig,
    SamplingConfig,
    count_backbone_flops,
    estimate_kv_cache,
)
from moss_models.infinity.schedules import ASPECT_RATIOS, InfinitySchedule, get_schedule
from moss_models.infinity.text import HashedTextEncoder, T5TextEncoder, TextBatch
from moss_models.infinity.transformer import InfinityTransformer
from moss_models.infinity.vae import BSQVAE, BSQVAEConfig

__all__ = [
    "ASPECT_RATIOS",
    "BSQVAE",
    "CHECKPOINT_ENV",
    "CONFIGS",
    "RELEASE_FILES",
    "BSQVAEConfig",
    "CheckpointNotFoundError",
    "GenerationResult",
    "GenerationStats",
    "HashedTextEncoder",
    "InfinityConfig",
    "InfinityGenerator",
    "InfinitySchedule",
    "InfinityTransformer",
    "MossConfig",
    "SamplingConfig",
    "T5TextEncoder",
    "TextBatch",
    "count_backbone_flops",
    "estimate_kv_cache",
    "get_config",
    "get_schedule",
    "load_infinity",
    "load_transformer",
    "load_vae",
    "random_infinity",
    "release_paths",
]
