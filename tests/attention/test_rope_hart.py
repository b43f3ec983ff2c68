"""HART's RoPE (moss_attention.hart_rope): the torch reference against naive formulations of the official math,
its frequency layout and pairing, and the Triton kernels (moss_attention.ops.rope_half) against the reference.

The reference was also checked bit for bit against the official ``get_position_ids``,
``LlamaRotaryEmbedding{,1D}`` and ``apply_rotary_pos_emb`` (run on CPU outside the repository) for every HART
scale, both CFG halves, head dims 16/64/128 and fp32/fp16/bf16; that code is not vendored, so here the naive
formulations below stand in for it.

Triton tolerances: ``apply_rope_rotate_half(impl="triton")`` reads the same cos/sin and does the same roundings,
so it is compared bit for bit. The ``*_rope_qk_triton`` kernels compute cos/sin themselves (bit-identical angles,
but Triton's cos/sin, within about 1 float32 ulp of torch's); the difference per element is bounded by
``2·eps(dtype)·(|x_d| + |x_partner|)``: a cos/sin ulp times |x| for each product, plus one rounding of the narrower
dtype when the float32 values straddle one of its rounding boundaries.
"""

import struct

import pytest
import torch

from moss_attention import (
    apply_rope_rotate_half,
    hart_rope_cos_sin,
    hart_rope_qk,
    hart_scale_positions,
    llama_rope_cos_sin,
    llama_rope_qk,
    rotate_half,
)

from .conftest import TRITON_SKIP_REASON

HART_PATCH_NUMS = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
    pytest.param(torch.bfloat16, id="bf16"),
]


def f32(value: float) -> float:
    """Round a Python float to the nearest float32."""
    return struct.unpack("f", struct.pack("f", value))[0]


