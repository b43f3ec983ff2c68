"""The Infinity transformer, written from the math of the official release with its state_dict key names.

Module tree and key names follow FoundationVision/Infinity (``infinity/models/infinity.py`` and ``basic.py``,
MIT): blocks are registered only under ``block_chunks.{c}.module.{j}``; the text path is ``cfg_uncond``,
``text_norm``, ``text_proj_for_sos`` (an attentive pool whose output is both the start token and the AdaLN
condition) and ``text_proj_for_ca``; ``shared_ada_lin`` makes the AdaLN gains every block adds its own
``ada_gss`` to. The semantics are those of the released inference path (``fused_norm=True``, which passes each
scale's RoPE offset; the non-fused official path has an offset bug), with its precision regime: AdaLN, RoPE, the
residual stream and the head in fp32 (autocast off), and the two text cross-attentions fed bf16 inputs whose
output is rounded to bf16, as the official flash-attn varlen call does.

Self-attention goes through :mod:`moss_attention`: every forward pass (a baseline scale, or the packed MoSs
stage) attends to ``[KV cache ++ its own tokens]`` with the mode and backend of its :class:`PassSpec`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from moss_attention import (
    RopeAngles,
    RopeTables,
    attention_over_cache,
    cosine_multiplier,
    cosine_qk_rope,
    gather_rope_angles,
    mixed_scale_attention,
    qk_scale,
)
from moss_models.core.context import GuidanceRows
from moss_models.core.pass_spec import PassSpec
from moss_models.infinity.config import InfinityConfig


def autocast_off(x: torch.Tensor):
    """Disable autocast for ``x``'s device (meta tensors, used for FLOP counting, count as CPU)."""
    device_type = x.device.type if x.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    return torch.autocast(device_type, enabled=False)


class TextKV:
    """One attention's projected text keys and values for every row, grouped by text length.

    Rows whose texts have the same length attend in one batched call with no padding and no mask, so each row's
    result is bit for bit what a call of its own gives (and never depends on the rest of the batch); a batch of
    one image with CFG (the conditional and unconditional texts have one length) is a single call. Values are
    rounded to bf16 once here, as the official flash-attn varlen call receives them, and kept in the dtype the
    attention computes in (bf16 on CUDA; fp32 elsewhere, which is what a CPU reference of that kernel computes).
    """

    def __init__(
        self, groups: tuple[tuple[tuple[int, ...], torch.Tensor, torch.Tensor], ...], rows: int, dtype
    ):
        self.groups = groups  # (rows of the group, keys (G, H, L, c), values (G, H, L, c))
        self.num_rows = rows
        # the projection's dtype: the attention's output is widened back to fp32 if it was fp32
        self.dtype = dtype
        device = groups[0][1].device
        whole = len(groups) == 1 and groups[0][0] == tuple(range(rows))
        self._index = (
            None if whole else tuple(torch.tensor(r, dtype=torch.long).to(device) for r, _, _ in groups)
        )

    @classmethod
    def build(cls, kv: torch.Tensor, bounds: Sequence[int]) -> TextKV:
        """``kv`` ``(N, 2, H, c)``: the projected keys and values of every row's text, rows packed by ``bounds``."""
        kv16 = kv.to(torch.bfloat16)
        compute = torch.bfloat16 if kv.is_cuda else torch.float32
        by_length: dict[int, list[int]] = {}
        for r in range(len(bounds) - 1):
            by_length.setdefault(bounds[r + 1] - bounds[r], []).append(r)
        groups = []
        for length, rows in by_length.items():
            # one gather per length, its indices laid out on the host (a slice per row cost a training batch of 256
            # prompts a slice and its backward per row and block)
            index = torch.tensor([bounds[r] + j for r in rows for j in range(length)], dtype=torch.long)
            part = kv16.index_select(0, index.to(kv.device, non_blocking=True))
            part = part.view(len(rows), length, *kv.shape[1:]).to(compute)  # (G, L, 2, H, c)
            k, v = part.permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # (G, H, L, c) each
            groups.append((tuple(rows), k, v))
        return cls(tuple(groups), len(bounds) - 1, kv.dtype)

    def rows(self, sl: slice) -> TextKV:
        """The rows ``sl`` (a contiguous range), renumbered from 0."""
        start, stop = sl.start, sl.stop
        groups = []
        for rows, k, v in self.groups:
            keep = [i for i, r in enumerate(rows) if start <= r < stop]
            if keep:
                sel = torch.tensor(keep, dtype=torch.long).to(k.device)
                groups.append((tuple(rows[i] - start for i in keep), k[sel], v[sel]))
        return TextKV(tuple(groups), stop - start, self.dtype)

    def attend(self, q: torch.Tensor, scale: float) -> torch.Tensor:
        """Each row of ``q`` ``(R, Lq, H, c)`` over its own text; bf16 ``(R, Lq, H, c)``, as flash-attn returns."""
        q = q.to(torch.bfloat16).to(self.groups[0][1].dtype).transpose(1, 2)
        if self._index is None:
            _, k, v = self.groups[0]
            return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).to(torch.bfloat16)
        out = q.new_empty(q.shape[0], q.shape[2], q.shape[1], q.shape[3], dtype=torch.bfloat16)
        for index, (_, k, v) in zip(self._index, self.groups, strict=True):
            part = F.scaled_dot_product_attention(q.index_select(0, index), k, v, scale=scale)
            out.index_copy_(0, index, part.transpose(1, 2).to(torch.bfloat16))
        return out


