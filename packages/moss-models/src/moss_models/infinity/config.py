"""Infinity model configurations, in a registry by name.

The released models and the flags they were built with (``tools/run_infinity.py`` of the release): shared AdaLN,
cosine self-attention, fused-norm semantics, level embedding only before the first block, 2D RoPE in every
self-attention with positions normalised to the '1M' grid (mode 2), bit labels, text from flan-t5-xl (2048
channels, at most 512 tokens), transformer blocks in bf16 and everything else in fp32.

A config may carry its own scale schedule (``scale_sides``, square grids only): a model trained in this
repository on another schedule than the release's (the testbed, 128² with 8× downsampling). Then it generates at
exactly ``max_resolution``, which must be the last side × the VAE's pixels per token. The released configs leave
it None and use the official dynamic-resolution templates.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import torch

from moss_models.infinity.vae import BSQVAEConfig


@dataclass(frozen=True)
class InfinityConfig:
    name: str
    depth: int
    embed_dim: int
    num_heads: int
    block_chunks: int
    vae: BSQVAEConfig = field(default_factory=BSQVAEConfig)
    apply_spatial_patchify: bool = False  # 8B: a token is a 2×2 patch of VAE latents
    text_channels: int = 2048  # flan-t5-xl width
    text_maxlen: int = 512
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    num_levels: int = 15  # rows of lvl_embed
    rope_base: float = 10000.0
    block_dtype: torch.dtype = torch.bfloat16  # the release casts every block to bf16 before loading
    max_resolution: int = 1024  # largest square side the release was trained for
    # The model's own square schedule (grid sides, coarse to fine) in place of the release templates; None: the
    # templates. Set: the only resolution is max_resolution = scale_sides[-1] × token_stride.
    scale_sides: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}")
        if self.depth % self.block_chunks:
            raise ValueError(f"depth={self.depth} must be divisible by block_chunks={self.block_chunks}")
        if self.head_dim % 4:
            raise ValueError(f"head_dim={self.head_dim} must be divisible by 4 for 2D RoPE")
        if self.scale_sides is not None:
            self._check_scale_sides()

    def _check_scale_sides(self) -> None:
        sides = tuple(self.scale_sides)  # a Hydra/JSON list becomes the frozen config's tuple
        object.__setattr__(self, "scale_sides", sides)
        if (
            not sides
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides)
            or sides[0] != 1
            or any(b <= a for a, b in itertools.pairwise(sides))
        ):
            raise ValueError(f"scale_sides={list(sides)} must start at 1 and increase strictly (ints)")
        if len(sides) > self.num_levels:
            raise ValueError(
                f"scale_sides has {len(sides)} scales but num_levels={self.num_levels} level embeddings"
            )
        if self.max_resolution != sides[-1] * self.token_stride:
            raise ValueError(
                f"max_resolution={self.max_resolution} must be the last scale side {sides[-1]} × "
                f"{self.token_stride} pixels per token = {sides[-1] * self.token_stride}"
            )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def token_stride(self) -> int:
        """Image pixels per token side: the VAE's downsampling, ×2 with spatial patchify (16 for releases)."""
        return self.vae.patch_size * (2 if self.apply_spatial_patchify else 1)

    @property
    def ffn_hidden(self) -> int:
        return round(self.embed_dim * self.mlp_ratio / 256) * 256

    @property
    def d_vae(self) -> int:
        """Channels of one transformer token: the VAE's bits, ×4 with spatial patchify."""
        return self.vae.codebook_dim * (4 if self.apply_spatial_patchify else 1)

    @property
    def num_logits(self) -> int:
        return 2 * self.d_vae  # two logits per bit

    @property
    def blocks_per_chunk(self) -> int:
        return self.depth // self.block_chunks

    @property
    def pool_heads(self) -> int:
        """Heads of the attentive text pool that makes the start token (``text_proj_for_sos``)."""
        return self.text_channels // (64 if self.embed_dim > 4096 else 128)

    def with_(self, **changes) -> InfinityConfig:
        return replace(self, **changes)


_D32 = BSQVAEConfig(codebook_dim=32, patch_size=16, base_ch=128, ch_mult=(1, 2, 4, 4, 4))
_D14_PATCHIFY = BSQVAEConfig(codebook_dim=14, patch_size=8, base_ch=128, ch_mult=(1, 2, 4, 4))
# A small VAE with the d32 module tree and key set (5 levels, 16× down, nin_shortcut where the release has one);
# the official-code fixture in tests/models/fixtures/infinity_tiny uses exactly this shape.
_D32_TINY = BSQVAEConfig(
    codebook_dim=32, patch_size=16, base_ch=32, ch_mult=(1, 2, 1, 1, 1), num_res_blocks=2
)

CONFIGS: dict[str, InfinityConfig] = {
    "infinity_2b": InfinityConfig(
        "infinity_2b", depth=32, embed_dim=2048, num_heads=16, block_chunks=8, vae=_D32
    ),
    "infinity_8b": InfinityConfig(
        "infinity_8b",
        depth=40,
        embed_dim=3584,
        num_heads=28,
        block_chunks=8,
        vae=_D14_PATCHIFY,
        apply_spatial_patchify=True,
    ),
    "infinity_125m": InfinityConfig(
        "infinity_125m", depth=12, embed_dim=768, num_heads=8, block_chunks=4, vae=_D32, max_resolution=256
    ),
    # A few MB: the test and CPU-default model. Same code paths and key names as the released ones.
    "infinity_tiny": InfinityConfig(
        "infinity_tiny",
        depth=4,
        embed_dim=64,
        num_heads=4,
        block_chunks=2,
        vae=_D32_TINY,
        text_channels=256,
        text_maxlen=16,
        block_dtype=torch.float32,
        max_resolution=256,
    ),
}


def get_config(name: str, **overrides) -> InfinityConfig:
    """A registered config by name, optionally with fields replaced."""
    if name not in CONFIGS:
        raise ValueError(f"unknown Infinity config {name!r}; choose one of {sorted(CONFIGS)}")
    cfg = CONFIGS[name]
    return cfg.with_(**overrides) if overrides else cfg
