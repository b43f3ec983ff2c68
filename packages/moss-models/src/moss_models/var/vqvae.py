"""VAR's multi-scale residual VQVAE: the tokenizer every released VAR model (d16 … d36) shares.

Written from the math of the official ``models/vqvae.py``, ``models/quant.py`` and ``models/basic_vae.py``
(FoundationVision/VAR@78b9539, MIT) with the same module tree, so the released ``vae_ch160v4096z32.pth`` loads with
strict key checking. Module and attribute names that appear in the state dict (``encoder.down.0.block.0.norm1``,
``quantize.embedding``, ``quantize.quant_resi.qresi_ls.0``, ``quantize.ema_vocab_hit_SV``, …) are the release's;
everything else is ours.

Layouts: a latent / ``f_hat`` is ``(B, Cvae, H, W)`` at the last scale's grid (16×16 for 256², 32×32 for 512²);
a scale's indices are ``(B, h·w)`` row-major; token inputs of the transformer are ``(B, l, Cvae)``.

Bit-exactness notes (CPU kernels round differently with tensor layout, so the official layouts are kept):

* codes of one scale are ``embedding(idx)`` viewed as ``(B, C, h, w)`` through a transpose — a channels-last
  strided tensor, as the official inference loop and teacher forcing make it; bicubic upsampling keeps that
  layout and the φ convolution then runs on it. Only the encoder path makes the upsampled codes contiguous.
* nearest code by L2 is ``|z|² + |e|² − 2 z·e`` with one ``addmm_`` (then ``argmin``: the first minimum wins);
* φ is ``(1 − r)·h + r·conv3×3(h)`` in that order, and a scale's φ comes from the official tick rule (float64,
  first minimum), which resolves the near-tie at scale 2 of 10 to φ₁;
* the model is built frozen (eval, no gradients) like the release's ``test_mode=True``: ``torch.matmul`` folds a
  broadcast product differently when an operand requires grad, which changes the Gumbel-smoothed codes' bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

Grid = tuple[int, int]

PATCH_NUMS_256: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512: tuple[int, ...] = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)  # VAR-d36
PATCH_NUMS: dict[int, tuple[int, ...]] = {256: PATCH_NUMS_256, 512: PATCH_NUMS_512}


@dataclass(frozen=True)
class VQVAEConfig:
    """Hyper-parameters of the VQVAE; the defaults are the release (``VQVAE(vocab_size=4096, z_channels=32,
    ch=160, share_quant_resi=4)`` at the 256² schedule)."""

    name: str = "var_vqvae"
    vocab_size: int = 4096
    z_channels: int = 32  # Cvae
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # ×16 downsampling
    num_res_blocks: int = 2
    dropout: float = 0.0
    beta: float = 0.25  # commitment weight of VQVAE training; no effect at inference
    using_znorm: bool = False  # True: nearest code by cosine similarity instead of L2
    quant_conv_ks: int = 3
    quant_resi: float = 0.5  # φ(h) = (1 − |r|)·h + |r|·conv(h); |r| ≤ 1e-6 makes φ the identity
    share_quant_resi: int = 4  # 0: one φ per scale, 1: a single φ, k ≥ 2: k φ shared by nearby scales
    default_qresi_counts: int = 0  # φ count when share_quant_resi == 0 (0: one per scale)
    patch_nums: tuple[int, ...] = PATCH_NUMS_256
    using_sa: bool = True  # attention blocks at the coarsest level
    using_mid_sa: bool = True
    norm_groups: int = 32  # GroupNorm groups (the release: 32; tiny test models use fewer)
    in_channels: int = 3

    def __post_init__(self) -> None:
        if len(self.patch_nums) < 2 or any(not isinstance(p, int) or p < 1 for p in self.patch_nums):
            raise ValueError(f"patch_nums={self.patch_nums}: need at least two positive int grid sizes")
        if self.quant_conv_ks < 1 or self.quant_conv_ks % 2 == 0:
            raise ValueError(
                f"quant_conv_ks={self.quant_conv_ks} must be odd (the convolution keeps the grid)"
            )
        widths = {self.ch * m for m in self.ch_mult}
        if any(w % self.norm_groups for w in widths):
            raise ValueError(f"widths {sorted(widths)} must be multiples of norm_groups={self.norm_groups}")
        if self.share_quant_resi < 0:
            raise ValueError(f"share_quant_resi={self.share_quant_resi} must be ≥ 0")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def resolution(self) -> int:
        """Image side that the schedule's last grid covers."""
        return self.patch_nums[-1] * self.downsample

    def with_(self, **changes) -> VQVAEConfig:
        return replace(self, **changes)