@dataclass(frozen=True)
class BlockConstants:
    """What one block computes the same way in every pass of a generation, computed once with the text context:
    its AdaLN gains for every row, its cross-attention's text keys and values, and the forms of its weights that
    the passes use (the q/k/v bias, the cosine-attention multiplier, the fp32 cross-attention norm)."""

    gamma1: torch.Tensor  # (R, 1, C) fp32, per row
    gamma2: torch.Tensor
    scale1: torch.Tensor  # 1 + scale, (R, 1, C)
    scale2: torch.Tensor
    shift1: torch.Tensor
    shift2: torch.Tensor
    text: TextKV
    qkv_bias: torch.Tensor  # (3C,): q bias, zero k bias, v bias
    multiplier: torch.Tensor  # (H,) fp32
    qk_scale: torch.Tensor  # (2, H, 1) fp32: the multiplier for q, 1 for k
    ca_norm: tuple[torch.Tensor | None, torch.Tensor | None]  # fp32 weight and bias

    def rows(self, sl: slice) -> BlockConstants:
        per_row = {
            name: getattr(self, name)[sl]
            for name in ("gamma1", "gamma2", "scale1", "scale2", "shift1", "shift2")
        }
        return replace(self, **per_row, text=self.text.rows(sl))


@dataclass
class TextContext(GuidanceRows):
    """Text conditioning of one batch (rows = images, or 2× images with CFG: conditional rows first)."""

    cond: torch.Tensor  # (B, D) fp32: the pooled text vector, start token and AdaLN condition
    gss: torch.Tensor  # (B, 1, 6, C) fp32: shared AdaLN gains
    ca_kv: torch.Tensor  # (N_text, D): projected text tokens for cross-attention, all rows packed
    cu_seqlens: torch.Tensor  # (B + 1,) int32 offsets into ca_kv
    # the same offsets on the host: the text is grouped and sliced with them, never with a device read
    bounds: tuple[int, ...]
    has_uncond: bool = False  # the second half of the rows are the images' unconditional rows (CFG)
    blocks: tuple[BlockConstants, ...] = ()  # per block, from InfinityTransformer.prepare

    def rows(self, which: str) -> TextContext:
        """The conditional (``cond``) or unconditional (``uncond``) row of every image."""
        sl = self.row_slice(which)
        if sl is None:
            return self
        start, stop = self.bounds[sl.start], self.bounds[sl.stop]
        return TextContext(
            cond=self.cond[sl],
            gss=self.gss[sl],
            ca_kv=self.ca_kv[start:stop],
            cu_seqlens=self.cu_seqlens[sl.start : sl.stop + 1] - self.cu_seqlens[sl.start],
            bounds=tuple(v - start for v in self.bounds[sl.start : sl.stop + 1]),
            blocks=tuple(blk.rows(sl) for blk in self.blocks),
        )


