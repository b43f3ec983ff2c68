"""The HART transformer (``HARTForT2I``), with the release's state_dict key names.

Written from the math of the official ``hart/modules/models/transformer/hart_transformer_t2i.py`` and
``hart/modules/networks/basic_hart.py`` (mit-han-lab/hart@e28a41f, MIT) for the configuration the release runs
(:mod:`moss_models.hart.config`). Names in the state dict are the release's: ``word_embed``, ``context_embed``,
``context_norm`` (only with ``use_context_norm``), ``lvl_embed``, ``blocks.{i}.attn.{qkv_proj,q_bias,v_bias,proj}``
(+ ``scale_mul_1H11`` with ``attn_l2_norm``), ``blocks.{i}.ffn.{gate,up,down}_proj``, ``blocks.{i}.ln_wo_grad``,
``head_nm.{ln_wo_grad,ada_lin.1}``, ``head``, ``decoder_norm`` and the diffusion MLP ``diffloss.net.*``.

Three persistent buffers of the release are not modules' state here, because they are functions of the schedule
(the loader recomputes and checks them; :data:`DERIVED_KEYS`): ``lvl_1L`` (the level of every token),
``attn_bias_for_masking`` (a ``(L, L)`` block-causal mask of 380 MB at 1024² that only training reads) and every
block's ``attn.zero_k_bias`` (zeros).

A block is a plain pre-norm residual block, ``x += Attn(RMSNorm(x)); x += SwiGLU(RMSNorm(x))``: the text conditions
the image only through attention to the context tokens, which are the first pass's tokens and stay in the KV cache.
Positions are rotary: the context's 1D Llama RoPE over its position ids, and HART's 2D RoPE for image tokens at
``(i/pn·64, j/pn·64)`` plus the row's last context position (``moss_attention.hart_rope``); q and k are rotated
before they are cached. The head is ``head(RMSNorm(x)·(1 + scale) + shift)`` with ``scale, shift`` from the
context embeddings max-pooled over all context tokens (padding included, as the release does).

Precision follows the official code under CUDA ``autocast(float16)``: RMSNorm in the input's dtype (the residual
stream is fp32, so fp32), projections and attention in fp16, RoPE angles in fp32 rounded to the activations'
dtype. In fp32 (the CPU fixture) every operation is the official one in the official order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from moss_attention import (
    apply_rope_rotate_half,
    cosine_multiplier,
    hart_rope_cos_sin,
    llama_rope_cos_sin,
)
from moss_models.core.attention import scale_self_attention
from moss_models.core.context import GuidanceRows
from moss_models.core.pass_spec import PassSpec
from moss_models.hart.config import HARTConfig

#: release state_dict keys that are functions of the schedule: recomputed by the loader, never loaded
DERIVED_KEYS = ("lvl_1L", "attn_bias_for_masking")
#: the per-block derived key (zeros), ``blocks.{i}.`` + this
DERIVED_BLOCK_KEY = "attn.zero_k_bias"


def derived_key_names(config: HARTConfig) -> tuple[str, ...]:
    """Every release key :class:`HARTTransformer` does not hold (see the module doc)."""
    return (*DERIVED_KEYS, *(f"blocks.{i}.{DERIVED_BLOCK_KEY}" for i in range(config.depth)))


def level_ids(config: HARTConfig) -> torch.Tensor:
    """The release's ``lvl_1L`` ``(1, L)`` int64: 0 for the context tokens, ``i`` for every token of scale ``i ≥ 1``."""
    parts = [torch.zeros(config.context_token, dtype=torch.long)]
    parts += [torch.full((pn * pn,), i, dtype=torch.long) for i, pn in enumerate(config.patch_nums) if i > 0]
    return torch.cat(parts).view(1, -1)


# ----------------------------------------------------------------------------------------------- conditioning


@dataclass
class HARTContext(GuidanceRows):
    """The text conditioning of one batch: rows are the images, then with guidance their unconditional rows
    (all-zero text features, position ids 0), as the official loop orders them."""

    cond: torch.Tensor  # (R, T, C) context_embed(context_norm(features)): the first pass's tokens
    position_ids: torch.Tensor  # (R, T) int64 1D RoPE positions of the context tokens
    offset: (
        torch.Tensor
    )  # (R,) int64: the last context position, the shift of every image token's 2D position
    head_scale1: torch.Tensor  # (R, 1, C): 1 + the head's AdaLN scale (from the max-pooled cond)
    head_shift: torch.Tensor  # (R, 1, C)
    qkv_bias: tuple[torch.Tensor, ...] = ()  # per block: (3C,) q bias, zero k bias, v bias
    multipliers: tuple[torch.Tensor | None, ...] = ()  # per block: (1, 1, H, 1) q scale of L2-norm attention
    has_uncond: bool = False

    def rows(self, which: str) -> HARTContext:
        """The conditional (``cond``) or unconditional (``uncond``) row of every image."""
        sl = self.row_slice(which)
        if sl is None:
            return self
        return replace(
            self,
            cond=self.cond[sl],
            position_ids=self.position_ids[sl],
            offset=self.offset[sl],
            head_scale1=self.head_scale1[sl],
            head_shift=self.head_shift[sl],
            has_uncond=False,
        )