VQVAE_CONFIGS: dict[str, VQVAEConfig] = {"var_vqvae": VQVAEConfig()}


def get_vqvae_config(name: str = "var_vqvae", resolution: int | None = None, **changes) -> VQVAEConfig:
    """A registered config; ``resolution`` (256 or 512) picks VAR's schedule for it, ``changes`` other fields."""
    if name not in VQVAE_CONFIGS:
        raise ValueError(f"unknown VAR VQVAE config {name!r}; choose one of {sorted(VQVAE_CONFIGS)}")
    if resolution is not None:
        if resolution not in PATCH_NUMS:
            raise ValueError(f"VAR has schedules for {sorted(PATCH_NUMS)} px, not {resolution}")
        changes.setdefault("patch_nums", PATCH_NUMS[resolution])
    return VQVAE_CONFIGS[name].with_(**changes)


# --------------------------------------------------------------------------------------------------------------
# Encoder / decoder (the latent-diffusion vq-f16 autoencoder)
# --------------------------------------------------------------------------------------------------------------


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class _ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _group_norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _group_norm(cout, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        # Identity rather than None so that a width change is the only thing that adds keys.
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.silu, not x·sigmoid(x): VAR (unlike Infinity) uses the fused op, which rounds differently.
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class _AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions, with a fused 1×1 qkv convolution."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        self.scale = int(channels) ** (-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        # Both bmm operands and the transposed weights are made contiguous as in the release: CPU GEMMs round
        # differently on strided operands.
        scores = torch.bmm(q.transpose(1, 2).contiguous(), k.contiguous()).mul_(self.scale)  # (B, HW_q, HW_k)
        weights = F.softmax(scores, dim=2).transpose(1, 2).contiguous()  # (B, HW_k, HW_q)
        out = torch.bmm(v.contiguous(), weights).view(B, C, H, W)
        return x + self.proj_out(out)


class _Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # right/bottom padding only, as the release


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block`` and ``attn`` lists (attention only at the coarsest level) and an optional
    ``downsample``/``upsample`` set by the owner; the attribute names are the release's key names."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _Middle(nn.Module):
    def __init__(self, channels: int, cfg: VQVAEConfig):
        super().__init__()
        self.block_1 = _ResnetBlock(channels, channels, cfg.dropout, cfg.norm_groups)
        self.attn_1 = _AttnBlock(channels, cfg.norm_groups) if cfg.using_mid_sa else nn.Identity()
        self.block_2 = _ResnetBlock(channels, channels, cfg.dropout, cfg.norm_groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class VQEncoder(nn.Module):
    """``(B, 3, H, W)`` images to ``(B, Cvae, H/16, W/16)`` latents (before ``quant_conv``)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch, mult, groups = cfg.ch, cfg.ch_mult, cfg.norm_groups
        coarsest = len(mult) - 1
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        width = ch
        for i, m in enumerate(mult):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(_ResnetBlock(width, ch * m, cfg.dropout, groups))
                width = ch * m
                if i == coarsest and cfg.using_sa:
                    attns.append(_AttnBlock(width, groups))
            level = _Level(blocks, attns)
            if i != coarsest:
                level.downsample = _Downsample(width)
            self.down.append(level)
        self.mid = _Middle(width, cfg)
        self.norm_out = _group_norm(width, groups)
        self.conv_out = nn.Conv2d(width, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level.run_blocks(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQDecoder(nn.Module):
    """``(B, Cvae, h, w)`` latents (after ``post_quant_conv``) to ``(B, 3, 16h, 16w)`` images (not clamped)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch, mult, groups = cfg.ch, cfg.ch_mult, cfg.norm_groups
        coarsest = len(mult) - 1
        width = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, width, 3, padding=1)
        self.mid = _Middle(width, cfg)
        levels: list[_Level] = []
        for i in reversed(range(len(mult))):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(_ResnetBlock(width, ch * mult[i], cfg.dropout, groups))
                width = ch * mult[i]
                if i == coarsest and cfg.using_sa:
                    attns.append(_AttnBlock(width, groups))
            level = _Level(blocks, attns)
            if i != 0:
                level.upsample = _Upsample(width)
            levels.insert(0, level)  # up.0 is the finest level, as in the release's keys
        self.up = nn.ModuleList(levels)
        self.norm_out = _group_norm(width, groups)
        self.conv_out = nn.Conv2d(width, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level.run_blocks(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# --------------------------------------------------------------------------------------------------------------
# φ: the per-scale refinement convolution of the residual quantiser
# --------------------------------------------------------------------------------------------------------------


class PhiConv(nn.Conv2d):
    """φ(h) = (1 − r)·h + r·conv3×3(h); its parameters are the convolution's (``weight``, ``bias``)."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, 3, stride=1, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.ratio) + super().forward(h).mul_(self.ratio)


def _make_phi(channels: int, ratio: float) -> nn.Module:
    return PhiConv(channels, ratio) if abs(ratio) > 1e-6 else nn.Identity()


def phi_ticks(count: int) -> list[float]:
    """Positions in [0, 1] of ``count`` φ; a scale uses the one nearest to ``si / (SN − 1)``.

    The release spaces 4 φ over [1/12, 11/12] and any other count over [1/(2K), 1 − 1/(2K)]. The float64 values
    are computed the way ``np.linspace`` does (``i·step + start``, the last one set to ``stop``) so that near-ties
    resolve identically.
    """
    margin = 1 / 3 / count if count == 4 else 1 / 2 / count
    start, stop = margin, 1 - margin
    if count == 1:
        return [start]
    step = (stop - start) / (count - 1)
    return [i * step + start for i in range(count - 1)] + [stop]


def phi_index(si: int, num_scales: int, count: int) -> int:
    """Which of ``count`` φ scale ``si`` of ``num_scales`` uses (first nearest tick)."""
    at = si / (num_scales - 1)
    ticks = phi_ticks(count)
    distances = [abs(t - at) for t in ticks]
    return distances.index(min(distances))


class _PhiTable:
    """Mixin: ``index_for(si, num_scales)`` is the table position of a scale's φ, ``phi_for`` the module."""

    def index_for(self, si: int, num_scales: int) -> int:
        raise NotImplementedError

    def phi_for(self, si: int, num_scales: int) -> nn.Module:
        raise NotImplementedError


class SharedPhi(nn.Module, _PhiTable):
    """One φ for every scale (``share_quant_resi == 1``; keys ``quant_resi.qresi.*``)."""

    def __init__(self, phi: nn.Module):
        super().__init__()
        self.qresi = phi

    def index_for(self, si: int, num_scales: int) -> int:
        return 0

    def phi_for(self, si: int, num_scales: int) -> nn.Module:
        return self.qresi


class PartiallySharedPhi(nn.Module, _PhiTable):
    """K φ spread over the scales (``share_quant_resi == K ≥ 2``, the release: 4; keys ``quant_resi.qresi_ls.k.*``)."""

    def __init__(self, phis: list[nn.Module]):
        super().__init__()
        self.qresi_ls = nn.ModuleList(phis)

    def index_for(self, si: int, num_scales: int) -> int:
        return phi_index(si, num_scales, len(self.qresi_ls))

    def phi_for(self, si: int, num_scales: int) -> nn.Module:
        return self.qresi_ls[self.index_for(si, num_scales)]


class PerScalePhi(nn.ModuleList, _PhiTable):
    """Unshared φ (``share_quant_resi == 0``; keys ``quant_resi.k.*``), picked by the same tick rule."""

    def index_for(self, si: int, num_scales: int) -> int:
        return phi_index(si, num_scales, len(self))

    def phi_for(self, si: int, num_scales: int) -> nn.Module:
        return self[self.index_for(si, num_scales)]


# --------------------------------------------------------------------------------------------------------------
# The multi-scale residual quantiser
# --------------------------------------------------------------------------------------------------------------


def _check_integer(name: str, t: torch.Tensor) -> None:
    if (
        not isinstance(t, torch.Tensor)
        or t.dtype.is_floating_point
        or t.dtype.is_complex
        or t.dtype == torch.bool
    ):
        what = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be an integer tensor of codebook indices, got {what}")


def _check_float(name: str, t: torch.Tensor, ndim: int) -> None:
    if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
        what = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a floating-point tensor, got {what}")
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")


class MultiScaleQuantizer(nn.Module):
    """VAR's residual quantiser (the release's ``quantize``): a ``(V, Cvae)`` codebook, the φ table, and the
    per-scale code-usage EMA buffer ``ema_vocab_hit_SV`` ``(SN, V)`` (a training statistic, unused here, but part
    of the released state dict)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.vocab_size = cfg.vocab_size
        self.channels = cfg.z_channels
        self.using_znorm = cfg.using_znorm
        self.patch_nums = tuple(cfg.patch_nums)
        self.beta = cfg.beta
        share, ratio, C = cfg.share_quant_resi, cfg.quant_resi, cfg.z_channels
        if share == 0:
            self.quant_resi: nn.Module = PerScalePhi(
                [_make_phi(C, ratio) for _ in range(cfg.default_qresi_counts or len(self.patch_nums))]
            )
        elif share == 1:
            self.quant_resi = SharedPhi(_make_phi(C, ratio))
        else:
            self.quant_resi = PartiallySharedPhi([_make_phi(C, ratio) for _ in range(share)])
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), cfg.vocab_size))
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.z_channels)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def phi(self, si: int, num_scales: int | None = None) -> nn.Module:
        """The φ of scale ``si`` (of ``num_scales``, default: this schedule's)."""
        return self.quant_resi.phi_for(si, num_scales or self.num_scales)

    def phi_indices(self, num_scales: int | None = None) -> list[int]:
        """Per scale, the position of its φ in the table (e.g. ``[0,0,1,1,1,2,2,3,3,3]`` for the release)."""
        n = num_scales or self.num_scales
        return [self.quant_resi.index_for(si, n) for si in range(n)]

    # ---- indices ↔ codes -------------------------------------------------------------------------------------

    def embed_indices(self, idx_Bl: torch.Tensor, grid: int | Grid | None = None) -> torch.Tensor:
        """``(B, h·w)`` indices to ``(B, Cvae, h, w)`` codes, as the release lays them out (a transposed view
        of the ``(B, l, Cvae)`` embedding, i.e. channels-last strides). ``grid`` defaults to a square one."""
        _check_integer("idx_Bl", idx_Bl)
        if idx_Bl.ndim != 2:
            raise ValueError(f"idx_Bl must be (B, h·w), got shape {tuple(idx_Bl.shape)}")
        return self.tokens_to_map(self.embedding(idx_Bl), grid)

    def tokens_to_map(self, h_BlC: torch.Tensor, grid: int | Grid | None = None) -> torch.Tensor:
        """``(B, l, Cvae)`` token codes (embeddings, or the soft codes of Gumbel smoothing) to a ``(B, Cvae, h,
        w)`` view with the release's strides."""
        B, length, C = h_BlC.shape
        gh, gw = _grid(grid) if grid is not None else (round(length**0.5),) * 2
        if gh * gw != length or self.channels != C:
            raise ValueError(
                f"(B, l, C)=({B}, {length}, {C}) cannot be a {gh}×{gw} grid of {self.channels}-channel codes"
            )
        return h_BlC.transpose(1, 2).reshape(B, C, gh, gw)

    def _nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        codebook = self.embedding.weight.detach()
        if self.using_znorm:
            return torch.argmax(F.normalize(z_NC, dim=-1) @ F.normalize(codebook.T, dim=0), dim=1)
        dist = torch.sum(z_NC.square(), dim=1, keepdim=True) + torch.sum(codebook.square(), dim=1)
        dist.addmm_(z_NC, codebook.T, alpha=-2, beta=1)  # one fused GEMM, as the release: bits depend on it
        return torch.argmin(dist, dim=1)

    # ---- encoding --------------------------------------------------------------------------------------------

    def _residual_quantize(self, f: torch.Tensor, to_fhat: bool, patch_nums) -> list[torch.Tensor]:
        _check_float("latent", f, 4)
        B, C, H, W = f.shape
        if self.channels != C:
            raise ValueError(f"latent has {C} channels, the codebook {self.channels}")
        grids = [_grid(p) for p in (patch_nums or self.patch_nums)]
        if len(grids) < 2:
            raise ValueError(f"patch_nums={patch_nums}: need at least two scales")
        if grids[-1] != (H, W):
            raise ValueError(f"the last scale's grid {grids[-1]} must be the latent's grid {(H, W)}")
        SN = len(grids)
        f_rest = f.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        out: list[torch.Tensor] = []
        for si, (gh, gw) in enumerate(grids):
            last = si == SN - 1
            # Chosen by index, not size: the last scale never goes through area interpolation.
            rest = f_rest if last else F.interpolate(f_rest, size=(gh, gw), mode="area")
            idx_N = self._nearest(rest.permute(0, 2, 3, 1).reshape(-1, C))
            codes = self.embedding(idx_N.view(B, gh, gw)).permute(0, 3, 1, 2)
            if not last:
                codes = F.interpolate(codes, size=(H, W), mode="bicubic")
            h = self.phi(si, SN)(codes.contiguous())
            f_hat.add_(h)
            f_rest.sub_(h)
            out.append(f_hat.clone() if to_fhat else idx_N.reshape(B, gh * gw))
        return out

    @torch.no_grad()
    def latent_to_indices(
        self, f: torch.Tensor, patch_nums: Sequence[int | Grid] | None = None
    ) -> list[torch.Tensor]:
        """Multi-scale residual VQ of a ``(B, Cvae, H, W)`` latent: per scale, the residual is area-downsampled
        to the scale's grid, snapped to its nearest code, and ``φ(bicubic_up(code))`` (no upsampling at the last
        scale) is subtracted. Returns one ``(B, h·w)`` int64 index tensor per scale (official
        ``f_to_idxBl_or_fhat(to_fhat=False)``). ``patch_nums`` may override the schedule (ints or (h, w))."""
        return self._residual_quantize(f, False, patch_nums)

    @torch.no_grad()
    def latent_to_fhats(
        self, f: torch.Tensor, patch_nums: Sequence[int | Grid] | None = None
    ) -> list[torch.Tensor]:
        """As :meth:`latent_to_indices`, but the running ``(B, Cvae, H, W)`` reconstruction after each scale."""
        return self._residual_quantize(f, True, patch_nums)

    # ---- transformer inputs ----------------------------------------------------------------------------------

    def _check_scale_indices(self, ms_idx_Bl: Sequence[torch.Tensor], need: int) -> int:
        if len(ms_idx_Bl) < need:
            raise ValueError(f"need indices for {need} scales, got {len(ms_idx_Bl)}")
        B = None
        for si in range(need):
            idx = ms_idx_Bl[si]
            _check_integer(f"indices of scale {si}", idx)
            length = self.patch_nums[si] ** 2
            if idx.ndim != 2 or idx.shape[1] != length or (B is not None and idx.shape[0] != B):
                raise ValueError(
                    f"indices of scale {si} must be (B, {length}) for the {self.patch_nums[si]}² grid"
                    + (f" with B={B}" if B is not None else "")
                    + f", got shape {tuple(idx.shape)}"
                )
            B = idx.shape[0]
        return int(B)

    def teacher_forcing_inputs(self, ms_idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        """The transformer's inputs for scales 1 … SN−1 given ground-truth indices (official
        ``idxBl_to_var_input``): after adding ``φ(bicubic_up(codes))`` of scale ``si`` to a float32 ``f_hat``,
        ``f_hat`` area-downsampled to scale ``si+1``'s grid. Returns ``(B, L − 1, Cvae)`` float32, scale-major,
        row-major within a scale (``L`` = total tokens). Only the first SN−1 index tensors are read."""
        SN, C, side = self.num_scales, self.channels, self.patch_nums[-1]
        B = self._check_scale_indices(ms_idx_Bl, SN - 1)
        f_hat = ms_idx_Bl[0].new_zeros(B, C, side, side, dtype=torch.float32)
        inputs = []
        for si in range(SN - 1):
            pn, pn_next = self.patch_nums[si], self.patch_nums[si + 1]
            codes = self.embedding(ms_idx_Bl[si]).transpose(1, 2).view(B, C, pn, pn)
            f_hat.add_(self.phi(si, SN)(F.interpolate(codes, size=(side, side), mode="bicubic")))
            inputs.append(
                F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").view(B, C, -1).transpose(1, 2)
            )
        return torch.cat(inputs, dim=1)

    def new_fhat(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The zero float32 ``(B, Cvae, side, side)`` accumulator the inference loop starts from."""
        device = self.embedding.weight.device if device is None else device
        side = self.patch_nums[-1]
        return torch.zeros(batch, self.channels, side, side, dtype=torch.float32, device=device)

    def next_scale_input(
        self, si: int, f_hat: torch.Tensor, h_BChw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One inference step (official ``get_next_autoregressive_input``): add scale ``si``'s codes ``h_BChw``
        ``(B, Cvae, pn_si, pn_si)`` to ``f_hat`` **in place** and return ``(f_hat, next_input)``.

        Before the last scale: ``f_hat += φ(bicubic_up(h))`` and ``next_input`` is ``f_hat`` area-downsampled to
        ``(B, Cvae, pn_{si+1}, pn_{si+1})``. At the last scale: ``f_hat += φ(h)`` and ``next_input`` is ``f_hat``.
        Pass ``h`` as :meth:`embed_indices` / :meth:`tokens_to_map` lay it out to match the release bit for bit.
        """
        SN, side = self.num_scales, self.patch_nums[-1]
        if not 0 <= si < SN:
            raise ValueError(f"scale index {si} is outside 0 … {SN - 1}")
        _check_float("f_hat", f_hat, 4)
        _check_float("h_BChw", h_BChw, 4)
        pn = self.patch_nums[si]
        B = f_hat.shape[0]
        if tuple(f_hat.shape[1:]) != (self.channels, side, side):
            raise ValueError(f"f_hat must be (B, {self.channels}, {side}, {side}), got {tuple(f_hat.shape)}")
        if tuple(h_BChw.shape) != (B, self.channels, pn, pn):
            raise ValueError(
                f"codes of scale {si} must be ({B}, {self.channels}, {pn}, {pn}), got {tuple(h_BChw.shape)}"
            )
        if si == SN - 1:
            f_hat.add_(self.phi(si, SN)(h_BChw))
            return f_hat, f_hat
        f_hat.add_(self.phi(si, SN)(F.interpolate(h_BChw, size=(side, side), mode="bicubic")))
        pn_next = self.patch_nums[si + 1]
        return f_hat, F.interpolate(f_hat, size=(pn_next, pn_next), mode="area")

    def indices_to_fhat(self, ms_idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ``(B, Cvae, side, side)`` float32 ``f_hat`` of a full set of per-scale indices (official
        ``idxBl_to_img`` → ``embed_to_fhat(all_to_max_scale=True, last_one=True)``)."""
        SN, side = self.num_scales, self.patch_nums[-1]
        B = self._check_scale_indices(ms_idx_Bl, SN)
        f_hat = None
        for si in range(SN):
            pn = self.patch_nums[si]
            h = self.embedding(ms_idx_Bl[si]).transpose(1, 2).view(B, self.channels, pn, pn)
            if f_hat is None:
                f_hat = h.new_zeros(B, self.channels, side, side, dtype=torch.float32)
            if si < SN - 1:
                h = F.interpolate(h, size=(side, side), mode="bicubic")
            f_hat.add_(self.phi(si, SN)(h))
        return f_hat


def _grid(p: int | Grid) -> Grid:
    if isinstance(p, int):
        return (p, p)
    gh, gw = p
    return (int(gh), int(gw))


# --------------------------------------------------------------------------------------------------------------
# The VQVAE
# --------------------------------------------------------------------------------------------------------------


class MultiScaleVQVAE(nn.Module):
    """VAR's VQVAE: encoder → ``quant_conv`` → multi-scale residual quantiser (``quantize``) →
    ``post_quant_conv`` → decoder. Images are ``(B, 3, H, W)`` in [-1, 1]; see the module docstring for the
    latent and token layouts."""

    def __init__(self, cfg: VQVAEConfig | None = None, *, frozen: bool = True):
        """``frozen`` (the release's ``test_mode=True``, with which VAR builds it): eval mode and no gradients.
        That is not only about training: ``torch.matmul`` batches a broadcast product differently when an
        operand requires grad, so the Gumbel-smoothed codes ``soft @ embedding.weight`` round differently."""
        super().__init__()
        cfg = cfg or VQVAEConfig()
        self.config = cfg
        self.encoder = VQEncoder(cfg)
        self.decoder = VQDecoder(cfg)
        self.quantize = MultiScaleQuantizer(cfg)
        pad = cfg.quant_conv_ks // 2
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, cfg.quant_conv_ks, padding=pad)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, cfg.quant_conv_ks, padding=pad)
        if frozen:
            self.eval().requires_grad_(False)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.config.patch_nums

    def _check_images(self, images: torch.Tensor) -> None:
        _check_float("images", images, 4)
        c, d = self.config.in_channels, self.config.downsample
        if images.shape[1] != c or images.shape[2] % d or images.shape[3] % d:
            raise ValueError(
                f"images must be (B, {c}, H, W) with H and W multiples of {d}, got {tuple(images.shape)}"
            )

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """``quant_conv(encoder(images))``: ``(B, 3, H, W)`` to the ``(B, Cvae, H/16, W/16)`` latent ``f``."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images))

    @torch.no_grad()
    def images_to_indices(
        self, images: torch.Tensor, patch_nums: Sequence[int | Grid] | None = None
    ) -> list[torch.Tensor]:
        """Per-scale ``(B, h·w)`` int64 indices of images (official ``img_to_idxBl``)."""
        return self.quantize.latent_to_indices(self.encode_latent(images), patch_nums)

    @torch.no_grad()
    def images_to_fhats(
        self, images: torch.Tensor, patch_nums: Sequence[int | Grid] | None = None
    ) -> list[torch.Tensor]:
        """Per-scale running reconstructions ``f_hat`` of images (``(B, Cvae, H/16, W/16)`` each)."""
        return self.quantize.latent_to_fhats(self.encode_latent(images), patch_nums)

    def decode(self, f_hat: torch.Tensor) -> torch.Tensor:
        """``decoder(post_quant_conv(f_hat))`` clamped to [-1, 1] (official ``fhat_to_img``): ``(B, Cvae, h, w)``
        to ``(B, 3, 16h, 16w)``."""
        _check_float("f_hat", f_hat, 4)
        if f_hat.shape[1] != self.config.z_channels:
            raise ValueError(f"f_hat must have {self.config.z_channels} channels, got {tuple(f_hat.shape)}")
        return self.decoder(self.post_quant_conv(f_hat)).clamp_(-1, 1)

    def indices_to_images(self, ms_idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode a full set of per-scale indices to ``(B, 3, H, W)`` images in [-1, 1]."""
        return self.decode(self.quantize.indices_to_fhat(ms_idx_Bl))

    # Delegates, so that a family only needs the VQVAE object.
    def embed_indices(self, idx_Bl: torch.Tensor, grid: int | Grid | None = None) -> torch.Tensor:
        return self.quantize.embed_indices(idx_Bl, grid)

    def teacher_forcing_inputs(self, ms_idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.quantize.teacher_forcing_inputs(ms_idx_Bl)

    def next_scale_input(
        self, si: int, f_hat: torch.Tensor, h_BChw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.quantize.next_scale_input(si, f_hat, h_BChw)