class TextCrossAttention(nn.Module):
    """Cross-attention to the text tokens (``ca``), or the attentive pool with a learned query (``for_pool``)."""

    def __init__(self, embed_dim: int, kv_dim: int, num_heads: int, for_pool: bool = False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.for_pool = for_pool
        if for_pool:
            self.mat_q = nn.Parameter(torch.zeros(1, num_heads, self.head_dim))
        else:
            self.mat_q = nn.Linear(embed_dim, embed_dim, bias=True)
        self.mat_kv = nn.Linear(kv_dim, 2 * embed_dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def project_text(self, kv_tokens: torch.Tensor, bounds: Sequence[int]) -> TextKV:
        """The text keys and values of every row (once per generation: no pass changes them)."""
        n = kv_tokens.shape[0]
        kv = F.linear(kv_tokens, self.mat_kv.weight, torch.cat((self.zero_k_bias, self.v_bias)))
        return TextKV.build(kv.view(n, 2, self.num_heads, self.head_dim), bounds)

    def forward(self, x: torch.Tensor | None, text: TextKV) -> torch.Tensor:
        if self.for_pool:
            q = self.mat_q.to(text.dtype).expand(text.num_rows, -1, -1).unsqueeze(1)  # (B, 1, H, c)
        else:
            q = self.mat_q(x).view(*x.shape[:2], self.num_heads, self.head_dim)
        out = text.attend(q, 1 / math.sqrt(self.head_dim))
        if q.dtype == torch.float32:
            out = out.float()
        return self.proj(out.flatten(2))


class SelfAttention(nn.Module):
    """Cosine self-attention with 2D RoPE over ``[KV cache ++ this pass's tokens]``.

    A pass that appends to the cache writes its keys and values into the cache's preallocated slots first and
    attends over a view of the cache, so nothing is concatenated; only a pass that appends nothing (the last
    scale, the packed MoSs stage) joins cache and tokens in one copy.
    """

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, layer: int, spec: PassSpec, const: BlockConstants) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.mat_qkv.weight, const.qkv_bias).view(b, n, 3, self.num_heads, self.head_dim)
        v = qkv[:, :, 2]
        dtype, cache = v.dtype, spec.cache
        # Write-first: the pass's keys and values go straight into the cache slots when it appends in its dtype.
        in_place = cache is not None and spec.append and cache.keys[layer].dtype == dtype
        k_slot = v_slot = None
        if in_place:
            k_slot, v_slot = cache.slot(layer, n)
        if spec.attention.rope_impl == "triton":
            q, k = _triton_qk(
                qkv, const.multiplier, spec, dtype, None if k_slot is None else k_slot.transpose(1, 2)
            )
        else:
            # Normalisation and RoPE in fp32 (the official RoPE disables autocast), for q and k together.
            qk = cosine_qk_rope(qkv[:, :, :2], const.qk_scale, spec.memo("rope_angles", _angles, b), dtype)
            q, k = qk[:, :, 0], qk[:, :, 1]
            if k_slot is not None:
                k_slot.copy_(k.transpose(1, 2))
        if spec.causal_scale_mask is not None:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                attn_mask=spec.causal_scale_mask,
                scale=1.0,
            ).transpose(1, 2)
        elif in_place:
            v_slot.copy_(v.transpose(1, 2))
            keys, values = cache.joint(layer)
            out = attention_over_cache(
                q, keys, values, spec.scale_ids, cache_len=cache.layer_length(layer), mode=spec.attention.mode,
                backend=spec.attention.backend, softmax_scale=1.0, sa_impl=spec.attention.sa_impl,
            )  # fmt: skip
        else:
            k_cache = v_cache = None
            if cache is not None:
                k_cache, v_cache = cache.read(layer)
                k_cache, v_cache = k_cache.to(dtype), v_cache.to(dtype)
            out = mixed_scale_attention(
                q, k, v, k_cache, v_cache, spec.scale_ids, mode=spec.attention.mode,
                backend=spec.attention.backend, softmax_scale=1.0, sa_impl=spec.attention.sa_impl,
            )  # fmt: skip
            if spec.append:
                cache.write(layer, k, v)
        return self.proj(out.reshape(b, n, c))