# ----------------------------------------------------------------------------------------------- modules


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The release's fused RMSNorm kernel in PyTorch: ``(x · rsqrt(mean(x²) + eps))`` in fp32, rounded to x's
    dtype, times the weight in x's dtype (the kernel casts its weight to the input's dtype)."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight.to(x.dtype)


class RMSNorm(nn.Module):
    """A weighted RMSNorm (``LlamaRMSNormFused``: its ``elementwise_affine=False`` is ignored, so every norm
    has a weight); ``scale`` is the initial weight (``context_norm_scale``)."""

    def __init__(self, dim: int, eps: float, scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(scale)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) · up(x))``, no biases (the official ``LlamaMLP``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _rope(spec: PassSpec, ctx: HARTContext, config: HARTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp32 ``(R, N, head_dim)`` cos and sin of a pass's tokens (computed once per pass, see PassSpec.memo).

    The first scale's pass is the context: 1D RoPE over its position ids. Every other token sits at
    ``(row/pn·64, col/pn·64)`` of its own scale's grid plus its row's offset (float32, as the official
    ``get_position_ids``); positions are the same for every row, or per row (MoSs selections, pruned subsets).
    """
    hd, base = config.head_dim, config.rope_base
    if spec.scales == (0,):
        return llama_rope_cos_sin(ctx.position_ids, hd, base)
    device = spec.scale_ids.device
    sides = torch.tensor(config.patch_nums, dtype=torch.float32, device=device)[spec.scale_ids]
    grid = config.grid
    rows = spec.rows.to(torch.float32) / sides * grid
    cols = spec.cols.to(torch.float32) / sides * grid
    offset = ctx.offset
    if rows.ndim == 1:
        return hart_rope_cos_sin(rows, cols, offset, hd, base)
    if rows.shape[0] != offset.shape[0]:
        raise ValueError(f"per-row positions for {rows.shape[0]} rows, the context has {offset.shape[0]}")
    pairs = [hart_rope_cos_sin(rows[r], cols[r], offset[r : r + 1], hd, base) for r in range(rows.shape[0])]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


class HARTAttention(nn.Module):
    """Self-attention over ``[KV cache ++ this pass's tokens]`` with RoPE on q and k (the official
    ``LlamaAttention``); softmax scale ``0.25/sqrt(head_dim)``, or 1 with L2-normalised q/k (``attn_l2_norm``).

    A pass that appends to the cache writes its (rotated) keys and values into the cache's slots and attends over
    a view of it; a pass that appends nothing joins cache and tokens once.
    """

    def __init__(self, cfg: HARTConfig):
        super().__init__()
        c = cfg.embed_dim
        self.config = cfg
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.l2_norm = cfg.attn_l2_norm
        if self.l2_norm:
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, cfg.num_heads, 1, 1), 4.0).log())
        self.qkv_proj = nn.Linear(c, 3 * c, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(c))
        self.v_bias = nn.Parameter(torch.zeros(c))
        self.proj = nn.Linear(c, c)

    @property
    def softmax_scale(self) -> float:
        return 1.0 if self.l2_norm else 0.25 / math.sqrt(self.head_dim)

    def forward(self, x: torch.Tensor, layer: int, spec: PassSpec, ctx: HARTContext) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.qkv_proj.weight, ctx.qkv_bias[layer]).view(
            b, n, 3, self.num_heads, self.head_dim
        )
        q, k, v = qkv.unbind(2)  # (B, N, H, D)
        dtype = v.dtype
        multiplier = ctx.multipliers[layer]
        if multiplier is not None:
            q = F.normalize(q, dim=-1).mul(multiplier)
            k = F.normalize(k, dim=-1)
        cos, sin = spec.memo("hart_rope", _rope, ctx, self.config)
        if cos.shape[0] != b:  # a pass on some CFG rows of a full-row table is never built; guard the shapes
            raise ValueError(f"RoPE table for {cos.shape[0]} rows, the pass has {b}")
        # cos/sin rounded to v's dtype first, as the official rotary modules return them (then q·cos in q's dtype)
        impl = spec.attention.rope_impl  # "triton": the table kernel, bit for bit the torch reference
        q = apply_rope_rotate_half(q, cos, sin, cos_dtype=dtype, impl=impl).to(dtype)
        k = apply_rope_rotate_half(k, cos, sin, cos_dtype=dtype, impl=impl).to(dtype)
        out = scale_self_attention(q, k, v, layer=layer, spec=spec, scale=self.softmax_scale)
        return self.proj(out.reshape(b, n, c))


class HARTBlock(nn.Module):
    """``x += Attn(RMSNorm(x)); x += SwiGLU(RMSNorm(x))`` (one shared norm weight ``ln_wo_grad``, as released)."""

    def __init__(self, cfg: HARTConfig):
        super().__init__()
        self.eps = cfg.norm_eps
        self.attn = HARTAttention(cfg)
        self.ffn = SwiGLU(cfg.embed_dim, cfg.ffn_hidden)
        self.ln_wo_grad = RMSNorm(cfg.embed_dim, cfg.norm_eps)

    def forward(self, x: torch.Tensor, ctx: HARTContext, layer: int, spec: PassSpec) -> torch.Tensor:
        # Each residual branch goes through the pass's sub-layer hook, which may compute it for some tokens only.
        def sa(x_in: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
            return self.attn(self.ln_wo_grad(x_in), layer, spec.subset(index), ctx)

        def ffn(x_in: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
            return self.ffn(self.ln_wo_grad(x_in))

        x = x + spec.sublayer(layer, "sa", x, sa)
        return x + spec.sublayer(layer, "ffn", x, ffn)


class HeadNorm(nn.Module):
    """``head_nm``: RMSNorm, then ``· (1 + scale) + shift`` from the max-pooled context."""

    def __init__(self, c: int, eps: float):
        super().__init__()
        self.embed_dim = c
        self.ln_wo_grad = RMSNorm(c, eps)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c, 2 * c))

    def gains(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1 + scale, shift)`` ``(R, 1, C)`` each, from the context embeddings ``(R, T, C)``, max-pooled over
        all ``T`` tokens (the official order within ``ada_lin``'s output: scale first)."""
        pooled = cond.max(1, keepdim=True).values
        scale, shift = self.ada_lin(pooled).view(-1, 1, 2, self.embed_dim).unbind(2)
        return scale.add(1), shift


def _autocast_off(x: torch.Tensor):
    device_type = x.device.type if x.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    return torch.autocast(device_type, enabled=False)


class HARTTransformer(nn.Module):
    """HART's transformer: the context prefix, the blocks, the head and the residual diffusion MLP (``diffloss``).

    Its parameters keep ``requires_grad=True`` as the official model's do (the generator runs every pass under
    ``torch.no_grad``, so nothing is recorded): ``F.linear`` of a non-contiguous 3-D input (``word_embed`` of the
    channel-major next-scale input) takes another matmul path when the weight requires grad, which rounds the
    last bit differently — frozen weights would not reproduce the official logits bit for bit.
    """

    def __init__(self, cfg: HARTConfig):
        super().__init__()
        from moss_models.hart.diffusion import HARTDiffusionHead

        self.config = cfg
        c = cfg.embed_dim
        self.word_embed = nn.Linear(cfg.d_vae, c)
        self.context_embed = nn.Linear(cfg.context_dim, c)
        if cfg.use_context_norm:
            self.context_norm = RMSNorm(cfg.context_dim, cfg.norm_eps, cfg.context_norm_scale)
        self.lvl_embed = nn.Embedding(cfg.num_scales, c)
        self.blocks = nn.ModuleList(HARTBlock(cfg) for _ in range(cfg.depth))
        self.head_nm = HeadNorm(c, cfg.norm_eps)
        self.head = nn.Linear(c, cfg.vocab_size)
        self.decoder_norm = RMSNorm(c, cfg.norm_eps)
        self.diffloss = HARTDiffusionHead(
            cfg.d_vae, c, cfg.diff_width, cfg.diff_depth, num_sampling_steps=cfg.num_sampling_steps
        )

    @property
    def layer_groups(self) -> tuple[range, ...]:
        """One group per block: FasterVAR's HART code computes low-rank tokens block by block."""
        return tuple(range(i, i + 1) for i in range(self.config.depth))

    def cast_blocks(self) -> HARTTransformer:
        """Cast the blocks to the config's block dtype (fp32 as released; with bf16/fp16 run under autocast)."""
        self.blocks.to(self.config.block_dtype)
        return self

    @torch.no_grad()
    def init_random(self, seed: int = 0) -> HARTTransformer:
        """Seeded random weights drawn on the CPU in a fixed order (a seed names one model on any device), with
        norm weights near 1 and every bias non-zero so that every path is exercised."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        std = math.sqrt(1 / self.config.embed_dim / 3)
        for name, p in self.named_parameters():
            if name.endswith("scale_mul_1H11"):
                values = torch.full(p.shape, math.log(4.0))
            elif (
                name.endswith("norm.weight")
                or name.endswith("ln_wo_grad.weight")
                or name.endswith("in_ln.weight")
            ):
                values = 1 + 0.1 * torch.randn(p.shape, generator=gen)
            else:
                values = torch.randn(p.shape, generator=gen) * (std if p.ndim > 1 else 0.02)
            p.copy_(values.to(p.dtype))
        return self

    # ------------------------------------------------------------------------------------------ conditioning

    def prepare(self, features: torch.Tensor, position_ids: torch.Tensor, *, guidance: bool) -> HARTContext:
        """The conditioning of one generation from ``(B, T, context_dim)`` text features and ``(B, T)`` position
        ids: with ``guidance`` the unconditional rows follow (zero features, position ids 0, as the official loop
        builds them); every row's context embeddings, head gains, and every block's q/k/v bias."""
        cfg = self.config
        if features.ndim != 3 or tuple(features.shape[1:]) != (cfg.context_token, cfg.context_dim):
            raise ValueError(
                f"text features must be (B, {cfg.context_token}, {cfg.context_dim}), got {tuple(features.shape)}"
            )
        if tuple(position_ids.shape) != tuple(features.shape[:2]):
            raise ValueError(
                f"position_ids must be {tuple(features.shape[:2])}, got {tuple(position_ids.shape)}"
            )
        position_ids = position_ids.to(torch.long)
        if guidance:
            features = torch.cat((features, torch.zeros_like(features)))
            position_ids = torch.cat((position_ids, torch.zeros_like(position_ids)))
        feats = self.context_norm(features) if cfg.use_context_norm else features
        cond = self.context_embed(feats)
        scale1, shift = self.head_nm.gains(cond)
        qkv_bias, multipliers = [], []
        for blk in self.blocks:
            attn = blk.attn
            qkv_bias.append(torch.cat((attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias)))
            multipliers.append(
                cosine_multiplier(attn.scale_mul_1H11).view(1, 1, -1, 1) if attn.l2_norm else None
            )
        return HARTContext(
            cond=cond, position_ids=position_ids, offset=position_ids[:, -1], head_scale1=scale1,
            head_shift=shift, qkv_bias=tuple(qkv_bias), multipliers=tuple(multipliers), has_uncond=guidance,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------ embeddings

    def context_tokens(self, ctx: HARTContext) -> torch.Tensor:
        """The first pass's tokens ``(R, T, C)``: the context embeddings plus level 0's embedding."""
        return ctx.cond + self.lvl_embed.weight[0].view(1, 1, -1)

    def embed_tokens(self, x_BlC: torch.Tensor, scale_ids: torch.Tensor) -> torch.Tensor:
        """``word_embed(x) + lvl_embed(scale)`` ``(B, N, C)`` of next-scale inputs ``(B, N, Cvae)`` (tokens of
        several scales may be packed: each gets its own scale's level)."""
        return self.word_embed(x_BlC) + self.lvl_embed.weight[scale_ids]

    # ------------------------------------------------------------------------------------------ passes

    def run_blocks(self, x: torch.Tensor, ctx: HARTContext, spec: PassSpec) -> torch.Tensor:
        """One pass of every block over ``x`` ``(R, N, C)``; commits the cache if the pass appended."""
        if x.ndim != 3 or x.shape[0] != ctx.batch_size or x.shape[2] != self.config.embed_dim:
            raise ValueError(
                f"x must be (R, N, {self.config.embed_dim}) with the context's R={ctx.batch_size} rows, "
                f"got {tuple(x.shape)}"
            )
        return spec.run_blocks(self.blocks, self.layer_groups, x, ctx)

    def logits(self, h: torch.Tensor, ctx: HARTContext) -> torch.Tensor:
        """``(R, N, V)`` fp32 logits: ``head(RMSNorm(h)·(1 + scale) + shift)`` (the official ``get_logits``)."""
        rows = h.shape[0]
        normed = self.head_nm.ln_wo_grad(h.float()).mul(ctx.head_scale1[:rows]).add_(ctx.head_shift[:rows])
        return self.head(normed.float()).float()

    def diffusion_condition(self, hidden: torch.Tensor, codes_embedded: torch.Tensor) -> torch.Tensor:
        """The diffusion head's condition ``decoder_norm(hidden + word_embed(codebook[idx]))`` ``(R, N, C)``."""
        return self.decoder_norm(hidden + codes_embedded)
