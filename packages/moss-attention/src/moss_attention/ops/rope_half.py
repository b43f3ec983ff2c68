"""Triton kernels for HART's RoPE: ``x · cos + rotate_half(x) · sin`` (head dim ``d`` pairs with ``d + D/2``).

* :func:`apply_rope_rotate_half_triton` — one tensor, cos/sin read from ``(B|1, N, D)`` tables; the same
  arithmetic as the torch reference :func:`moss_attention.apply_rope_rotate_half`, hence bit-identical to it.
* :func:`hart_rope_qk_triton` (image tokens, 2D) and :func:`llama_rope_qk_triton` (context tokens, 1D) — q AND k
  in one launch, with the angles computed on the fly from the positions (``row + offset``, ``col + offset`` or
  the 1D position id, times a ``(D/2,)`` frequency table) instead of read from a ``(B, N, D)`` cos/sin table.
  Why on the fly: the tables would be written once and read twice (q and k), ``4·D`` bytes per token each time,
  as much traffic as fp16 q and k themselves; computing them costs a few transcendentals per pair, shared by
  the heads a program loops over and by q and k. Positions, offsets and frequencies are float32 and combined
  with the reference's operations in its order, so the angles are bit-identical; only ``cos``/``sin`` come from
  Triton's implementation rather than torch's (within about 1 float32 ulp), so these kernels match the reference
  to a stated tolerance, not bit for bit (see :func:`hart_rope_qk_triton`).

Rounding follows the official code: cos/sin rounded to ``cos_dtype`` (default x's dtype), then each product
and their sum rounded to x's dtype, computed in float32 in between (which is exact for the products of two
fp16/bf16 numbers and what eager torch does for the sum). Floating-point contraction into FMAs is disabled at
compile time so that fp32 inputs also round like torch's separate multiply and add.

A program handles ``block_tokens`` tokens × all head-dim pairs and loops over a group of ``heads_per_program``
heads, so each token's angles are built once per group. On CPU run with ``TRITON_INTERPRET=1`` set before this
module is imported (the interpreter costs about a millisecond per program and loop step: use large blocks).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from moss_attention.hart_rope import (
    _check_base,
    _positions,
    check_hart_positions,
    check_qk,
    check_rotate_half_inputs,
    inverse_frequencies,
)

_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def interpreted() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def default_blocks(num_tokens: int, heads: int) -> tuple[int, int]:
    """``(block_tokens, heads_per_program)``: on a GPU, 32 tokens x 8 heads (enough programs to fill the SMs
    at HART's sizes, angles shared by 8 heads); interpreted, as few programs as possible (each costs ~1 ms)."""
    if interpreted():
        return max(1, min(1024, triton.next_power_of_2(max(num_tokens, 1)))), max(heads, 1)
    return 32, 8


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{name} must be None or a positive int, got {value!r}")


@triton.jit
def _round_to(x, ty: tl.constexpr):
    # float32 x rounded to the nearest value of dtype ty (ties to even), returned as float32. bfloat16 by hand: Triton's
    # CPU interpreter truncates float32 -> bfloat16 casts instead of rounding (GPUs round to nearest even, as
    # this does, so both agree with torch).
    if ty == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    elif ty == tl.float16:
        return x.to(tl.float16).to(tl.float32)
    else:
        return x


@triton.jit
def _round_angle(c, ROUND_TY: tl.constexpr, X_TY: tl.constexpr):
    # cos/sin as the official code feeds them to the product: cast to v's dtype, then promoted to x's.
    return _round_to(_round_to(c, ROUND_TY), X_TY)


@triton.jit
def _rotate_half_store(src_ptr, dst_ptr, src_row, dst_row, src_sd, dst_sd, d, half, mask,
                       cos_a, sin_a, cos_b, sin_b):  # fmt: skip
    # d < D/2 indexes the first half; its partner is d + D/2. Each product and the sum are rounded to x's
    # dtype, as eager torch rounds x * cos, rotate_half(x) * sin and their sum (the final cast is then exact).
    ty: tl.constexpr = dst_ptr.dtype.element_ty
    x1 = tl.load(src_ptr + src_row + d[None, :] * src_sd, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src_ptr + src_row + (d + half)[None, :] * src_sd, mask=mask, other=0.0).to(tl.float32)
    y1 = _round_to(_round_to(x1 * cos_a, ty) + _round_to(-x2 * sin_a, ty), ty)
    y2 = _round_to(_round_to(x2 * cos_b, ty) + _round_to(x1 * sin_b, ty), ty)
    tl.store(dst_ptr + dst_row + d[None, :] * dst_sd, y1.to(ty), mask=mask)
    tl.store(dst_ptr + dst_row + (d + half)[None, :] * dst_sd, y2.to(ty), mask=mask)


@triton.jit
def _rope_half_kernel(
    q_ptr,  # (B, N, H, D), any strides
    k_ptr,  # same shape as q (ignored unless HAS_K)
    q_out_ptr,
    k_out_ptr,
    cos_ptr,  # FROM_TABLE: (B, N, D) cos, any float dtype, batch stride may be 0
    sin_ptr,
    pos_a_ptr,  # otherwise: (B, N) float32 position of the first-half dims (HART: row; Llama: position id)
    pos_b_ptr,  # (B, N) float32 position of the second-half dims (HART: col; unused if SAME_POSITIONS)
    off_ptr,  # (B,) float32 offset added to both positions (if HAS_OFFSET)
    freq_ptr,  # (D/2,) float32 frequency of head dim d and of d + D/2
    num_tokens,  # B * N
    N,
    H,
    half,  # D / 2
    q_sb, q_sn, q_sh, q_sd,
    k_sb, k_sn, k_sh, k_sd,
    qo_sb, qo_sn, qo_sh, qo_sd,
    ko_sb, ko_sn, ko_sh, ko_sd,
    cos_sb, cos_sn, cos_sd,
    sin_sb, sin_sn, sin_sd,
    pa_sb, pa_sn,
    pb_sb, pb_sn,
    off_sb,
    FROM_TABLE: tl.constexpr,
    HAS_K: tl.constexpr,
    HAS_OFFSET: tl.constexpr,
    SAME_POSITIONS: tl.constexpr,
    ROUND_TY: tl.constexpr,
    BLOCK_TOKENS: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
    HEADS_PER_PROGRAM: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0).to(tl.int64) * BLOCK_TOKENS + tl.arange(0, BLOCK_TOKENS)
    token_mask = t < num_tokens
    t = tl.where(token_mask, t, 0)  # keep the tail's index loads in bounds
    b = t // N
    n = t - b * N
    d = tl.arange(0, BLOCK_HALF)
    mask = token_mask[:, None] & (d < half)[None, :]

    if FROM_TABLE:
        cos_row = (b * cos_sb + n * cos_sn)[:, None]
        sin_row = (b * sin_sb + n * sin_sn)[:, None]
        cos_a = tl.load(cos_ptr + cos_row + d[None, :] * cos_sd, mask=mask, other=1.0).to(tl.float32)
        cos_b = tl.load(cos_ptr + cos_row + (d + half)[None, :] * cos_sd, mask=mask, other=1.0).to(tl.float32)
        sin_a = tl.load(sin_ptr + sin_row + d[None, :] * sin_sd, mask=mask, other=0.0).to(tl.float32)
        sin_b = tl.load(sin_ptr + sin_row + (d + half)[None, :] * sin_sd, mask=mask, other=0.0).to(tl.float32)
    else:
        # The reference's float32 ops in its order: (position + offset) * frequency, then cos / sin.
        freq = tl.load(freq_ptr + d, mask=d < half, other=0.0)[None, :]
        pos_a = tl.load(pos_a_ptr + b * pa_sb + n * pa_sn)
        if HAS_OFFSET:
            offset = tl.load(off_ptr + b * off_sb)
            pos_a = pos_a + offset
        angle_a = pos_a[:, None] * freq
        cos_a = tl.cos(angle_a)
        sin_a = tl.sin(angle_a)
        if SAME_POSITIONS:
            cos_b = cos_a
            sin_b = sin_a
        else:
            pos_b = tl.load(pos_b_ptr + b * pb_sb + n * pb_sn)
            if HAS_OFFSET:
                pos_b = pos_b + offset
            angle_b = pos_b[:, None] * freq
            cos_b = tl.cos(angle_b)
            sin_b = tl.sin(angle_b)
    x_ty = q_ptr.dtype.element_ty
    cos_a = _round_angle(cos_a, ROUND_TY, x_ty)
    sin_a = _round_angle(sin_a, ROUND_TY, x_ty)
    cos_b = _round_angle(cos_b, ROUND_TY, x_ty)
    sin_b = _round_angle(sin_b, ROUND_TY, x_ty)

    h_start = tl.program_id(1) * HEADS_PER_PROGRAM
    h_end = tl.minimum(h_start + HEADS_PER_PROGRAM, H)
    for h in range(h_start, h_end):
        _rotate_half_store(q_ptr, q_out_ptr, (b * q_sb + n * q_sn + h * q_sh)[:, None],
                           (b * qo_sb + n * qo_sn + h * qo_sh)[:, None], q_sd, qo_sd, d, half, mask,
                           cos_a, sin_a, cos_b, sin_b)  # fmt: skip
        if HAS_K:
            _rotate_half_store(k_ptr, k_out_ptr, (b * k_sb + n * k_sn + h * k_sh)[:, None],
                               (b * ko_sb + n * ko_sn + h * ko_sh)[:, None], k_sd, ko_sd, d, half, mask,
                               cos_a, sin_a, cos_b, sin_b)  # fmt: skip


def _launch(
    q: torch.Tensor,
    k: torch.Tensor | None,
    *,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
    pos_a: torch.Tensor | None = None,
    pos_b: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    freqs: torch.Tensor | None = None,
    cos_dtype: torch.dtype | None,
    block_tokens: int | None,
    heads_per_program: int | None,
    num_warps: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    batch, tokens, heads, dim = q.shape
    q_out = torch.empty_like(q)
    k_out = torch.empty_like(k) if k is not None else None
    num_tokens = batch * tokens
    if num_tokens == 0 or heads == 0:
        return q_out, k_out
    half = dim // 2
    default_tokens, default_heads = default_blocks(num_tokens, heads)
    block = triton.next_power_of_2(block_tokens or default_tokens)  # tl.arange needs a power of two
    heads_per_program = min(heads_per_program or default_heads, heads)
    from_table = cos is not None
    if from_table:
        cos, sin = cos.expand(batch, tokens, dim), sin.expand(batch, tokens, dim)
        pos_a = pos_b = offset = freqs = cos  # unused by the kernel in this mode; any valid pointer
    else:
        cos = sin = q  # unused in this mode
    has_offset = offset is not None
    same_positions = pos_b is None
    pos_b = pos_a if same_positions else pos_b
    offset = offset if has_offset else pos_a
    k_arg, k_out_arg = (k, k_out) if k is not None else (q, q_out)
    grid = (triton.cdiv(num_tokens, block), triton.cdiv(heads, heads_per_program))
    _rope_half_kernel[grid](
        q, k_arg, q_out, k_out_arg,
        cos, sin, pos_a, pos_b, offset, freqs,
        num_tokens, tokens, heads, half,
        *q.stride(), *k_arg.stride(), *q_out.stride(), *k_out_arg.stride(),
        *cos.stride()[:3], *sin.stride()[:3],
        *pos_a.stride()[:2], *pos_b.stride()[:2], offset.stride(0),
        FROM_TABLE=from_table,
        HAS_K=k is not None,
        HAS_OFFSET=has_offset and not from_table,
        SAME_POSITIONS=same_positions,
        ROUND_TY=_TL_DTYPES[cos_dtype or q.dtype],
        BLOCK_TOKENS=block,
        BLOCK_HALF=triton.next_power_of_2(half),
        HEADS_PER_PROGRAM=heads_per_program,
        num_warps=num_warps,
        enable_fp_fusion=False,  # round x*cos and the sum separately, as torch does (the interpreter ignores it)
    )  # fmt: skip
    return q_out, k_out


def apply_rope_rotate_half_triton(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    cos_dtype: torch.dtype | None = None,
    block_tokens: int | None = None,
    heads_per_program: int | None = None,
    num_warps: int = 4,
    check: bool = True,
) -> torch.Tensor:
    """Triton: :func:`moss_attention.apply_rope_rotate_half` (same arguments, bit-identical result).

    x: ``(B, N, H, D)``, any strides; cos, sin: ``(B, N, D)`` or ``(1, N, D)``, any float dtype and strides.
    ``check=False`` skips validation (the caller did it). Returns a new contiguous tensor.
    """
    if check:
        check_rotate_half_inputs(x, cos, sin, cos_dtype)
    _check_positive("block_tokens", block_tokens)
    _check_positive("heads_per_program", heads_per_program)
    out, _ = _launch(
        x,
        None,
        cos=cos,
        sin=sin,
        cos_dtype=cos_dtype,
        block_tokens=block_tokens,
        heads_per_program=heads_per_program,
        num_warps=num_warps,
    )
    return out


def _on_device(name: str, t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if t.device != device:
        raise ValueError(f"{name} must be on q's device {device}, got {t.device}")
    return t


def hart_rope_qk_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    offset: torch.Tensor,
    *,
    base: float = 10000.0,
    cos_dtype: torch.dtype | None = None,
    block_tokens: int | None = None,
    heads_per_program: int | None = None,
    num_warps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton: HART's 2D RoPE of image tokens for q and k in one launch, angles computed on the fly.

    q, k: ``(B, N, H, D)``, any strides, D a multiple of 4; rows, cols ``(N,)`` in 64-grid units
    (:func:`~moss_attention.hart_scale_positions`); offset ``(B,)``. The torch reference is
    :func:`moss_attention.hart_rope_qk`. The angles are bit-identical to it; cos/sin may differ by about one
    float32 ulp (Triton's versus torch's implementation), which after the rounding to x's dtype bounds the
    difference per output element by ``2·eps(dtype)·(|x_d| + |x_partner|)`` (usually 0: a flip needs the float32
    cos/sin to straddle a rounding boundary of the narrower type). Returns new ``(q_rot, k_rot)``.
    """
    check_qk(q, k, cos_dtype, 4)
    _check_base(base)
    batch, tokens, _, dim = q.shape
    rows, cols, offset = check_hart_positions(q, rows, cols, offset)
    _check_positive("block_tokens", block_tokens)
    _check_positive("heads_per_program", heads_per_program)
    inv_freq = inverse_frequencies(dim, 4, base)
    freqs = torch.cat((inv_freq, inv_freq)).to(q.device)  # dims d and d + D/2 share frequency f_{d mod D/4}
    q_out, k_out = _launch(
        q,
        k,
        pos_a=rows[None, :].expand(batch, tokens),
        pos_b=cols[None, :].expand(batch, tokens),
        offset=offset,
        freqs=freqs,
        cos_dtype=cos_dtype,
        block_tokens=block_tokens,
        heads_per_program=heads_per_program,
        num_warps=num_warps,
    )
    return q_out, k_out


def llama_rope_qk_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    base: float = 10000.0,
    cos_dtype: torch.dtype | None = None,
    block_tokens: int | None = None,
    heads_per_program: int | None = None,
    num_warps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton: standard 1D Llama RoPE (HART's context tokens) for q and k in one launch, angles on the fly.

    q, k: ``(B, N, H, D)``, D even; position_ids ``(B, N)`` or ``(N,)``, int or float. Torch reference:
    :func:`moss_attention.llama_rope_qk`; tolerance as for :func:`hart_rope_qk_triton`. Returns new tensors.
    """
    check_qk(q, k, cos_dtype, 2)
    _check_base(base)
    batch, tokens, _, dim = q.shape
    if isinstance(position_ids, torch.Tensor) and position_ids.ndim == 1:
        position_ids = position_ids[None, :]
    pos = _positions("position_ids", position_ids, 2)
    if pos.shape not in ((batch, tokens), (1, tokens)):
        raise ValueError(
            f"position_ids must have shape (B, N) = ({batch}, {tokens}) or (N,), got {tuple(pos.shape)}"
        )
    _on_device("position_ids", pos, q.device)
    _check_positive("block_tokens", block_tokens)
    _check_positive("heads_per_program", heads_per_program)
    q_out, k_out = _launch(
        q,
        k,
        pos_a=pos.expand(batch, tokens),
        freqs=inverse_frequencies(dim, 2, base).to(q.device),
        cos_dtype=cos_dtype,
        block_tokens=block_tokens,
        heads_per_program=heads_per_program,
        num_warps=num_warps,
    )
    return q_out, k_out
