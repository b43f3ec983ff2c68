"""Infinity's BSQ VAE: a FLUX-style convolutional autoencoder with a binary spherical quantizer.

Written from the math of the official ``infinity/models/bsq_vae`` (FoundationVision/Infinity, MIT) with the
same module tree, so a released VAE file loads with strict key checking: convolutions sit one level down in a
``.conv`` wrapper and group norms in a ``.norm`` wrapper (``encoder.down.0.block.0.norm1.norm.weight``), and the
quantizer's only state is its bit mask, registered twice (``quantizer.lfq.mask`` and its alias
``quantize.lfq.mask``). The released quantizers have no learnable parameters.

Codes: a token's ``d`` bits become ``±1/√d`` (``bit·2s − s`` with ``s = 1/√d``, then L2-normalised over the
bits, exactly as the release computes them in float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Grid = tuple[int, int]


@dataclass(frozen=True)
class BSQVAEConfig:
    codebook_dim: int = 32  # bits per VAE latent position
    patch_size: int = 16  # pixels per latent position (a power of two)
    base_ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4, 4)
    num_res_blocks: int = 2

    @property
    def num_down(self) -> int:
        return int(math.log2(self.patch_size))


def _swish(x: torch.Tensor) -> torch.Tensor:
    # x·sigmoid(x) as the release writes it; F.silu rounds differently in the last bits.
    return x * torch.sigmoid(x)


class _Conv(nn.Module):
    """The release's ``Conv`` wrapper (2D case): it only adds the ``.conv`` level to key names."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _GroupNorm(nn.Module):
    """The release's ``Normalize``: 32 groups (24 when the width is not a multiple of 32), eps 1e-6."""

    def __init__(self, channels: int):
        super().__init__()
        if channels % 32 == 0:
            groups = 32
        elif channels % 24 == 0:
            groups = 24
        else:
            raise ValueError(
                f"VAE channel width {channels} must be a multiple of 32 or 24 (GroupNorm groups)"
            )
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = _GroupNorm(cin)
        self.conv1 = _Conv(cin, cout, 3, padding=1)
        self.norm2 = _GroupNorm(cout)
        self.conv2 = _Conv(cout, cout, 3, padding=1)
        self.nin_shortcut = _Conv(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(_swish(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class _Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = _Conv(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as in the release


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = _Conv(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Level(nn.Module):
    """One resolution level; ``block`` and the optional ``downsample``/``upsample`` give the key names."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)


class BSQEncoder(nn.Module):
    def __init__(self, cfg: BSQVAEConfig):
        super().__init__()
        ch, mult = cfg.base_ch, cfg.ch_mult
        self.conv_in = _Conv(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for i, m in enumerate(mult):
            block_in = ch * ((1, *mult)[i])
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(_ResnetBlock(block_in, ch * m))
                block_in = ch * m
            level = _Level(blocks)
            if i < cfg.num_down:
                level.downsample = _Downsample(block_in)
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = _ResnetBlock(block_in, block_in)
        self.mid.block_2 = _ResnetBlock(block_in, block_in)
        self.norm_out = _GroupNorm(block_in)
        self.conv_out = _Conv(block_in, cfg.codebook_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.block_1(h))
        return self.conv_out(_swish(self.norm_out(h)))


class BSQDecoder(nn.Module):
    def __init__(self, cfg: BSQVAEConfig):
        super().__init__()
        ch, mult = cfg.base_ch, cfg.ch_mult
        block_in = ch * mult[-1]
        self.conv_in = _Conv(cfg.codebook_dim, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = _ResnetBlock(block_in, block_in)
        self.mid.block_2 = _ResnetBlock(block_in, block_in)
        levels: list[_Level] = []
        for i in reversed(range(len(mult))):
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(_ResnetBlock(block_in, ch * mult[i]))
                block_in = ch * mult[i]
            level = _Level(blocks)
            if 1 <= i <= cfg.num_down:
                level.upsample = _Upsample(block_in)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _GroupNorm(block_in)
        self.conv_out = _Conv(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


class _LFQ(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        # MSB-first powers of two; only integer labels use it, but it is part of the released state_dict.
        self.register_buffer("mask", 2 ** torch.arange(dim - 1, -1, -1, dtype=torch.long))


class _Quantizer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.lfq = _LFQ(dim)


class BSQVAE(nn.Module):
    """The VAE: ``decode(summed_codes)`` gives images in [-1, 1]; ``encode`` gives per-scale bits."""

    def __init__(self, cfg: BSQVAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = BSQEncoder(cfg)
        self.decoder = BSQDecoder(cfg)
        self.quantizer = _Quantizer(cfg.codebook_dim)
        self.quantize = self.quantizer  # the release registers this alias too, so both key sets exist

    @property
    def codebook_dim(self) -> int:
        return self.config.codebook_dim

    def bits_to_codes(self, bits: torch.Tensor) -> torch.Tensor:
        """``(..., d)`` bits (0/1) to ``(..., d)`` codes ``±1/√d`` in float32, computed as the release does."""
        scale = 1 / math.sqrt(self.codebook_dim)
        codes = bits.to(torch.float32) * scale * 2 - scale
        return F.normalize(codes, dim=-1)

    def decode(self, summed_codes: torch.Tensor) -> torch.Tensor:
        """``(B, d, H, W)`` summed codes to ``(B, 3, H·p, W·p)`` images, clamped to [-1, 1]."""
        return self.decoder(summed_codes).clamp(-1, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, grids: list[Grid]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Multi-scale BSQ encoding of ``(B, 3, H, W)`` images in [-1, 1].

        Returns the summed codes at the last grid and one ``(B, h, w, d)`` bit tensor per grid: each scale
        quantises the area-downsampled residual by sign and subtracts its trilinearly upsampled codes.
        """
        from moss_models.core.tokenizer import residual_quantize

        z = self.encoder(images).float()
        size = tuple(z.shape[-2:])

        def down(residual: torch.Tensor, grid: Grid) -> torch.Tensor:
            return F.interpolate(residual, size=grid, mode="area") if grid != size else residual

        def quantize(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            bits = (r > 0).permute(0, 2, 3, 1).to(torch.long)  # sign of the L2-normalised residual
            return bits, self.bits_to_codes(bits).permute(0, 3, 1, 2)

        return residual_quantize(z, grids, down=down, quantize=quantize, up=lambda c: upsample_codes(c, size))


def upsample_codes(codes: torch.Tensor, size: Grid) -> torch.Tensor:
    """Infinity's code resize: trilinear on ``(B, d, 1, h, w)``, i.e. bilinear on one frame; no-op at size."""
    if tuple(codes.shape[-2:]) == tuple(size):
        return codes
    b, d, h, w = codes.shape
    # A contiguous input is interpolated with batch and channels in the frame axis, which keeps its size (weights
    # 1 and 0, so every output is computed as before: bit-identical on CPU and CUDA, tested): the kernel spreads
    # threads over the output positions and loops over batch × channels, so a batch of 256 ran a few hundred
    # threads for milliseconds on an H200 (folding cut a testbed training step's interpolation time by a third).
    # A single source pixel takes the kernel's own path, and channels_last codes (codes_of's permuted bits) round
    # differently from the contiguous kernel on CPU: both keep the release's call
    if h * w == 1 or not codes.is_contiguous():
        return F.interpolate(codes.unsqueeze(2), size=(1, *size), mode="trilinear").squeeze(2)
    folded = F.interpolate(codes.reshape(1, 1, b * d, h, w), size=(b * d, *size), mode="trilinear")
    return folded.view(b, d, *size)


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [-1, 1] to ``(B, H, W, 3)`` RGB uint8, truncating like the release (no rounding)."""
    return ((images + 1) / 2).permute(0, 2, 3, 1).mul(255).to(torch.uint8)
