"""Triton kernel for Infinity's query/key preparation in one launch: cosine normalisation, q scale, 2D RoPE.

:func:`cosine_qk_rope_triton` reads q and k once (e.g. strided views of the qkv projection), and writes them
once, rotated, wherever the caller wants them (e.g. k straight into its KV-cache slot), instead of the several
passes over memory that the torch reference :func:`moss_attention.qk.cosine_qk_rope` makes (normalise, scale,
rotate, cast, copy into the cache). It matches that reference up to the order of the norm's reduction.

As in :mod:`moss_attention.ops.rope_2d`, inputs are upcast to fp32 right after loading and cast on store; on CPU
run it with ``TRITON_INTERPRET=1`` set before this module is imported, with a large ``block_rows``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from moss_attention.ops.rope_2d import _check_block_rows, _rows_and_angles, default_block_rows
from moss_attention.rope import ROPE_DTYPES, RopeTables, prepare_rope_inputs


@triton.jit
def _load_pairs(src_ptr, base, first, second, sd, mask):
    x0 = tl.load(src_ptr + base + first[None, :] * sd, mask=mask, other=0.0).to(tl.float32)
    x1 = tl.load(src_ptr + base + second[None, :] * sd, mask=mask, other=0.0).to(tl.float32)
    return x0, x1


@triton.jit
def _normalise(x0, x1, eps):
    # Masked pairs were loaded as 0, so they add nothing to the norm. sqrt_rn and div_rn: the IEEE-rounded
    # operations torch uses (plain sqrt and / are approximate on GPUs).
    norm = tl.sqrt_rn(tl.sum(x0 * x0, axis=1) + tl.sum(x1 * x1, axis=1))
    denom = tl.maximum(norm, eps)[:, None]
    return tl.div_rn(x0, denom), tl.div_rn(x1, denom)


@triton.jit
def _rotate_store(dst_ptr, base, first, second, sd, x0, x1, cos, sin, mask):
    out_ty = dst_ptr.dtype.element_ty
    tl.store(dst_ptr + base + first[None, :] * sd, (x0 * cos - x1 * sin).to(out_ty), mask=mask)
    tl.store(dst_ptr + base + second[None, :] * sd, (x0 * sin + x1 * cos).to(out_ty), mask=mask)


@triton.jit
def _cosine_qk_rope_kernel(
    q_ptr,  # (B, N, H, D), any strides
    k_ptr,
    q_out_ptr,  # may alias q_ptr (in place): a row is read whole (its norm needs it) before it is written
    k_out_ptr,  # may alias k_ptr; or a strided KV-cache slot
    mul_ptr,  # (H,) per-head multiplier of q
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
    eps,
    q_sb, q_sn, q_sh, q_sd,
    k_sb, k_sn, k_sh, k_sd,
    qo_sb, qo_sn, qo_sh, qo_sd,
    ko_sb, ko_sn, ko_sh, ko_sd,
    mul_sh,
    sid_sb, sid_sn,
    row_sb, row_sn,
    col_sb, col_sn,
    INTERLEAVED: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_PAIRS: tl.constexpr,
):  # fmt: skip
    # The same tiling as _apply_rope_2d_kernel; the norm is over the whole head dim, so a program holds whole
    # rows: BLOCK_ROWS (token, head) rows x all pairs.
    b, n, h, p, mask, cos, sin = _rows_and_angles(
        tl.program_id(0), num_rows, N, H, num_pairs, cos_ptr, sin_ptr, starts_ptr, widths_ptr,
        sid_ptr, row_ptr, col_ptr, sid_sb, sid_sn, row_sb, row_sn, col_sb, col_sn, BLOCK_ROWS, BLOCK_PAIRS,
    )  # fmt: skip
    if INTERLEAVED:
        first, second = 2 * p, 2 * p + 1
    else:
        first, second = p, p + num_pairs

    # q then k, not both at once: half the live registers, and each output depends only on its own input.
    x0, x1 = _load_pairs(q_ptr, (b * q_sb + n * q_sn + h * q_sh)[:, None], first, second, q_sd, mask)
    x0, x1 = _normalise(x0, x1, eps)
    # Multiplied after the division, as the reference does, so the two roundings are the same.
    mul = tl.load(mul_ptr + h * mul_sh).to(tl.float32)[:, None]
    x0, x1 = x0 * mul, x1 * mul
    _rotate_store(q_out_ptr, (b * qo_sb + n * qo_sn + h * qo_sh)[:, None], first, second, qo_sd,
                  x0, x1, cos, sin, mask)  # fmt: skip

    x0, x1 = _load_pairs(k_ptr, (b * k_sb + n * k_sn + h * k_sh)[:, None], first, second, k_sd, mask)
    x0, x1 = _normalise(x0, x1, eps)
    _rotate_store(k_out_ptr, (b * ko_sb + n * ko_sn + h * ko_sh)[:, None], first, second, ko_sd,
                  x0, x1, cos, sin, mask)  # fmt: skip


def _check_outputs(
    q: torch.Tensor,
    q_out: torch.Tensor | None,
    k_out: torch.Tensor | None,
    multiplier: torch.Tensor,
    out_dtype: torch.dtype | None,
    eps: float,
) -> None:
    heads = q.shape[2]
    if not isinstance(multiplier, torch.Tensor):
        raise ValueError(f"multiplier must be a tensor, got {multiplier!r:.80}")
    if multiplier.shape != (heads,) or multiplier.dtype != torch.float32:
        raise ValueError(
            f"multiplier must be float32 of shape (H,) = ({heads},) (see cosine_multiplier), "
            f"got shape {tuple(multiplier.shape)} dtype {multiplier.dtype}"
        )
    if multiplier.device != q.device:
        raise ValueError(f"multiplier must be on q's device {q.device}, got {multiplier.device}")
    if out_dtype is not None and out_dtype not in ROPE_DTYPES:
        raise ValueError(f"out_dtype must be one of {ROPE_DTYPES}, got {out_dtype}")
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
        raise ValueError(f"eps must be a positive float, got {eps!r}")
    for name, dst in (("q_out", q_out), ("k_out", k_out)):
        if dst is None:
            continue
        if not isinstance(dst, torch.Tensor) or dst.shape != q.shape:
            got = f"shape {tuple(dst.shape)}" if isinstance(dst, torch.Tensor) else f"{dst!r:.80}"
            raise ValueError(
                f"{name} must be a tensor of q's shape (B, N, H, D) = {tuple(q.shape)}, got {got}"
            )
        if dst.dtype not in ROPE_DTYPES:
            raise ValueError(f"{name}.dtype must be one of {ROPE_DTYPES}, got {dst.dtype}")
        if dst.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {dst.device}")


def cosine_qk_rope_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    multiplier: torch.Tensor,
    tables: RopeTables,
    scale_ids: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    *,
    q_out: torch.Tensor | None = None,
    k_out: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    eps: float = 1e-12,
    check: bool = True,
    block_rows: int | None = None,
    num_warps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton: Infinity's cosine-attention q/k preparation and 2D RoPE, for q and k in one launch.

    Per (token, head) row, in float32: ``q / max(‖q‖, eps) · multiplier[h]`` and ``k / max(‖k‖, eps)`` (norm
    over the head dim), rotated by the angles of table row ``scale_starts[sid] + row · scale_widths[sid] + col``,
    cast to the output's dtype. The same as :func:`moss_attention.qk.cosine_qk_rope` on ``stack([q, k], 2)``
    with :func:`~moss_attention.qk.gather_rope_angles`, up to the norm's reduction order.

    q, k: ``(B, N, H, D)``, any strides, one dtype of fp32/fp16/bf16 (e.g. views of the qkv projection).
    multiplier: ``(H,)`` float32 (:func:`~moss_attention.qk.cosine_multiplier`). scale_ids, rows, cols:
    ``(N,)`` or ``(B, N)``; positions are trusted (no device reads; see :func:`moss_attention.apply_rope_2d`
    with ``check_bounds`` for a checked call). q_out, k_out: ``(B, N, H, D)`` destinations of any strides and
    dtypes (e.g. k's KV-cache slot ``keys[:, :, start:start + N].transpose(1, 2)``), or None for new contiguous
    tensors of ``out_dtype`` (default q's). ``q_out`` may be ``q`` and ``k_out`` may be ``k`` (in place), but
    no output may otherwise overlap an input or the other output: programs run in any order. ``check=False``
    skips the (host-only) validation, for a hot loop whose arguments were validated once. Returns
    ``(q_out, k_out)``.
    """
    if check:
        q, k, scale_ids, rows, cols = prepare_rope_inputs(
            q, k, tables, scale_ids, rows, cols, "bnhd", check_bounds=False, dtypes=ROPE_DTYPES
        )
        _check_outputs(q, q_out, k_out, multiplier, out_dtype, eps)
    batch, tokens, heads, dim = q.shape
    scale_ids, rows, cols = (x.expand(batch, tokens) for x in (scale_ids, rows, cols))
    dtype = out_dtype or q.dtype
    if q_out is None:
        q_out = torch.empty(q.shape, dtype=dtype, device=q.device)
    if k_out is None:
        k_out = torch.empty(k.shape, dtype=dtype, device=k.device)

    num_rows = batch * tokens * heads
    if num_rows == 0:
        return q_out, k_out
    pairs = dim // 2
    block = _check_block_rows(block_rows if block_rows is not None else default_block_rows(pairs))
    _cosine_qk_rope_kernel[(triton.cdiv(num_rows, block),)](
        q, k, q_out, k_out, multiplier,
        tables.cos, tables.sin, tables.scale_starts, tables.scale_widths,
        scale_ids, rows, cols,
        num_rows, tokens, heads, pairs, float(eps),
        *q.stride(), *k.stride(), *q_out.stride(), *k_out.stride(),
        multiplier.stride(0),
        *scale_ids.stride(), *rows.stride(), *cols.stride(),
        INTERLEAVED=tables.pairing == "interleaved",
        BLOCK_ROWS=block,
        BLOCK_PAIRS=triton.next_power_of_2(pairs),
        num_warps=num_warps,
    )  # fmt: skip
    return q_out, k_out
