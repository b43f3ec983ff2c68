"""Infinity accounting by config: thin wrappers of :func:`moss_models.core.dry_run` (no loop of their own)."""

from __future__ import annotations

from moss_models.core.accounting import dry_run
from moss_models.core.accounting import estimate_kv_cache as _estimate_kv_cache
from moss_models.core.kv_cache import KVCache
from moss_models.core.methods import Method
from moss_models.core.sampling import SamplingConfig
from moss_models.infinity.config import InfinityConfig
from moss_models.infinity.family import meta_family


def _family(config_or_model):
    if isinstance(config_or_model, InfinityConfig):
        return meta_family(config_or_model)
    return config_or_model


def count_backbone_flops(
    config: InfinityConfig,
    resolution: int | str = 1024,
    *,
    method: Method | None = None,
    batch_size: int = 1,
    cfg: bool = True,
    text_tokens: int = 32,
    aspect_ratio: float = 1.0,
) -> list[int]:
    """FLOPs of every forward pass of one generation (the conditioning's share in the first), counted on a
    meta-device dry run of the generator. The VAE decode is not included (the paper's backbone)."""
    sampling = SamplingConfig(cfg=3.0 if cfg else 1.0)
    run = dry_run(
        _family(config), method, resolution=resolution, aspect_ratio=aspect_ratio, batch_size=batch_size,
        sampling=sampling, text_tokens=text_tokens,
    )  # fmt: skip
    return run.flops_per_pass


def estimate_kv_cache(
    config_or_model,
    resolution: int | str = 1024,
    *,
    method: Method | None = None,
    batch_size: int = 1,
    cfg: bool = True,
    aspect_ratio: float = 1.0,
) -> KVCache:
    """The KV cache a generation would allocate, built on the meta device (nothing is allocated)."""
    return _estimate_kv_cache(
        _family(config_or_model), method, resolution=resolution, aspect_ratio=aspect_ratio,
        batch_size=batch_size, guidance=cfg,
    )  # fmt: skip