def assert_within(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    """``|actual − expected| <= atol`` everywhere (torch.testing's first call costs ~2 s of imports)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    worst = float((actual.double() - expected.double()).abs().max())
    assert worst <= atol, f"max |difference| {worst:.3g} > {atol:.3g}"


def hart_context_positions(n_valid: list[int], length: int) -> torch.Tensor:
    """HART's ``context_position_ids`` for a CFG batch: ``cumsum(mask) − 1`` per prompt, then zeros."""
    mask = torch.arange(length)[None, :] < torch.tensor(n_valid)[:, None]
    cond = torch.cumsum(mask, dim=1) - 1
    return torch.cat((cond, torch.zeros_like(cond)))


def naive_hart_angles(i: int, j: int, pn: int, offset: int, head_dim: int, base: float) -> list[float]:
    """Official math for one token, one head dim at a time: position (i/pn·64 + offset, j/pn·64 + offset) in
    float32; head dim d < D/2 uses the row, the rest the column; frequency index d mod D/4,
    f = 1/base^(4·idx/D)."""
    quarter = head_dim // 4
    row = f32(f32(f32(i / pn) * 64) + offset)
    col = f32(f32(f32(j / pn) * 64) + offset)
    angles = []
    for d in range(head_dim):
        freq = f32(1.0 / f32(base ** f32(4 * (d % quarter) / head_dim)))
        angles.append(f32((row if d < 2 * quarter else col) * freq))
    return angles


@pytest.mark.parametrize("head_dim", [64, 16])
def test_hart_cos_sin_equal_naive_loop(head_dim):
    base = 10000.0
    context = hart_context_positions([37, 300], 300)  # conditional halves, then the unconditional zeros
    offset = context[:, -1]
    assert offset.tolist() == [36, 299, 0, 0]
    # A few tokens of every scale: corners, the centre, a random one.
    gen = torch.Generator().manual_seed(1)
    tokens = []
    for pn in HART_PATCH_NUMS:
        picks = {(0, 0), (pn - 1, pn - 1), (0, pn - 1), (pn // 2, pn // 3)}
        picks.add(tuple(torch.randint(0, pn, (2,), generator=gen).tolist()))
        tokens += [(pn, i, j) for i, j in sorted(picks)]
    rows = torch.cat([hart_scale_positions(pn)[0][i * pn + j : i * pn + j + 1] for pn, i, j in tokens])
    cols = torch.cat([hart_scale_positions(pn)[1][i * pn + j : i * pn + j + 1] for pn, i, j in tokens])
    cos, sin = hart_rope_cos_sin(rows, cols, offset, head_dim, base)
    assert cos.shape == sin.shape == (4, len(tokens), head_dim) and cos.dtype == torch.float32

    angles = torch.tensor(
        [[naive_hart_angles(i, j, pn, int(off), head_dim, base) for pn, i, j in tokens] for off in offset],
        dtype=torch.float64,
    )
    # The float32 angles agree; cos/sin of float32 vs float64 differ by at most ~1 float32 ulp (angles < 400).
    assert_within(cos.double(), angles.cos(), 2e-7)
    assert_within(sin.double(), angles.sin(), 2e-7)


@pytest.mark.parametrize("pn", HART_PATCH_NUMS)
def test_scale_positions_follow_official_grid(pn):
    rows, cols = hart_scale_positions(pn)
    # get_position_ids: meshgrid of int aranges ("ij"), divided by pn, times the largest pn (64), row-major.
    grid = torch.stack(torch.meshgrid(torch.arange(pn), torch.arange(pn), indexing="ij"), dim=-1)
    expected = (grid / pn * 64).reshape(-1, 2)
    assert rows.dtype == cols.dtype == torch.float32
    assert torch.equal(torch.stack((rows, cols), dim=-1), expected)
    assert rows[0] == 0 and cols[pn - 1] == f32((pn - 1) / pn) * 64  # row-major: the first row varies j
    r2, c2 = hart_scale_positions((2, pn))
    assert torch.equal(r2, torch.tensor([0.0, 32.0]).repeat_interleave(pn)) and torch.equal(
        c2[:pn], cols[:pn]
    )


def test_frequency_layout_is_row_row_col_col():
    head_dim, quarter = 64, 16
    rows = torch.tensor([0.0, 5.0, 7.5])
    cols = torch.tensor([3.0, 0.0, 7.5])
    cos, sin = hart_rope_cos_sin(rows, cols, torch.tensor([0.0, 2.0]), head_dim)
    freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 4).float() / head_dim))
    assert torch.equal(cos[..., :quarter], cos[..., quarter : 2 * quarter])  # row·f, row·f
    assert torch.equal(cos[..., 2 * quarter : 3 * quarter], cos[..., 3 * quarter :])  # col·f, col·f
    # Token 0 of image 0 sits at row 0 (all row angles 0), token 1 at column 0.
    assert torch.equal(cos[0, 0, : 2 * quarter], torch.ones(2 * quarter))
    assert torch.equal(sin[0, 1, 2 * quarter :], torch.zeros(2 * quarter))
    assert_within(cos[0, 0, 2 * quarter : 3 * quarter], (3.0 * freqs).cos(), 1e-7)
    # The offset shifts both axes: image 1, token 1 = (5 + 2, 0 + 2).
    assert_within(sin[1, 1, :quarter], (7.0 * freqs).sin(), 1e-7)
    assert_within(sin[1, 1, 2 * quarter : 3 * quarter], (2.0 * freqs).sin(), 1e-7)


