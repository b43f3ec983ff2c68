"""The VAR transformer (class-conditional next-scale prediction), with the release's state_dict key names.

Written from the math of the official ``models/var.py`` and ``models/basic_var.py`` (FoundationVision/VAR@78b9539,
MIT). Names that appear in the state dict are the release's (``class_emb``, ``pos_start``, ``pos_1LC``,
``lvl_embed``, ``word_embed``, ``blocks.{i}.attn.{mat_qkv,q_bias,v_bias,zero_k_bias,scale_mul_1H11,proj}``,
``blocks.{i}.ffn.{fc1,fc2}``, ``blocks.{i}.ada_lin.1`` or ``blocks.{i}.ada_gss`` with ``shared_ada_lin.1``,
``head_nm.ada_lin.1``, ``head`` and the buffers ``lvl_1L``, ``attn_bias_for_masking``); the rest is ours.

The pass interface mirrors :class:`~moss_models.infinity.transformer.InfinityTransformer` so that one engine
drives both: :meth:`VARTransformer.prepare` computes what no pass of a generation changes (the class rows, every
block's AdaLN gains, q/k/v bias and cosine multiplier), :meth:`VARTransformer.run_blocks` runs one pass over a
:class:`PassSpec` (KV cache, block-causal mask for teacher forcing, sub-layer and block-group hooks), and
:meth:`VARTransformer.logits` is the AdaLN head. Unlike Infinity there is no RoPE: positions enter once, before
the first block, as ``lvl_embed(scale) + pos_1LC[absolute position]`` (:meth:`VARTransformer.embed_tokens`).

Precision follows the official code, which never disables autocast at inference: under the official demo's CUDA
``autocast(float16)`` the AdaLN gains, projections and attention run in fp16 while LayerNorm, the q/k
normalisation and the residual stream stay fp32. Called under the same autocast, this module does the same; in
fp32 (the CPU fixture) every operation is the official one in the official order, so results match bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from moss_attention import cosine_multiplier
from moss_models.core.attention import scale_self_attention
from moss_models.core.context import GuidanceRows
from moss_models.core.pass_spec import PassSpec
from moss_models.var.config import VARConfig

# ----------------------------------------------------------------------------------------------- conditioning


@dataclass(frozen=True)
class VARBlockConstants:
    """One block's per-generation constants: its AdaLN gains for every row and the forms of its attention
    weights every pass uses."""

    gamma1: torch.Tensor  # (R, 1, C)
    gamma2: torch.Tensor
    scale1: torch.Tensor  # 1 + scale, (R, 1, C)
    scale2: torch.Tensor
    shift1: torch.Tensor
    shift2: torch.Tensor
    qkv_bias: torch.Tensor  # (3C,): q bias, zero k bias, v bias
    multiplier: torch.Tensor | None  # (1, 1, H, 1) fp32 q multiplier of L2-norm attention; None without it

    def rows(self, sl: slice) -> VARBlockConstants:
        per_row = {
            name: getattr(self, name)[sl]
            for name in ("gamma1", "gamma2", "scale1", "scale2", "shift1", "shift2")
        }
        return replace(self, **per_row)


@dataclass
class VARContext(GuidanceRows):
    """Class conditioning of one batch: rows are images, or with guidance ``[labels…, null…]`` (conditional rows
    first, as the official loop orders them)."""

    labels: torch.Tensor  # (R,) int64 class id of every row (num_classes: the null class)
    cond: torch.Tensor  # (R, C) class_emb rows: the start token and the AdaLN condition
    has_uncond: bool = False
    blocks: tuple[VARBlockConstants, ...] = ()

    def rows(self, which: str) -> VARContext:
        """The conditional (``cond``) or unconditional (``uncond``) row of every image."""
        sl = self.row_slice(which)
        if sl is None:
            return self
        return VARContext(
            labels=self.labels[sl],
            cond=self.cond[sl],
            has_uncond=False,
            blocks=tuple(blk.rows(sl) for blk in self.blocks),
        )


# ----------------------------------------------------------------------------------------------- modules


def _autocast_off(x: torch.Tensor):
    device_type = x.device.type if x.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    return torch.autocast(device_type, enabled=False)


def ada_layer_norm(x: torch.Tensor, scale1: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without affine, ``· (1 + scale)`` (given as ``scale1``), ``+ shift``: the official order."""
    return F.layer_norm(x.float(), (x.shape[-1],), eps=eps).mul(scale1).add_(shift)


