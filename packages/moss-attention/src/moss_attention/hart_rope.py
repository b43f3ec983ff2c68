"""HART's rotary position embedding (hart_var_fastvar.md §A.3): torch reference.

HART rotates q and k of two kinds of tokens, both with the HF-Llama ``rotate_half`` convention (head dim ``d``
pairs with ``d + D/2``) and ``out = x · cos + rotate_half(x) · sin``:

* **context (text) tokens** — standard 1D RoPE (:func:`llama_rope_cos_sin`) over
  ``context_position_ids = cumsum(mask) − 1`` (zeros for the unconditional CFG half): ``F = D/2`` frequencies
  ``base^(−2k/D)``, cos/sin laid out ``[pos·f, pos·f]``;
* **image tokens** — HART's 2D variant (:func:`hart_rope_cos_sin`): token ``(i, j)`` of a ``pn × pn`` scale sits
  at ``(row, col) = (i/pn·64, j/pn·64) + offset`` (:func:`hart_scale_positions`; fractional, in units of the
  64-grid; ``offset`` is the image's last context position: ``n_valid − 1`` for the conditional half, 0 for the
  unconditional one, added to both axes). ``F = D/4`` frequencies ``f_j = base^(−4j/D)``, cos/sin laid out
  ``[row·f, row·f, col·f, col·f]``. Because ``rotate_half`` pairs ``d`` with ``d + D/2``, the two members of a
  pair get *different* angles (a row angle and a column angle): not a textbook 2D RoPE, but what the checkpoint
  was trained with.

Precision, as the official code computes it (``LlamaRotaryEmbedding{,1D}.forward``, ``apply_rotary_pos_emb``):
positions and angles in float32 (``row + offset``, then ``pos · f``), ``cos``/``sin`` in float32, then cast to
the dtype of the activations (``v``'s: fp16 under HART's autocast) *before* the product, which is computed in
that dtype, one rounding per operation (``x·cos``, ``rotate_half(x)·sin``, their sum). The cos/sin builders here
return float32; :func:`apply_rope_rotate_half` does the cast and the rounded product.

These functions are what a ``RopeScheme`` (:mod:`moss_attention.schemes`) cannot express without contortion: the
pair members' angles differ, and the positions carry a per-image offset. The Triton kernels are in
:mod:`moss_attention.ops.rope_half`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

HART_GRID = 64  # HART's positions are in units of its largest (64 x 64) scale
ROTATE_HALF_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
IMPLS = ("torch", "triton")


def _check_head_dim(head_dim: int, multiple: int, what: str) -> None:
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0 or head_dim % multiple:
        raise ValueError(f"head_dim must be a positive multiple of {multiple} for {what}, got {head_dim!r}")


def _check_base(base: float) -> None:
    if isinstance(base, bool) or not isinstance(base, int | float) or not base > 1:
        raise ValueError(f"base must be a number > 1, got {base!r}")


def _positions(name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.ndim != ndim or t.dtype == torch.bool or t.dtype.is_complex:
        shape = "(N,)" if ndim == 1 else ("(B,)" if name == "offset" else "(B, N)")
        raise ValueError(f"{name} must be a real {ndim}-D tensor {shape}, got {t!r:.80}")
    # float32 like the official code: int positions are converted exactly (< 2^24), float64 rounded once.
    return t.to(torch.float32)


def inverse_frequencies(head_dim: int, stride: int, base: float = 10000.0) -> torch.Tensor:
    """``1 / base^(arange(0, head_dim, stride) / head_dim)`` in float32, with the official op order (int arange
    to float32, divide, float32 pow, reciprocal), so the frequencies agree bit for bit. ``stride`` 2 gives the
    1D Llama frequencies (``D/2`` of them), 4 HART's 2D ones (``D/4``)."""
    exponent = torch.arange(0, head_dim, stride, dtype=torch.int64).float() / head_dim
    return 1.0 / (base**exponent)