def test_rotate_half_pairs_d_with_d_plus_half():
    head_dim = 16
    rows, cols = torch.tensor([3.0]), torch.tensor([11.0])
    cos, sin = hart_rope_cos_sin(rows, cols, torch.tensor([4.0]), head_dim)
    for d in range(head_dim):
        basis = torch.zeros(1, 1, 1, head_dim)
        basis[..., d] = 1.0
        out = apply_rope_rotate_half(basis, cos, sin)[0, 0, 0]
        partner = (d + head_dim // 2) % head_dim
        # e_d only reaches dims d and d ± D/2: cos at d, and ±sin of the partner's angle at the partner.
        assert set(out.nonzero().flatten().tolist()) <= {d, partner}
        assert out[d] == cos[0, 0, d]
        assert out[partner] == (sin[0, 0, partner] if d < head_dim // 2 else -sin[0, 0, partner])
    # Dim 0 pairs a row angle with dim D/2's column angle: not a rotation unless row == col.
    assert cos[0, 0, 0] != cos[0, 0, head_dim // 2]
    assert torch.equal(rotate_half(torch.arange(4.0)), torch.tensor([-2.0, -3.0, 0.0, 1.0]))


@pytest.mark.parametrize("head_dim", [64, 16])
def test_llama_cos_sin_equal_naive_formula(head_dim):
    position_ids = hart_context_positions([5, 9], 12)  # (4, 12) int64, both CFG halves
    cos, sin = llama_rope_cos_sin(position_ids, head_dim)
    assert cos.shape == (4, 12, head_dim) and cos.dtype == torch.float32
    half = head_dim // 2
    angles = torch.tensor(
        [
            [
                [f32(p * f32(1.0 / f32(10000.0 ** f32(2 * (d % half) / head_dim)))) for d in range(head_dim)]
                for p in row
            ]
            for row in position_ids.tolist()
        ],
        dtype=torch.float64,
    )
    assert_within(cos.double(), angles.cos(), 2e-7)
    assert_within(sin.double(), angles.sin(), 2e-7)
    assert torch.equal(llama_rope_cos_sin(position_ids.float(), head_dim)[0], cos)  # int or float ids


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_rounds_like_official(dtype):
    # cos/sin are cast to x's dtype first, then x·cos and rotate_half(x)·sin and the sum round to x's dtype.
    x = torch.randn(2, 5, 3, 16).to(dtype)
    cos, sin = hart_rope_cos_sin(*hart_scale_positions((1, 5)), torch.tensor([8.0, 0.0]), 16)
    c, s = cos.to(dtype)[:, :, None], sin.to(dtype)[:, :, None]
    expected = x * c + torch.cat((-x[..., 8:], x[..., :8]), dim=-1) * s
    out = apply_rope_rotate_half(x, cos, sin)
    assert out.dtype == dtype and torch.equal(out, expected)
    if dtype == torch.float32:  # q upcast to fp32 (attn_l2_norm) with cos/sin in v's fp16
        out16 = apply_rope_rotate_half(x, cos, sin, cos_dtype=torch.float16)
        c16, s16 = cos.half().float()[:, :, None], sin.half().float()[:, :, None]
        assert torch.equal(out16, x * c16 + rotate_half(x) * s16)


def test_bad_input_names_the_argument():
    x = torch.randn(1, 4, 2, 8)
    cos, sin = llama_rope_cos_sin(torch.arange(4)[None], 8)
    with pytest.raises(ValueError, match="head_dim must be a positive multiple of 4"):
        hart_rope_cos_sin(torch.zeros(3), torch.zeros(3), torch.zeros(1), 18)
    with pytest.raises(ValueError, match="pn must be a positive int"):
        hart_scale_positions(0)
    with pytest.raises(ValueError, match=r"cos must have shape \(B, N, D\)"):
        apply_rope_rotate_half(x, cos[:, :3], sin[:, :3])
    with pytest.raises(ValueError, match="impl must be one of"):
        apply_rope_rotate_half(x, cos, sin, impl="cuda")
    with pytest.raises(ValueError, match=r"offset \(B,\) = \(1,\)"):
        hart_rope_qk(x, x, torch.zeros(4), torch.zeros(4), torch.zeros(2))


# ---- Triton (interpreted on CPU) ---------------------------------------------------------------------------


@pytest.fixture
def rope_half_ops():
    if TRITON_SKIP_REASON:
        pytest.skip(TRITON_SKIP_REASON)
    from moss_attention.ops import rope_half

    return rope_half


def random_hart_tokens(batch: int, tokens: int, device: torch.device):
    """Tokens of several HART scales in random order, with per-image offsets (conditional, then zeros)."""
    positions = [hart_scale_positions(pn) for pn in (1, 5, 12, 64)]
    rows = torch.cat([r for r, _ in positions])
    cols = torch.cat([c for _, c in positions])
    pick = torch.randperm(rows.numel())[:tokens]
    offset = torch.cat(
        (torch.randint(0, 300, ((batch + 1) // 2,)), torch.zeros(batch // 2, dtype=torch.long))
    )
    return rows[pick].to(device), cols[pick].to(device), offset.float().to(device)


def within_bound(ref: torch.Tensor, got: torch.Tensor, x: torch.Tensor) -> bool:
    eps = torch.finfo(x.dtype).eps
    bound = 2 * eps * (x.float().abs() + rotate_half(x.float()).abs())
    return bool(((ref.float() - got.float()).abs() <= bound).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 16])
def test_triton_tables_bit_identical(rope_half_ops, device, dtype, head_dim):
    batch, tokens, heads = 3, 37, 3  # odd B; N·B = 111 tokens, not a multiple of any block
    rows, cols, offset = random_hart_tokens(batch, tokens, device)
    cos, sin = hart_rope_cos_sin(rows, cols, offset, head_dim)
    qkv = torch.randn(batch, tokens, 3, heads, head_dim, device=device).to(dtype)
    x = qkv[:, :, 1]  # strided, as a view of the qkv projection
    expected = apply_rope_rotate_half(x, cos, sin)
    assert torch.equal(apply_rope_rotate_half(x, cos, sin, impl="triton"), expected)
    # Several programs with a ragged tail, heads split across programs, a (1, N, D) table broadcast over B.
    got = rope_half_ops.apply_rope_rotate_half_triton(x, cos, sin, block_tokens=16, heads_per_program=2)
    assert torch.equal(got, expected)
    assert torch.equal(
        rope_half_ops.apply_rope_rotate_half_triton(x, cos[:1], sin[:1]),
        apply_rope_rotate_half(x, cos[:1], sin[:1]),
    )
    if dtype == torch.float32:
        assert torch.equal(
            apply_rope_rotate_half(x, cos, sin, impl="triton", cos_dtype=torch.bfloat16),
            apply_rope_rotate_half(x, cos, sin, cos_dtype=torch.bfloat16),
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 16])
def test_triton_hart_qk_on_the_fly(rope_half_ops, device, dtype, head_dim):
    batch, tokens, heads = 3, 37, 2
    rows, cols, offset = random_hart_tokens(batch, tokens, device)
    q = torch.randn(batch, tokens, heads, head_dim, device=device).to(dtype)
    k = torch.randn(batch, heads, tokens, head_dim, device=device).to(dtype).transpose(1, 2)  # other strides
    q_ref, k_ref = hart_rope_qk(q, k, rows, cols, offset)
    for kwargs in ({}, {"block_tokens": 32, "heads_per_program": 1}):
        q_got, k_got = rope_half_ops.hart_rope_qk_triton(q, k, rows, cols, offset, **kwargs)
        assert q_got.dtype == k_got.dtype == dtype
        assert within_bound(q_ref, q_got, q) and within_bound(k_ref, k_got, k)
    q_imp, k_imp = hart_rope_qk(q, k, rows, cols, offset, impl="triton")
    assert torch.equal(q_imp, q_got) and torch.equal(k_imp, k_got)


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_llama_qk_on_the_fly(rope_half_ops, device, dtype):
    batch, tokens, heads, head_dim = 3, 21, 2, 16
    position_ids = hart_context_positions([7, 21], tokens)[:batch].to(device)
    q, k = torch.randn(2, batch, tokens, heads, head_dim, device=device).to(dtype)
    q_ref, k_ref = llama_rope_qk(q, k, position_ids)
    q_got, k_got = llama_rope_qk(q, k, position_ids, impl="triton")
    assert within_bound(q_ref, q_got, q) and within_bound(k_ref, k_got, k)
    # Shared (N,) positions broadcast over the batch.
    q1, _ = rope_half_ops.llama_rope_qk_triton(q, k, position_ids[1], block_tokens=8)
    assert within_bound(llama_rope_qk(q, k, position_ids[1])[0], q1, q)


def test_triton_on_the_fly_angles_are_the_references(rope_half_ops, device):
    # With x = e_d (fp32) the kernel writes its own cos/sin out exactly (x·cos with x = 1, plus 0): they must
    # agree with torch's within ~1 float32 ulp, which checks the angles themselves, not just the products.
    head_dim, tokens = 16, 9
    rows, cols, offset = random_hart_tokens(2, tokens, device)
    basis = torch.eye(head_dim, device=device)[None, None].expand(2, tokens, head_dim, head_dim)
    q_got, _ = rope_half_ops.hart_rope_qk_triton(basis, basis, rows, cols, offset)
    cos, sin = hart_rope_cos_sin(rows, cols, offset, head_dim)
    diag = torch.diagonal(q_got, dim1=2, dim2=3)  # out[h=d][d] = cos_d
    assert_within(diag, cos, 3e-7)
    half = head_dim // 2
    assert_within(q_got[:, :, :half, half:].diagonal(dim1=2, dim2=3), sin[..., half:], 3e-7)