class SelfAttention(nn.Module):
    """VAR's self-attention over ``[KV cache ++ this pass's tokens]``: L2-normalised q and k, q times a learned
    per-head ``exp(min(scale_mul, ln 100))``, softmax scale 1.

    A pass that appends to the cache writes its keys and values into the cache's slots first and attends over a
    view of the cache; a pass that appends nothing (the last scale, a packed MoSs stage) joins cache and tokens
    once. Cached keys are stored normalised, as the official cache holds them.
    """

    def __init__(self, embed_dim: int, num_heads: int, l2_norm: bool):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.l2_norm = l2_norm
        if l2_norm:
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    @property
    def softmax_scale(self) -> float:
        return 1.0 if self.l2_norm else 0.25 / math.sqrt(self.head_dim)

    def forward(self, x: torch.Tensor, layer: int, spec: PassSpec, const: VARBlockConstants) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.mat_qkv.weight, const.qkv_bias).view(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(2)  # (B, N, H, D) views
        dtype = v.dtype
        if const.multiplier is not None:
            # Normalising promotes to fp32 under autocast; the official attention kernels then get q and k in
            # the projection's dtype, which is what the cache keeps.
            q = F.normalize(q, dim=-1).mul(const.multiplier).to(dtype)
            k = F.normalize(k, dim=-1).to(dtype)
        out = scale_self_attention(q, k, v, layer=layer, spec=spec, scale=self.softmax_scale)
        return self.proj(out.reshape(b, n, c))


class FFN(nn.Module):
    def __init__(self, embed_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class _SharedAdaLin(nn.Linear):
    """The d36 shared AdaLN projection: ``(R, C) → (R, 1, 6, C)``."""

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return super().forward(cond).view(-1, 1, 6, self.weight.shape[0] // 6)


class VARBlock(nn.Module):
    """``x += γ₁·Attn(LN(x)(1+s₁)+b₁)``; ``x += γ₂·FFN(LN(x)(1+s₂)+b₂)`` with per-row AdaLN gains."""

    def __init__(self, cfg: VARConfig):
        super().__init__()
        c = cfg.embed_dim
        self.embed_dim, self.eps, self.shared_aln = c, cfg.norm_eps, cfg.shared_aln
        if cfg.shared_aln:
            # registered first so that it leads the block's keys, as in the release
            self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, c))
        self.attn = SelfAttention(c, cfg.num_heads, cfg.attn_l2_norm)
        self.ffn = FFN(c, cfg.ffn_hidden)
        if not cfg.shared_aln:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))

    def prepare(self, cond: torch.Tensor, shared: torch.Tensor | None) -> VARBlockConstants:
        """This block's constants for the rows ``cond`` ``(R, C)`` (``shared``: ``shared_ada_lin(cond)``)."""
        if self.shared_aln:
            gains = self.ada_gss + shared
        else:
            gains = self.ada_lin(cond).view(-1, 1, 6, self.embed_dim)
        # the release's unbind order
        gamma1, gamma2, scale1, scale2, shift1, shift2 = gains.unbind(2)
        attn = self.attn
        qkv_bias = torch.cat((attn.q_bias, attn.zero_k_bias, attn.v_bias))
        multiplier = None
        if attn.l2_norm:
            multiplier = cosine_multiplier(attn.scale_mul_1H11).view(1, 1, -1, 1)
        return VARBlockConstants(
            gamma1, gamma2, scale1.add(1), scale2.add(1), shift1, shift2, qkv_bias, multiplier
        )

    def forward(self, x: torch.Tensor, ctx: VARContext, layer: int, spec: PassSpec) -> torch.Tensor:
        const = ctx.blocks[layer]

        # Each residual branch goes through the pass's sub-layer hook, which may compute it for some tokens only
        # (``index``); the AdaLN gains are per row, so they broadcast either way.
        def sa(x_in: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
            h = ada_layer_norm(x_in, const.scale1, const.shift1, self.eps)
            return self.attn(h, layer, spec.subset(index), const).mul_(const.gamma1)

        def ffn(x_in: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
            return self.ffn(ada_layer_norm(x_in, const.scale2, const.shift2, self.eps)).mul(const.gamma2)

        x = x + spec.sublayer(layer, "sa", x, sa)
        return x + spec.sublayer(layer, "ffn", x, ffn)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, c: int, eps: float):
        super().__init__()
        self.embed_dim, self.eps = c, eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c, 2 * c))

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond).view(-1, 1, 2, self.embed_dim).unbind(2)
        return ada_layer_norm(h, scale.add(1), shift, self.eps)


def level_ids(patch_nums) -> torch.Tensor:
    """``(L,)`` int64: the scale of every token of the full sequence."""
    return torch.cat([torch.full((pn * pn,), i, dtype=torch.long) for i, pn in enumerate(patch_nums)])