def hart_scale_positions(pn: int | Sequence[int], grid: int = HART_GRID) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the tokens of one scale on HART's reference grid, row-major, without the offset.

    ``pn``: the scale's side (HART's scales are square) or an ``(h, w)`` pair. Returns float32 ``rows, cols``
    of shape ``(h·w,)``: token ``(i, j)`` (flat index ``i·w + j``) is at ``(i/h·grid, j/w·grid)``, computed as
    the official ``get_position_ids`` does (float32 ``i / pn``, then ``· grid``; fractional in general).
    """
    if isinstance(pn, bool) or not isinstance(pn, int | tuple | list):
        raise ValueError(f"pn must be a positive int or an (h, w) pair of positive ints, got {pn!r}")
    h, w = (pn, pn) if isinstance(pn, int) else tuple(pn) if len(pn) == 2 else (0, 0)
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in (h, w)):
        raise ValueError(f"pn must be a positive int or an (h, w) pair of positive ints, got {pn!r}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid <= 0:
        raise ValueError(f"grid must be a positive int (HART's is {HART_GRID}), got {grid!r}")
    rows = torch.arange(h, dtype=torch.float32) / h * grid
    cols = torch.arange(w, dtype=torch.float32) / w * grid
    return rows[:, None].expand(h, w).reshape(-1), cols[None, :].expand(h, w).reshape(-1)


def hart_rope_cos_sin(
    rows: torch.Tensor, cols: torch.Tensor, offset: torch.Tensor, head_dim: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """HART's 2D RoPE angles of image tokens: float32 ``cos, sin`` of shape ``(B, N, head_dim)``.

    rows, cols: ``(N,)`` positions in 64-grid units (``i/pn·64``, :func:`hart_scale_positions`; tokens of
    several scales may be concatenated). offset: ``(B,)`` per-image shift added to both axes (the last context
    position of that CFG row). Per image ``b`` and token ``n``, with ``F = head_dim/4``, ``f_j = base^(−4j/D)``,
    ``r = rows[n] + offset[b]`` and ``c = cols[n] + offset[b]`` (float32 adds), the angles are
    ``[r·f_0..r·f_{F−1}, r·f_0.., c·f_0.., c·f_0..]``.
    """
    _check_head_dim(head_dim, 4, "HART's 2D RoPE (D/4 frequencies per axis)")
    _check_base(base)
    rows, cols = _positions("rows", rows, 1), _positions("cols", cols, 1)
    offset = _positions("offset", offset, 1)
    if rows.shape != cols.shape:
        raise ValueError(
            f"rows and cols must have the same shape (N,), got {tuple(rows.shape)} and {tuple(cols.shape)}"
        )
    if not (rows.device == cols.device == offset.device):
        raise ValueError(
            f"rows, cols and offset must be on one device, got {rows.device}, {cols.device}, {offset.device}"
        )
    inv_freq = inverse_frequencies(head_dim, 4, base).to(rows.device)
    row_angles = (rows[None, :] + offset[:, None])[..., None] * inv_freq  # (B, N, F)
    col_angles = (cols[None, :] + offset[:, None])[..., None] * inv_freq
    angles = torch.cat((row_angles, row_angles, col_angles, col_angles), dim=-1)
    return angles.cos(), angles.sin()


def llama_rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard 1D HF-Llama RoPE angles (HART's context tokens): float32 ``cos, sin`` ``(B, N, head_dim)``.

    position_ids: ``(B, N)`` int or float (HART: ``cumsum(mask) − 1``, zeros for the unconditional half).
    Angles ``[p·f, p·f]`` with ``f_k = base^(−2k/D)``, ``k < D/2``.
    """
    _check_head_dim(head_dim, 2, "1D RoPE")
    _check_base(base)
    pos = _positions("position_ids", position_ids, 2)
    inv_freq = inverse_frequencies(head_dim, 2, base).to(pos.device)
    freqs = pos[..., None] * inv_freq  # (B, N, D/2)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """HF-Llama ``rotate_half``: ``[−x[D/2:], x[:D/2]]`` over the last dim (dim ``d`` pairs with ``d + D/2``)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def check_rotate_half_inputs(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cos_dtype: torch.dtype | None
) -> torch.dtype:
    """Validate :func:`apply_rope_rotate_half`'s arguments; return the dtype cos/sin are rounded to."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a 4-D tensor (B, N, H, D), got {x!r:.80}")
    if x.dtype not in ROTATE_HALF_DTYPES:
        raise ValueError(f"x.dtype must be one of {ROTATE_HALF_DTYPES}, got {x.dtype}")
    batch, tokens, _, dim = x.shape
    if dim % 2:
        raise ValueError(f"x's head dim D must be even for rotate_half, got {dim}")
    for name, t in (("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a floating-point tensor, got {t!r:.80}")
        if t.ndim != 3 or t.shape[0] not in (1, batch) or tuple(t.shape[1:]) != (tokens, dim):
            raise ValueError(
                f"{name} must have shape (B, N, D) = {(batch, tokens, dim)} or (1, N, D), got {tuple(t.shape)}"
            )
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
    if cos.shape != sin.shape:
        raise ValueError(
            f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    if cos_dtype is not None and cos_dtype not in ROTATE_HALF_DTYPES:
        raise ValueError(f"cos_dtype must be None or one of {ROTATE_HALF_DTYPES}, got {cos_dtype!r}")
    return cos_dtype or x.dtype


def check_qk(q: torch.Tensor, k: torch.Tensor, cos_dtype: torch.dtype | None, head_multiple: int) -> None:
    """Validate q and k for the ``*_rope_qk`` functions: ``(B, N, H, D)``, same shape, dtype and device."""
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise ValueError(f"{name} must be a 4-D tensor (B, N, H, D), got {t!r:.80}")
        if t.dtype not in ROTATE_HALF_DTYPES:
            raise ValueError(f"{name}.dtype must be one of {ROTATE_HALF_DTYPES}, got {t.dtype}")
    if q.shape != k.shape or q.dtype != k.dtype or q.device != k.device:
        raise ValueError(
            f"q and k must share shape, dtype and device, got q {tuple(q.shape)} {q.dtype} {q.device} "
            f"and k {tuple(k.shape)} {k.dtype} {k.device}"
        )
    _check_head_dim(q.shape[3], head_multiple, f"this RoPE (q's head dim D = {q.shape[3]})")
    if cos_dtype is not None and cos_dtype not in ROTATE_HALF_DTYPES:
        raise ValueError(f"cos_dtype must be None or one of {ROTATE_HALF_DTYPES}, got {cos_dtype!r}")


def check_hart_positions(
    q: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, offset: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate image-token positions against q ``(B, N, H, D)``; return them as float32."""
    batch, tokens = q.shape[:2]
    rows, cols = _positions("rows", rows, 1), _positions("cols", cols, 1)
    offset = _positions("offset", offset, 1)
    if rows.shape != (tokens,) or cols.shape != (tokens,) or offset.shape != (batch,):
        raise ValueError(
            f"rows, cols must have shape (N,) = ({tokens},) and offset (B,) = ({batch},), got "
            f"{tuple(rows.shape)}, {tuple(cols.shape)} and {tuple(offset.shape)}"
        )
    for name, t in (("rows", rows), ("cols", cols), ("offset", offset)):
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
    return rows, cols, offset