def _angles(spec: PassSpec, batch: int) -> RopeAngles:
    """The RoPE angles of a pass's tokens: gathered once per pass, shared by every layer."""
    return gather_rope_angles(spec.rope, spec.scale_ids, spec.rows, spec.cols, batch=batch)


def _triton_qk(qkv, multiplier, spec: PassSpec, dtype, k_out):
    """The fused Triton kernel: normalise, scale, rotate and cast q and k in one launch, k written straight into
    its cache slot when there is one."""
    from moss_attention import cosine_qk_rope_triton

    q, k = cosine_qk_rope_triton(
        qkv[:, :, 0], qkv[:, :, 1], multiplier, spec.rope, spec.scale_ids, spec.rows, spec.cols,
        k_out=k_out, out_dtype=dtype, check=False,
    )  # fmt: skip
    return q, k


class FFN(nn.Module):
    def __init__(self, embed_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def fp32_weights(norm: nn.LayerNorm) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return (
        None if norm.weight is None else norm.weight.float(),
        None if norm.bias is None else norm.bias.float(),
    )


def fp32_layer_norm(
    x: torch.Tensor,
    shape: Sequence[int],
    weights: tuple[torch.Tensor | None, torch.Tensor | None],
    eps: float,
) -> torch.Tensor:
    """LayerNorm in fp32 with fp32 weights (:func:`fp32_weights`): what CUDA autocast runs for the bf16 blocks
    (CPU autocast does not upcast layer_norm and would mix a bf16 weight with the fp32 residual stream)."""
    with autocast_off(x):
        return F.layer_norm(x.float(), shape, weights[0], weights[1], eps)


def ada_layer_norm(x: torch.Tensor, scale1: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without affine, then ``· scale1 + shift`` with ``scale1 = 1 + scale``; fp32 (the release's fused
    AdaLN)."""
    x = F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    return x.mul(scale1).add_(shift)


class InfinityBlock(nn.Module):
    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        c = cfg.embed_dim
        self.eps = cfg.norm_eps
        self.sa = SelfAttention(c, cfg.num_heads)
        self.ca = TextCrossAttention(c, c, cfg.num_heads)
        self.ffn = FFN(c, cfg.ffn_hidden)
        self.ca_norm = nn.LayerNorm(c, eps=cfg.norm_eps)
        self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, c))

    def prepare(self, gss: torch.Tensor, ca_kv: torch.Tensor, bounds: Sequence[int]) -> BlockConstants:
        """This block's :class:`BlockConstants` for the text rows of one context."""
        with autocast_off(gss):
            gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss + gss).unbind(2)
        scale1, scale2 = scale1.add(1), scale2.add(1)
        # under the passes' autocast, as the passes computed them (CUDA autocast runs exp in fp32)
        sa = self.sa
        qkv_bias = torch.cat((sa.q_bias, sa.zero_k_bias, sa.v_bias))
        multiplier = cosine_multiplier(sa.scale_mul_1H11)
        return BlockConstants(
            gamma1, gamma2, scale1, scale2, shift1, shift2, self.ca.project_text(ca_kv, bounds), qkv_bias,
            multiplier, qk_scale(multiplier), fp32_weights(self.ca_norm),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, text: TextContext, layer: int, spec: PassSpec) -> torch.Tensor:
        const = text.blocks[layer]

        # Each residual branch goes through the pass's sub-layer hook, which may compute it for some tokens only
        # (``index``: their positions in the pass); the AdaLN gains are per image, so they broadcast either way.
        def sa(x_in: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
            h = ada_layer_norm(x_in, const.scale1, const.shift1, self.eps)
            return self.sa(h, layer, spec.subset(index), const).mul_(const.gamma1)

        def ca(x_in: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
            h = fp32_layer_norm(x_in, self.ca_norm.normalized_shape, const.ca_norm, self.ca_norm.eps)
            return self.ca(h, const.text).float()

        def ffn(x_in: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
            return self.ffn(ada_layer_norm(x_in, const.scale2, const.shift2, self.eps)).mul(const.gamma2)

        x = x + spec.sublayer(layer, "sa", x, sa)
        x = x + spec.sublayer(layer, "ca", x, ca)
        return x + spec.sublayer(layer, "ffn", x, ffn)


class _BlockChunk(nn.Module):
    """Only gives the key names their ``block_chunks.{c}.module.{j}`` shape."""

    def __init__(self, blocks: list[InfinityBlock]):
        super().__init__()
        self.module = nn.ModuleList(blocks)


class _RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return ((xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(self.eps))) * self.weight).to(x.dtype)


class _AttentivePool(nn.Module):
    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        self.ca = TextCrossAttention(cfg.embed_dim, cfg.text_channels, cfg.pool_heads, for_pool=True)

    def forward(self, kv_tokens: torch.Tensor, bounds: Sequence[int]) -> torch.Tensor:
        return self.ca(None, self.ca.project_text(kv_tokens, bounds)).squeeze(1)


class _SharedAdaLin(nn.Linear):
    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return super().forward(cond).reshape(-1, 1, 6, self.weight.shape[0] // 6)


class _HeadNorm(nn.Module):
    def __init__(self, c: int, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * c))

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond).view(-1, 1, 2, h.shape[-1]).unbind(2)
        return ada_layer_norm(h, scale.add(1), shift, self.eps)


class InfinityTransformer(nn.Module):
    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        self.config = cfg
        c, ct5 = cfg.embed_dim, cfg.text_channels
        self.cfg_uncond = nn.Parameter(torch.zeros(cfg.text_maxlen, ct5))
        self.pos_start = nn.Parameter(torch.zeros(1, 1, c))
        self.text_norm = _RMSNorm(ct5, cfg.norm_eps)
        self.text_proj_for_sos = _AttentivePool(cfg)
        self.text_proj_for_ca = nn.Sequential(nn.Linear(ct5, c), nn.GELU(approximate="tanh"), nn.Linear(c, c))
        self.lvl_embed = nn.Embedding(cfg.num_levels, c)
        self.word_embed = nn.Linear(cfg.d_vae, c)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), _SharedAdaLin(c, 6 * c))
        self.head_nm = _HeadNorm(c, c, cfg.norm_eps)
        self.head = nn.Linear(c, cfg.num_logits)
        per = cfg.blocks_per_chunk
        self.block_chunks = nn.ModuleList(
            _BlockChunk([InfinityBlock(cfg) for _ in range(per)]) for _ in range(cfg.block_chunks)
        )

    @property
    def blocks(self) -> list[InfinityBlock]:
        return [blk for chunk in self.block_chunks for blk in chunk.module]

    def cast_blocks(self) -> InfinityTransformer:
        """Cast the transformer blocks to the config's block dtype (bf16 for the releases), the rest stays fp32."""
        for chunk in self.block_chunks:
            chunk.to(self.config.block_dtype)
        return self

    @torch.no_grad()
    def init_random(self, seed: int = 0) -> InfinityTransformer:
        """Seeded random weights in the shape of the official init (for tests, benchmarks and the CPU default).

        Every tensor is drawn from one CPU generator in a fixed order, so a seed names one model on any device.
        AdaLN gains get non-zero values so every path of the block is exercised.
        """
        gen = torch.Generator(device="cpu").manual_seed(seed)
        c = self.config.embed_dim
        std = math.sqrt(1 / c / 3)
        for name, p in self.named_parameters():
            if name.endswith("scale_mul_1H11"):
                values = torch.full(p.shape, math.log(4.0))
            elif name.endswith(("norm.weight", "text_norm.weight")):
                values = 1 + 0.02 * torch.randn(p.shape, generator=gen)
            elif name == "cfg_uncond":
                values = torch.randn(p.shape, generator=gen).clamp_(-2.4, 2.4) * 1.2 / math.sqrt(p.shape[1])
            elif name.endswith("ada_gss"):
                values = torch.randn(p.shape, generator=gen) / math.sqrt(c)
            else:
                values = torch.randn(p.shape, generator=gen) * std
            p.copy_(values.to(p.dtype))
        return self

    # ------------------------------------------------------------------------------------------ text

    def encode_text(
        self,
        kv_compact: torch.Tensor,
        cu_seqlens: torch.Tensor,
        bounds: Sequence[int],
        *,
        prepare: bool = True,
    ) -> TextContext:
        """Text features ``(N, Ct5)`` of every row, packed by ``cu_seqlens`` (``bounds``: the same offsets on the
        host), to the conditioning the blocks use (with ``prepare``, each block's :class:`BlockConstants` too)."""
        bounds = tuple(bounds)
        kv = self.text_norm(kv_compact)
        cond = self.text_proj_for_sos(kv, bounds)
        ca_kv = self.text_proj_for_ca(kv)
        with autocast_off(kv):
            gss = self.shared_ada_lin(cond.float()).float().contiguous()
        ctx = TextContext(cond=cond, gss=gss, ca_kv=ca_kv, cu_seqlens=cu_seqlens, bounds=bounds)
        return self.prepare(ctx) if prepare else ctx

    def prepare(self, ctx: TextContext) -> TextContext:
        """The context with every block's :class:`BlockConstants`: what no pass of the generation changes (the
        text keys and values of each block's cross-attention above all) is computed here, once."""
        return replace(ctx, blocks=tuple(blk.prepare(ctx.gss, ctx.ca_kv, ctx.bounds) for blk in self.blocks))

    def start_tokens(self, text: TextContext) -> torch.Tensor:
        """The first scale's single token: the pooled text vector plus ``pos_start``, ``(B, 1, C)``."""
        b = text.batch_size
        return text.cond.unsqueeze(1).expand(b, 1, -1) + self.pos_start.expand(b, 1, -1)

    # ------------------------------------------------------------------------------------------ passes

    def add_level(self, x: torch.Tensor, scale_ids: torch.Tensor) -> torch.Tensor:
        """Add each token's scale level embedding (only before the first block, as the release does)."""
        return x + self.lvl_embed.weight[scale_ids]

    @property
    def layer_groups(self) -> tuple[range, ...]:
        """The layers of each block chunk (FasterVAR works per chunk)."""
        per = self.config.blocks_per_chunk
        return tuple(range(c * per, (c + 1) * per) for c in range(self.config.block_chunks))

    def run_blocks(self, x: torch.Tensor, text: TextContext, spec: PassSpec) -> torch.Tensor:
        return spec.run_blocks(self.blocks, self.layer_groups, x, text)

    def logits(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``(B, L, 2·d)`` bit logits in fp32; ``[..., 2k + b]`` is bit k taking value b."""
        with autocast_off(h):
            return self.head(self.head_nm(h.float(), cond.float()))

    def teacher_forced_logits(
        self, text, inputs: torch.Tensor, grids, rope_tables: RopeTables
    ) -> torch.Tensor:
        """The training forward: logits of every token of every scale in one pass with a block-causal mask.

        ``text``: a :class:`~moss_models.infinity.text.TextBatch`; ``inputs`` ``(B, L − 1, d_vae)``: the
        ``word_embed`` inputs of scales 1…S−1, concatenated; no CFG. Call under the model's autocast.
        """
        from moss_models.core.steps import StepTokens

        tokens = StepTokens.whole_scales(grids)
        ids = tokens.scale_ids(inputs.device)
        rows, cols = tokens.positions(1, inputs.device)
        spec = PassSpec(ids, rows, cols, rope=rope_tables, causal_scale_mask=ids[:, None] >= ids[None, :])
        ctx = self.encode_text(text.kv_compact, text.cu_seqlens, text.bounds)
        x = torch.cat([self.start_tokens(ctx), self.word_embed(inputs)], dim=1)
        return self.logits(self.run_blocks(self.add_level(x, ids), ctx, spec), ctx.cond)