def block_causal_bias(patch_nums) -> torch.Tensor:
    """The release's ``attn_bias_for_masking`` ``(1, 1, L, L)`` fp32: 0 where a token may see another (same or
    coarser scale), −inf elsewhere."""
    d = level_ids(patch_nums)
    return torch.where(d[:, None] >= d[None, :], 0.0, -torch.inf).reshape(1, 1, d.numel(), d.numel())


def scale_positions(patch_nums) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of every token of the full sequence on its own scale's grid, ``(L,)`` each."""
    rows = [torch.arange(pn).repeat_interleave(pn) for pn in patch_nums]
    cols = [torch.arange(pn).repeat(pn) for pn in patch_nums]
    return torch.cat(rows), torch.cat(cols)


class VARTransformer(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.config = cfg
        c, n = cfg.embed_dim, cfg.num_tokens
        # Attribute order is the release's state_dict order: own parameters, own buffers, then children.
        self.pos_start = nn.Parameter(torch.zeros(1, cfg.first_l, c))
        self.pos_1LC = nn.Parameter(torch.zeros(1, n, c))
        # Both buffers are functions of patch_nums that the release saves; the loader checks the saved ones.
        self.register_buffer("lvl_1L", level_ids(cfg.patch_nums).view(1, n))
        self.register_buffer("attn_bias_for_masking", block_causal_bias(cfg.patch_nums))
        self.register_buffer(
            "_scale_begin", torch.tensor(cfg.scale_begins[:-1], dtype=torch.long), persistent=False
        )
        self.word_embed = nn.Linear(cfg.d_vae, c)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, c)
        self.lvl_embed = nn.Embedding(cfg.num_scales, c)
        if cfg.shared_aln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(), _SharedAdaLin(c, 6 * c))
        self.blocks = nn.ModuleList(VARBlock(cfg) for _ in range(cfg.depth))
        self.head_nm = AdaLNBeforeHead(c, cfg.norm_eps)
        self.head = nn.Linear(c, cfg.vocab_size)

    @torch.no_grad()
    def reset_derived_buffers(self) -> VARTransformer:
        """Recompute the buffers that are functions of the schedule (after ``to_empty``, which leaves them
        uninitialised); the zero k bias is the release's zeros."""
        cfg = self.config
        self.lvl_1L.copy_(level_ids(cfg.patch_nums).view(1, -1))
        self.attn_bias_for_masking.copy_(block_causal_bias(cfg.patch_nums))
        self._scale_begin.copy_(torch.tensor(cfg.scale_begins[:-1], dtype=torch.long))
        for blk in self.blocks:
            blk.attn.zero_k_bias.zero_()
        return self

    def cast_blocks(self) -> VARTransformer:
        """Cast the blocks to the config's block dtype (fp32 for every release, as they are stored); with bf16
        blocks, run every pass under autocast to that dtype."""
        self.blocks.to(self.config.block_dtype)
        return self

    @torch.no_grad()
    def init_random(self, seed: int = 0) -> VARTransformer:
        """Seeded random weights in the shape of the official init, drawn on the CPU in a fixed order (a seed
        names one model on any device); AdaLN gains are made non-zero so every path of a block is exercised."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        std = math.sqrt(1 / self.config.embed_dim / 3)
        for name, p in self.named_parameters():
            if name.endswith("scale_mul_1H11"):
                values = torch.full(p.shape, math.log(4.0))
            elif name.endswith("ada_gss"):
                values = torch.randn(p.shape, generator=gen) / math.sqrt(self.config.embed_dim)
            else:
                values = torch.randn(p.shape, generator=gen) * std
            p.copy_(values.to(p.dtype))
        return self

    # ------------------------------------------------------------------------------------------ conditioning

    @property
    def layer_groups(self) -> tuple[range, ...]:
        """VAR has no block chunks: one group holds every block."""
        return (range(self.config.depth),)

    def check_labels(self, labels: torch.Tensor) -> None:
        n = self.config.num_classes
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.numel() == 0:
            raise ValueError(f"labels must be a non-empty 1-D tensor of class ids, got {labels!r:.80}")
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
        if labels.device.type == "meta":  # accounting runs carry no values
            return
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high > n:
            raise ValueError(
                f"class labels must lie in 0 … {n - 1} ({n} is the null class used for guidance), "
                f"got values in {low} … {high}"
            )

    def prepare(self, labels: torch.Tensor, *, guidance: bool = False, check: bool = True) -> VARContext:
        """The conditioning of one generation: the rows ``labels`` (with ``guidance``, followed by as many null
        rows), their class embeddings and every block's :class:`VARBlockConstants`, computed once for every
        pass. The gains are computed on all rows at once, as the official loop computes them. ``check``
        validates the label values (a device read; the engine checks them once, before its loop)."""
        if check:
            self.check_labels(labels)
        labels = labels.to(device=self.class_emb.weight.device, dtype=torch.long)
        if guidance:
            labels = torch.cat((labels, torch.full_like(labels, self.config.num_classes)))
        cond = self.class_emb(labels)
        shared = self.shared_ada_lin(cond) if self.config.shared_aln else None
        blocks = tuple(blk.prepare(cond, shared) for blk in self.blocks)
        return VARContext(labels=labels, cond=cond, has_uncond=guidance, blocks=blocks)

    # ------------------------------------------------------------------------------------------ embeddings

    def start_tokens(self, ctx: VARContext) -> torch.Tensor:
        """The first scale's tokens ``(R, first_l, C)``: ``(class_emb + pos_start) + (lvl_embed[0] + pos_1LC[0])``,
        summed in the official order."""
        r, first = ctx.batch_size, self.config.first_l
        lvl_pos = self.lvl_embed.weight[self.lvl_1L[0, :first]] + self.pos_1LC[0, :first]
        sos = ctx.cond.unsqueeze(1).expand(r, first, -1) + self.pos_start.expand(r, first, -1)
        return sos + lvl_pos

    def level_positions(
        self, scale_ids: torch.Tensor, flat_positions: torch.Tensor, *, check: bool = True
    ) -> torch.Tensor:
        """``lvl_embed(scale) + pos_1LC[absolute position]`` of every token, ``(1, N, C)`` or ``(B, N, C)``.

        ``scale_ids`` ``(N,)``: each token's scale; ``flat_positions`` ``(N,)`` or ``(B, N)``: its row-major
        position on its own scale's grid (per image for MoSs selections). The absolute position is the scale's
        first index plus that position. ``check`` validates the values (a device sync; the hot path skips it).
        """
        cfg = self.config
        if not isinstance(scale_ids, torch.Tensor) or scale_ids.ndim != 1:
            raise ValueError(f"scale_ids must be a 1-D tensor (N,), got {scale_ids!r:.80}")
        n = scale_ids.shape[0]
        if (
            not isinstance(flat_positions, torch.Tensor)
            or flat_positions.ndim not in (1, 2)
            or flat_positions.shape[-1] != n
        ):
            raise ValueError(
                f"flat_positions must be (N,) or (B, N) with N={n} (the tokens of scale_ids), got "
                f"{getattr(flat_positions, 'shape', flat_positions)!r:.80}"
            )
        for name, t in (("scale_ids", scale_ids), ("flat_positions", flat_positions)):
            if t.dtype.is_floating_point or t.dtype == torch.bool:
                raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}")
        if check and n and scale_ids.device.type != "meta":
            if int(scale_ids.min()) < 0 or int(scale_ids.max()) >= cfg.num_scales:
                raise ValueError(f"scale_ids must lie in 0 … {cfg.num_scales - 1}")
            sizes = torch.tensor([pn * pn for pn in cfg.patch_nums], device=scale_ids.device)[scale_ids]
            if bool((flat_positions < 0).any()) or bool((flat_positions >= sizes).any()):
                raise ValueError(
                    "flat_positions must lie on each token's own scale grid (0 ≤ p < pn² of its scale, "
                    f"patch_nums {cfg.patch_nums})"
                )
        absolute = self._scale_begin[scale_ids] + flat_positions
        lvl_pos = self.lvl_embed.weight[scale_ids] + self.pos_1LC[0][absolute]
        return lvl_pos if lvl_pos.ndim == 3 else lvl_pos.unsqueeze(0)

    def embed_tokens(
        self,
        x_BlC: torch.Tensor,
        scale_ids: torch.Tensor,
        flat_positions: torch.Tensor,
        *,
        check: bool = True,
    ) -> torch.Tensor:
        """Transformer inputs of next-scale tokens: ``word_embed(x) + (lvl_embed + pos_1LC)`` ``(B, N, C)``.

        ``x_BlC`` ``(B, N, Cvae)``: the tokens' VQVAE features (area-downsampled ``f_hat``), one row per image;
        guidance rows are the caller's ``.repeat(2, 1, 1)`` afterwards, as the official loop does. Tokens of
        several scales may be packed in any order: each gets its own scale's level and absolute position
        (:meth:`level_positions`). Level and position are summed before they are added, as the release does.
        """
        if not isinstance(x_BlC, torch.Tensor) or x_BlC.ndim != 3 or x_BlC.shape[-1] != self.config.d_vae:
            raise ValueError(
                f"x_BlC must be (B, N, {self.config.d_vae}), got {getattr(x_BlC, 'shape', x_BlC)!r:.80}"
            )
        if x_BlC.shape[1] != scale_ids.shape[0]:
            raise ValueError(f"x_BlC has {x_BlC.shape[1]} tokens, scale_ids {scale_ids.shape[0]}")
        if flat_positions.ndim == 2 and flat_positions.shape[0] != x_BlC.shape[0]:
            raise ValueError(
                f"flat_positions (B, N) must have x_BlC's batch {x_BlC.shape[0]}, got {flat_positions.shape[0]}"
            )
        lvl_pos = self.level_positions(scale_ids, flat_positions, check=check)
        return self.word_embed(x_BlC) + lvl_pos

    # ------------------------------------------------------------------------------------------ passes

    def run_blocks(self, x: torch.Tensor, ctx: VARContext, spec: PassSpec) -> torch.Tensor:
        """One pass of every block over ``x`` ``(R, N, C)`` (rows as ``ctx``'s); commits the cache if the pass
        appended."""
        if spec.rope is not None:
            raise ValueError("VAR has absolute positions, not RoPE: build its PassSpec with rope=None")
        if x.ndim != 3 or x.shape[0] != ctx.batch_size or x.shape[2] != self.config.embed_dim:
            raise ValueError(
                f"x must be (R, N, {self.config.embed_dim}) with the context's R={ctx.batch_size} rows, "
                f"got {tuple(x.shape)}"
            )
        return spec.run_blocks(self.blocks, self.layer_groups, x, ctx)

    def logits(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``(R, N, V)`` fp32 logits over the VQVAE codebook: ``head(AdaLN(h))`` (the official ``get_logits``)."""
        return self.head(self.head_nm(h.float(), cond).float()).float()

    def full_sequence_spec(self, device: torch.device | str) -> PassSpec:
        """The teacher-forced pass: every token of every scale, block-causal over scales, no cache."""
        ids = self.lvl_1L[0].to(device)
        rows, cols = scale_positions(self.config.patch_nums)
        return PassSpec(
            ids,
            rows.to(device),
            cols.to(device),
            scales=tuple(range(self.config.num_scales)),
            causal_scale_mask=ids[:, None] >= ids[None, :],
        )

    def teacher_forced_logits(self, labels: torch.Tensor, x_BLC_wo_prefix: torch.Tensor) -> torch.Tensor:
        """The training forward (official ``VAR.forward`` with ``cond_drop_rate`` 0): logits ``(B, L, V)`` of
        every token of every scale in one block-causal pass, no guidance.

        ``x_BLC_wo_prefix`` ``(B, L − first_l, Cvae)``: the VQVAE features of scales 1 … SN−1
        (``teacher_forcing_inputs`` of the VQVAE).
        """
        cfg = self.config
        want = cfg.num_tokens - cfg.first_l
        if (
            not isinstance(x_BLC_wo_prefix, torch.Tensor)
            or x_BLC_wo_prefix.ndim != 3
            or tuple(x_BLC_wo_prefix.shape[1:]) != (want, cfg.d_vae)
        ):
            raise ValueError(
                f"x_BLC_wo_prefix must be (B, {want}, {cfg.d_vae}), got "
                f"{getattr(x_BLC_wo_prefix, 'shape', x_BLC_wo_prefix)!r:.80}"
            )
        if labels.ndim != 1 or labels.shape[0] != x_BLC_wo_prefix.shape[0]:
            raise ValueError(
                f"labels must be (B,) with B={x_BLC_wo_prefix.shape[0]}, got {tuple(labels.shape)}"
            )
        ctx = self.prepare(labels, guidance=False)
        b, first = ctx.batch_size, cfg.first_l
        # The official forward embeds in fp32 with autocast off, then runs the blocks on a residual stream cast
        # to autocast's compute dtype (fp16 under the demo's autocast; unlike its inference loop, which keeps
        # the stream fp32).
        with _autocast_off(x_BLC_wo_prefix):
            sos = ctx.cond.float().unsqueeze(1).expand(b, first, -1) + self.pos_start.expand(b, first, -1)
            x = torch.cat((sos, self.word_embed(x_BLC_wo_prefix.float())), dim=1)
            x = x + (self.lvl_embed(self.lvl_1L) + self.pos_1LC)
        probe = x.new_ones(1, 1)
        x = x.to(torch.matmul(probe, probe).dtype)
        h = self.run_blocks(x, ctx, self.full_sequence_spec(x.device))
        return self.logits(h, ctx.cond)