def apply_rope_rotate_half(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    impl: str = "torch",
    cos_dtype: torch.dtype | None = None,
    block_tokens: int | None = None,
) -> torch.Tensor:
    """``x · cos + rotate_half(x) · sin`` as HART's ``apply_rotary_pos_emb`` computes it, in x's dtype.

    x: ``(B, N, H, D)`` (batch, tokens, heads, head dim; any strides), fp32/fp16/bf16. cos, sin: ``(B, N, D)``
    or ``(1, N, D)``, broadcast over heads (:func:`hart_rope_cos_sin`, :func:`llama_rope_cos_sin`).
    cos/sin are first rounded to ``cos_dtype`` (default x's dtype — the official code casts them to ``v``'s
    dtype, which is q's unless q was upcast, e.g. by ``attn_l2_norm``: then pass the dtype of v), then each of
    the two products and their sum is rounded to x's dtype, as eager PyTorch does. ``impl="triton"`` runs
    the Triton kernel (:func:`moss_attention.ops.rope_half.apply_rope_rotate_half_triton`, CUDA or
    ``TRITON_INTERPRET=1`` on CPU), bit-identical to ``"torch"``; ``block_tokens`` tunes it. Returns a new tensor.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    round_to = check_rotate_half_inputs(x, cos, sin, cos_dtype)
    if impl == "triton":
        from moss_attention.ops.rope_half import apply_rope_rotate_half_triton

        return apply_rope_rotate_half_triton(
            x, cos, sin, cos_dtype=cos_dtype, block_tokens=block_tokens, check=False
        )
    if block_tokens is not None:
        raise ValueError(
            f"block_tokens applies only to impl='triton', got {block_tokens!r} with impl='torch'"
        )
    cos = cos.to(round_to).to(x.dtype)[:, :, None, :]
    sin = sin.to(round_to).to(x.dtype)[:, :, None, :]
    return x * cos + rotate_half(x) * sin


def _check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def hart_rope_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    offset: torch.Tensor,
    *,
    base: float = 10000.0,
    cos_dtype: torch.dtype | None = None,
    impl: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """HART's 2D RoPE of image tokens applied to q and k: ``(q_rot, k_rot)``, each ``(B, N, H, D)``.

    rows, cols ``(N,)``, offset ``(B,)``: as :func:`hart_rope_cos_sin`. ``impl="torch"``: that function's tables
    and :func:`apply_rope_rotate_half` (the reference); ``impl="triton"``: one launch for q and k with the
    angles computed on the fly (:func:`moss_attention.ops.rope_half.hart_rope_qk_triton`, whose docstring
    states its tolerance).
    """
    _check_impl(impl)
    if impl == "triton":
        from moss_attention.ops.rope_half import hart_rope_qk_triton

        return hart_rope_qk_triton(q, k, rows, cols, offset, base=base, cos_dtype=cos_dtype)
    check_qk(q, k, cos_dtype, 4)
    rows, cols, offset = check_hart_positions(q, rows, cols, offset)
    cos, sin = hart_rope_cos_sin(rows, cols, offset, q.shape[3], base)
    return (
        apply_rope_rotate_half(q, cos, sin, cos_dtype=cos_dtype),
        apply_rope_rotate_half(k, cos, sin, cos_dtype=cos_dtype),
    )


def llama_rope_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    base: float = 10000.0,
    cos_dtype: torch.dtype | None = None,
    impl: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard 1D Llama RoPE (HART's context tokens) applied to q and k: ``(q_rot, k_rot)``, ``(B, N, H, D)``.

    position_ids ``(B, N)`` or ``(N,)``. ``impl`` as in :func:`hart_rope_qk`
    (:func:`moss_attention.ops.rope_half.llama_rope_qk_triton`).
    """
    _check_impl(impl)
    if impl == "triton":
        from moss_attention.ops.rope_half import llama_rope_qk_triton

        return llama_rope_qk_triton(q, k, position_ids, base=base, cos_dtype=cos_dtype)
    check_qk(q, k, cos_dtype, 2)
    if isinstance(position_ids, torch.Tensor) and position_ids.ndim == 1:
        position_ids = position_ids[None, :]
    cos, sin = llama_rope_cos_sin(position_ids, q.shape[3], base)
    return (
        apply_rope_rotate_half(q, cos, sin, cos_dtype=cos_dtype),
        apply_rope_rotate_half(k, cos, sin, cos_dtype=cos_dtype),
    )
