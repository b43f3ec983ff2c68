"""Triton kernels for 2D RoPE over mixed-scale token sets, with their launchers.

* :func:`precompute_rope_tables_triton` — cos/sin tables of every scale of a schedule, one launch;
* :func:`apply_rope_2d_triton` — rotate q AND k of a packed mixed-scale set, one launch, in place or not.

Both match the torch reference in :mod:`moss_attention.rope`. Inputs of any dtype in (fp32, fp16, bf16) are
upcast to fp32 right after loading (the Triton interpreter computes bf16 arithmetic wrongly, and fp32 leaves a
single rounding, on store) and cast back on store. On CPU run them with ``TRITON_INTERPRET=1`` set before this module
is imported; the interpreter costs about 1.5 ms per program, so raise ``block_rows`` there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from moss_attention.rope import ROPE_DTYPES, Layout, RopeTables, prepare_rope_inputs
from moss_attention.schemes import RopeScheme, check_schedule, check_scheme, scale_offsets


def interpreted() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def default_block_rows(pairs: int) -> int:
    """Rows per program: ~4K elements per tile on a GPU; as many as fit 16K elements when interpreted."""
    budget = 16384 if interpreted() else 4096
    return max(1, min(1024, budget // triton.next_power_of_2(pairs)))


def _check_block_rows(block_rows: int) -> int:
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows <= 0:
        raise ValueError(f"block_rows must be a positive int, got {block_rows!r}")
    return triton.next_power_of_2(block_rows)  # tl.arange needs a power of two


@triton.jit
def _round_half_to_even(x):
    # torch.round semantics (banker's rounding), built from floor so the interpreter and GPUs agree.
    down = tl.floor(x)
    frac = x - down
    down_is_odd = (down - 2.0 * tl.floor(down * 0.5)) == 1.0
    up = (frac > 0.5) | ((frac == 0.5) & down_is_odd)
    return down + up.to(tl.float32)


@triton.jit
def _precompute_rope_tables_kernel(
    cos_ptr,  # (T, P) float32 out
    sin_ptr,  # (T, P) float32 out
    offsets_ptr,  # (S + 1,) int32: first table row of each scale, then T
    widths_ptr,  # (S,) int32: grid width w of each scale
    row_steps_ptr,  # (S,) float32: reference-grid rows between neighbouring tokens (H_ref / h)
    col_steps_ptr,  # (S,) float32: W_ref / w
    freqs_ptr,  # (P,) float32: frequency of each rotary pair
    axes_ptr,  # (P,) int32: 0 = pair rotates with the row position, 1 = with the column
    num_rows,  # T
    num_scales,  # S
    num_pairs,  # P
    ROUND_POSITIONS: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_SCALES: tl.constexpr,
    BLOCK_PAIRS: tl.constexpr,
):
    # One program fills BLOCK_ROWS consecutive table rows (tokens of any scales) x all pairs.
    t = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_mask = t < num_rows
    # Scale of each row = number of scales that end at or before it (schedules have ~13 scales).
    s_idx = tl.arange(0, BLOCK_SCALES)
    ends = tl.load(offsets_ptr + 1 + s_idx, mask=s_idx < num_scales, other=2147483647).to(tl.int64)
    scale = tl.sum((t[:, None] >= ends[None, :]).to(tl.int32), axis=1)
    scale = tl.minimum(scale, num_scales - 1)  # rows past T (masked out) must still load in bounds
    local = t - tl.load(offsets_ptr + scale).to(tl.int64)
    width = tl.load(widths_ptr + scale).to(tl.int64)
    i = local // width
    j = local - i * width
    row = i.to(tl.float32) * tl.load(row_steps_ptr + scale)
    col = j.to(tl.float32) * tl.load(col_steps_ptr + scale)
    if ROUND_POSITIONS:
        row = _round_half_to_even(row)
        col = _round_half_to_even(col)

    p = tl.arange(0, BLOCK_PAIRS)
    pair_mask = p < num_pairs
    freq = tl.load(freqs_ptr + p, mask=pair_mask, other=0.0)
    axis = tl.load(axes_ptr + p, mask=pair_mask, other=0)
    angle = tl.where(axis[None, :] == 0, row[:, None], col[:, None]) * freq[None, :]
    out = t[:, None] * num_pairs + p[None, :]
    mask = row_mask[:, None] & pair_mask[None, :]
    tl.store(cos_ptr + out, tl.cos(angle), mask=mask)
    tl.store(sin_ptr + out, tl.sin(angle), mask=mask)


def precompute_rope_tables_triton(
    scheme: RopeScheme,
    schedule: Sequence[Sequence[int]],
    device: torch.device | str | None = None,
    *,
    block_rows: int | None = None,
    num_warps: int = 4,
) -> RopeTables:
    """Triton: the same tables as :func:`moss_attention.precompute_rope_tables`, all scales in one launch."""
    check_scheme(scheme)
    grids = check_schedule(schedule)
    device = torch.device(device) if device is not None else torch.device("cpu")
    pairs = scheme.rotary_dim // 2
    offsets = scale_offsets(grids)
    total = offsets[-1]
    steps = [scheme.position_steps(grid) for grid in grids]

    def small(values: Sequence[float | int], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).to(device)

    cos = torch.empty(total, pairs, dtype=torch.float32, device=device)
    sin = torch.empty(total, pairs, dtype=torch.float32, device=device)
    block = _check_block_rows(block_rows if block_rows is not None else default_block_rows(pairs))
    _precompute_rope_tables_kernel[(triton.cdiv(total, block),)](
        cos,
        sin,
        small(offsets, torch.int32),
        small([w for _, w in grids], torch.int32),
        small([s for s, _ in steps], torch.float32),  # Python double -> float32, as Infinity's multiply does
        small([s for _, s in steps], torch.float32),
        scheme.pair_frequencies().to(device=device, dtype=torch.float32),
        scheme.pair_axes().to(device=device, dtype=torch.int32),
        total,
        len(grids),
        pairs,
        ROUND_POSITIONS=bool(scheme.round_positions),
        BLOCK_ROWS=block,
        BLOCK_SCALES=triton.next_power_of_2(len(grids)),
        BLOCK_PAIRS=triton.next_power_of_2(pairs),
        num_warps=num_warps,
    )
    return RopeTables.from_cos_sin(cos, sin, grids, scheme.pairing)


@triton.jit
def _rotate_rows(
    src_ptr,
    dst_ptr,
    b,
    n,
    h,
    src_sb,
    src_sn,
    src_sh,
    src_sd,
    dst_sb,
    dst_sn,
    dst_sh,
    dst_sd,
    cos,
    sin,
    p,
    mask,
    num_pairs,
    INTERLEAVED: tl.constexpr,
):
    # Element offsets of the two members of every pair, for a (B, N, H, D) tensor of any strides.
    if INTERLEAVED:
        first, second = 2 * p, 2 * p + 1
    else:
        first, second = p, p + num_pairs
    src = (b * src_sb + n * src_sn + h * src_sh)[:, None]
    dst = (b * dst_sb + n * dst_sn + h * dst_sh)[:, None]
    x0 = tl.load(src_ptr + src + first[None, :] * src_sd, mask=mask, other=0.0).to(tl.float32)
    x1 = tl.load(src_ptr + src + second[None, :] * src_sd, mask=mask, other=0.0).to(tl.float32)
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    out_ty = dst_ptr.dtype.element_ty
    tl.store(dst_ptr + dst + first[None, :] * dst_sd, y0.to(out_ty), mask=mask)
    tl.store(dst_ptr + dst + second[None, :] * dst_sd, y1.to(out_ty), mask=mask)


@triton.jit
def _rows_and_angles(
    pid, num_rows, N, H, num_pairs, cos_ptr, sin_ptr, starts_ptr, widths_ptr,
    sid_ptr, row_ptr, col_ptr, sid_sb, sid_sn, row_sb, row_sn, col_sb, col_sn,
    BLOCK_ROWS: tl.constexpr, BLOCK_PAIRS: tl.constexpr,
):  # fmt: skip
    # A "row" is one (token, head): r = (b * N + n) * H + h. The heads of a token share its cos/sin row, found
    # from the token's scale and its position on that scale's grid. Shared by every kernel that rotates.
    r = pid.to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_mask = r < num_rows
    r = tl.where(row_mask, r, 0)  # keep index loads of the tail in bounds (nothing is bounds-checked)
    token = r // H
    h = r - token * H
    b = token // N
    n = token - b * N
    scale = tl.load(sid_ptr + b * sid_sb + n * sid_sn).to(tl.int64)
    i = tl.load(row_ptr + b * row_sb + n * row_sn).to(tl.int64)
    j = tl.load(col_ptr + b * col_sb + n * col_sn).to(tl.int64)
    t = tl.load(starts_ptr + scale).to(tl.int64) + i * tl.load(widths_ptr + scale).to(tl.int64) + j

    p = tl.arange(0, BLOCK_PAIRS)
    mask = row_mask[:, None] & (p < num_pairs)[None, :]
    table = t[:, None] * num_pairs + p[None, :]
    cos = tl.load(cos_ptr + table, mask=mask, other=1.0)
    sin = tl.load(sin_ptr + table, mask=mask, other=0.0)
    return b, n, h, p, mask, cos, sin


@triton.jit
def _apply_rope_2d_kernel(
    q_ptr,  # (B, N, H, D), any strides
    k_ptr,
    q_out_ptr,  # may alias q_ptr (in place): every element is read before the same program writes it
    k_out_ptr,
    cos_ptr,  # (T, P) float32, contiguous
    sin_ptr,
    starts_ptr,  # (S,) int32: first table row of each scale
    widths_ptr,  # (S,) int32: grid width of each scale
    sid_ptr,  # (B, N) scale index of each token (batch stride may be 0)
    row_ptr,  # (B, N) row on its scale's grid
    col_ptr,  # (B, N) column on its scale's grid
    num_rows,  # B * N * H
    N,
    H,
    num_pairs,  # P = D / 2
    q_sb, q_sn, q_sh, q_sd,
    k_sb, k_sn, k_sh, k_sd,
    qo_sb, qo_sn, qo_sh, qo_sd,
    ko_sb, ko_sn, ko_sh, ko_sd,
    sid_sb, sid_sn,
    row_sb, row_sn,
    col_sb, col_sn,
    INTERLEAVED: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_PAIRS: tl.constexpr,
):  # fmt: skip
    # One program rotates BLOCK_ROWS (token, head) rows x all pairs of both q and k.
    b, n, h, p, mask, cos, sin = _rows_and_angles(
        tl.program_id(0), num_rows, N, H, num_pairs, cos_ptr, sin_ptr, starts_ptr, widths_ptr,
        sid_ptr, row_ptr, col_ptr, sid_sb, sid_sn, row_sb, row_sn, col_sb, col_sn, BLOCK_ROWS, BLOCK_PAIRS,
    )  # fmt: skip
    _rotate_rows(q_ptr, q_out_ptr, b, n, h, q_sb, q_sn, q_sh, q_sd, qo_sb, qo_sn, qo_sh, qo_sd,
                 cos, sin, p, mask, num_pairs, INTERLEAVED)  # fmt: skip
    _rotate_rows(k_ptr, k_out_ptr, b, n, h, k_sb, k_sn, k_sh, k_sd, ko_sb, ko_sn, ko_sh, ko_sd,
                 cos, sin, p, mask, num_pairs, INTERLEAVED)  # fmt: skip


def apply_rope_2d_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    tables: RopeTables,
    scale_ids: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    *,
    layout: Layout = "bnhd",
    inplace: bool = False,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
    block_rows: int | None = None,
    num_warps: int = 4,
    check_bounds: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton: :func:`moss_attention.apply_rope_2d` in one launch for q and k, same arguments and result.

    ``inplace=True`` overwrites q and k; otherwise results go to ``out=(q_out, k_out)`` (same shape and
    dtype as q, any strides) or to new tensors. ``block_rows`` = (token, head) rows per program.
    """
    q4, k4, scale_ids, rows, cols = prepare_rope_inputs(
        q, k, tables, scale_ids, rows, cols, layout, check_bounds, dtypes=ROPE_DTYPES
    )
    if inplace and out is not None:
        raise ValueError("out must be None when inplace=True")
    if inplace:
        q_out, k_out = q, k
    elif out is not None:
        q_out, k_out = out
        for name, dst in (("out[0]", q_out), ("out[1]", k_out)):
            if not isinstance(dst, torch.Tensor) or dst.shape != q.shape or dst.dtype != q.dtype:
                raise ValueError(f"{name} must be a tensor of q's shape {tuple(q.shape)} and dtype {q.dtype}")
            if dst.device != q.device:
                raise ValueError(f"{name} must be on q's device {q.device}, got {dst.device}")
    else:
        q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    qo4, ko4 = (q_out.transpose(1, 2), k_out.transpose(1, 2)) if layout == "bhnd" else (q_out, k_out)

    batch, tokens, heads, dim = q4.shape
    num_rows = batch * tokens * heads
    if num_rows == 0:
        return q_out, k_out
    pairs = dim // 2
    block = _check_block_rows(block_rows if block_rows is not None else default_block_rows(pairs))
    _apply_rope_2d_kernel[(triton.cdiv(num_rows, block),)](
        q4, k4, qo4, ko4,
        tables.cos, tables.sin, tables.scale_starts, tables.scale_widths,
        scale_ids, rows, cols,
        num_rows, tokens, heads, pairs,
        *q4.stride(), *k4.stride(), *qo4.stride(), *ko4.stride(),
        *scale_ids.stride(), *rows.stride(), *cols.stride(),
        INTERLEAVED=tables.pairing == "interleaved",
        BLOCK_ROWS=block,
        BLOCK_PAIRS=triton.next_power_of_2(pairs),
        num_warps=num_warps,
    )  # fmt: skip
    return q_out, k_out
