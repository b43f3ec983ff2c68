"""VAR transformer configurations, in a registry by name.

The released class-conditional ImageNet models (FoundationVision/VAR, Hugging Face ``FoundationVision/var``) are
built by the official ``build_vae_var`` with ``heads = depth``, ``width = 64·depth``, ``mlp_ratio = 4``,
``attn_l2_norm = True``, 1000 classes (plus the null class 1000 for guidance) and LayerNorm eps 1e-6. d16 … d30
generate 256² images over 10 scales with per-block AdaLN; d36 generates 512² with one shared AdaLN projection plus
per-block gains. All five share the VQVAE ``vae_ch160v4096z32.pth``.

Precision: the release files are fp32 and the official demo runs them with fp32 weights under CUDA
``torch.autocast(float16)``; ``block_dtype`` (fp32 for every release) is the dtype the blocks' weights are kept
in, and ``autocast_dtype`` the dtype a CUDA run should autocast to, to run as the release runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from moss_models.var.vqvae import PATCH_NUMS_256, PATCH_NUMS_512, VQVAEConfig, get_vqvae_config


@dataclass(frozen=True)
class VARConfig:
    name: str
    depth: int
    embed_dim: int
    num_heads: int
    patch_nums: tuple[int, ...] = PATCH_NUMS_256
    shared_aln: bool = False  # d36: one shared_ada_lin plus per-block ada_gss; the others: per-block ada_lin
    vae: VQVAEConfig = field(default_factory=VQVAEConfig)
    num_classes: int = 1000
    mlp_ratio: float = 4.0
    attn_l2_norm: bool = True  # every release; False gives the plain 0.25/sqrt(head_dim) attention
    norm_eps: float = 1e-6
    block_dtype: torch.dtype = torch.float32
    autocast_dtype: torch.dtype | None = torch.float16  # the official demo's CUDA autocast
    release_file: str | None = None

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}")
        if len(self.patch_nums) < 2 or any(not isinstance(p, int) or p < 1 for p in self.patch_nums):
            raise ValueError(f"patch_nums={self.patch_nums}: need at least two positive int grid sizes")
        if tuple(self.patch_nums) != tuple(self.vae.patch_nums):
            raise ValueError(
                f"the transformer's patch_nums {self.patch_nums} must be its VQVAE's {self.vae.patch_nums}"
            )
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} must be positive")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn_hidden(self) -> int:
        return round(self.embed_dim * self.mlp_ratio)

    @property
    def d_vae(self) -> int:
        """Channels of one transformer input token: the VQVAE's code width (Cvae)."""
        return self.vae.z_channels

    @property
    def vocab_size(self) -> int:
        return self.vae.vocab_size

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def scale_begins(self) -> tuple[int, ...]:
        """Absolute index of each scale's first token in the ``L``-token sequence, plus ``L`` at the end."""
        out = [0]
        for pn in self.patch_nums:
            out.append(out[-1] + pn * pn)
        return tuple(out)

    @property
    def num_tokens(self) -> int:
        """``L``: the tokens of every scale."""
        return self.scale_begins[-1]

    @property
    def first_l(self) -> int:
        return self.patch_nums[0] ** 2

    @property
    def resolution(self) -> int:
        return self.vae.resolution

    def with_(self, **changes) -> VARConfig:
        return replace(self, **changes)


_VAE_256 = get_vqvae_config()
_VAE_512 = get_vqvae_config(resolution=512)
# The official-code fixture's VQVAE (tests/models/fixtures/var_tiny): the release's module tree with V=64, ch=4 and
# GroupNorm groups=2 (the official class hard-codes 32 groups, which cannot be built this narrow).
_VAE_TINY = get_vqvae_config(vocab_size=64, ch=4, norm_groups=2)


def _release(depth: int, *, resolution: int = 256) -> VARConfig:
    is_512 = resolution == 512
    return VARConfig(
        f"var_d{depth}",
        depth=depth,
        embed_dim=64 * depth,
        num_heads=depth,
        patch_nums=PATCH_NUMS_512 if is_512 else PATCH_NUMS_256,
        shared_aln=is_512,
        vae=_VAE_512 if is_512 else _VAE_256,
        release_file=f"var_d{depth}.pth",
    )


VAR_CONFIGS: dict[str, VARConfig] = {
    "var_d16": _release(16),
    "var_d20": _release(20),
    "var_d24": _release(24),
    "var_d30": _release(30),
    "var_d36": _release(36, resolution=512),
    # The official-code fixture's transformer: same code paths and key names as the releases, a few hundred kB.
    # Its shared-AdaLN twin is get_var_config("var_tiny", shared_aln=True).
    "var_tiny": VARConfig("var_tiny", depth=2, embed_dim=64, num_heads=4, vae=_VAE_TINY),
}


def get_var_config(name: str, **overrides) -> VARConfig:
    """A registered config by name, optionally with fields replaced."""
    if name not in VAR_CONFIGS:
        raise ValueError(f"unknown VAR config {name!r}; choose one of {sorted(VAR_CONFIGS)}")
    cfg = VAR_CONFIGS[name]
    return cfg.with_(**overrides) if overrides else cfg
