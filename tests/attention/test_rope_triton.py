"""Triton RoPE kernels against the torch reference (interpreted on CPU, native on CUDA)."""

from dataclasses import dataclass

import pytest
import torch

from moss_attention import InfinityRope2D, apply_rope_2d, precompute_rope_tables

SQUARE_1M_SCHEDULE = [(s, s) for s in (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)]
WIDE_1M_TAIL = [(1, 2), (3, 6), (15, 30), (45, 90)]  # ends like the 0.5 aspect-ratio template (ref 45 x 90)

# bf16: the interpreter truncates fp32 -> bf16 on store where torch rounds to nearest, so allow 1 ulp.
DTYPES = [
    pytest.param(torch.float32, 1e-6, 1e-5, id="fp32"),
    pytest.param(torch.float16, 1e-3, 1e-3, id="fp16"),
    pytest.param(torch.bfloat16, 2e-2, 2e-2, id="bf16"),
]


@pytest.mark.parametrize(
    ("dim", "schedule", "ref_grid", "block_rows"),
    [
        (128, SQUARE_1M_SCHEDULE, (64, 64), None),
        (16, SQUARE_1M_SCHEDULE[:7], (64, 64), 32),  # several programs, scales straddling program edges
        (48, WIDE_1M_TAIL, (45, 90), 64),  # non-power-of-two dim, non-square grids
        (64, [(1, 1)], (64, 64), 1),  # a single 1x1 scale
        (96, [(5, 7), (1, 1), (3, 2)], (16, 16), 8),  # non-monotone schedule, 1x1 in the middle
        (16, [(2, 2), (4, 4)], (5, 7), 4),  # exact .5 positions (2.5 -> 2, 3.5 -> 4): round half to even
    ],
)
def test_precompute_tables_match_reference(rope_ops, device, dim, schedule, ref_grid, block_rows):
    scheme = InfinityRope2D(dim, ref_grid=ref_grid)
    expected = precompute_rope_tables(scheme, schedule, device)
    got = rope_ops.precompute_rope_tables_triton(scheme, schedule, device, block_rows=block_rows)
    assert got.grids == expected.grids and got.offsets == expected.offsets
    assert got.cos.shape == expected.cos.shape and got.cos.dtype == torch.float32
    # Same float32 angles; cos/sin of the interpreter (numpy) or libdevice vs torch differ by an ulp at most.
    torch.testing.assert_close(got.cos, expected.cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.sin, expected.sin, rtol=0, atol=1e-6)


def _inputs(batch, tokens, heads, dim, dtype, device, grids, packed_positions):
    scale_ids, rows, cols = packed_positions(grids, tokens, batch, device=device)
    q = torch.randn(batch, tokens, heads, dim, device=device).to(dtype)
    k = torch.randn(batch, tokens, heads, dim, device=device).to(dtype)
    return q, k, scale_ids, rows, cols


@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPES)
@pytest.mark.parametrize(
    ("batch", "tokens", "heads", "dim", "block_rows"),
    [
        (1, 1, 1, 16, 1),
        (2, 37, 3, 16, 16),  # odd N, odd H, many programs with a ragged tail
        (3, 19, 5, 48, 32),  # non-power-of-two head dim (masked pairs)
        (2, 23, 2, 64, None),
        (2, 13, 3, 128, 16),
    ],
)
def test_apply_matches_reference(
    rope_ops, device, packed_positions, dtype, atol, rtol, batch, tokens, heads, dim, block_rows
):
    grids = [(1, 1), (2, 2), (5, 7), (12, 12), (64, 64)]
    tables = precompute_rope_tables(InfinityRope2D(dim), grids, device)
    q, k, scale_ids, rows, cols = _inputs(batch, tokens, heads, dim, dtype, device, grids, packed_positions)
    expected_q, expected_k = apply_rope_2d(q, k, tables, scale_ids, rows, cols)

    # Out of place into poisoned buffers: any element the kernel fails to write stays NaN and fails.
    q_out = torch.full_like(q, float("nan"))
    k_out = torch.full_like(k, float("nan"))
    q_before, k_before = q.clone(), k.clone()
    got_q, got_k = rope_ops.apply_rope_2d_triton(
        q, k, tables, scale_ids, rows, cols, out=(q_out, k_out), block_rows=block_rows
    )
    assert got_q is q_out and got_k is k_out
    torch.testing.assert_close(got_q, expected_q, atol=atol, rtol=rtol)
    torch.testing.assert_close(got_k, expected_k, atol=atol, rtol=rtol)
    assert torch.equal(q, q_before) and torch.equal(k, k_before)  # inputs untouched

    # In place.
    ret_q, ret_k = rope_ops.apply_rope_2d_triton(
        q, k, tables, scale_ids, rows, cols, inplace=True, block_rows=block_rows
    )
    assert ret_q is q and ret_k is k
    torch.testing.assert_close(q, expected_q, atol=atol, rtol=rtol)
    torch.testing.assert_close(k, expected_k, atol=atol, rtol=rtol)


def test_apply_default_allocation_and_shared_scale_ids(rope_ops, device, packed_positions):
    grids = [(4, 4), (8, 8)]
    tables = precompute_rope_tables(InfinityRope2D(32), grids, device)
    q, k, scale_ids, rows, cols = _inputs(2, 21, 3, 32, torch.float32, device, grids, packed_positions)
    per_image_ids = scale_ids.expand(2, -1).clone()  # (B, N) form of the same ids
    expected = apply_rope_2d(q, k, tables, per_image_ids, rows, cols)
    got = rope_ops.apply_rope_2d_triton(q, k, tables, scale_ids, rows, cols)
    for g, e in zip(got, expected, strict=True):
        assert not torch.isnan(g).any()
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_apply_per_image_scale_ids(rope_ops, device):
    # Each image packs different scales at the same slot: scale_ids (B, N).
    grids = [(2, 2), (6, 6), (16, 16)]
    tables = precompute_rope_tables(InfinityRope2D(16), grids, device)
    scale_ids = torch.tensor([[0, 1, 2, 2, 1], [2, 2, 0, 1, 0]], device=device)
    rows = torch.tensor([[1, 5, 15, 0, 3], [9, 2, 1, 0, 0]], device=device)
    cols = torch.tensor([[0, 4, 7, 15, 5], [3, 11, 1, 2, 1]], device=device)
    q, k = torch.randn(2, 5, 3, 16, device=device), torch.randn(2, 5, 3, 16, device=device)
    expected = apply_rope_2d(q, k, tables, scale_ids, rows, cols)
    got = rope_ops.apply_rope_2d_triton(q, k, tables, scale_ids, rows, cols, block_rows=4)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPES)
def test_apply_strided_views_and_bhnd_layout(rope_ops, device, packed_positions, dtype, atol, rtol):
    # q and k as views into a fused qkv projection (non-contiguous), and the (B, H, N, D) layout.
    grids = [(3, 3), (6, 6), (9, 9)]
    batch, tokens, heads, dim = 2, 11, 3, 48
    tables = precompute_rope_tables(InfinityRope2D(dim), grids, device)
    scale_ids, rows, cols = packed_positions(grids, tokens, batch, device=device)
    qkv = torch.randn(batch, tokens, 3, heads, dim, device=device).to(dtype)
    q, k = qkv[:, :, 0], qkv[:, :, 1]
    expected_q, expected_k = apply_rope_2d(q, k, tables, scale_ids, rows, cols)
    got_q, got_k = rope_ops.apply_rope_2d_triton(q, k, tables, scale_ids, rows, cols, block_rows=8)
    torch.testing.assert_close(got_q, expected_q, atol=atol, rtol=rtol)
    torch.testing.assert_close(got_k, expected_k, atol=atol, rtol=rtol)

    q_bhnd, k_bhnd = q.transpose(1, 2), k.transpose(1, 2)  # strided (B, H, N, D) views
    q_out = torch.full_like(q_bhnd, float("nan"))
    k_out = torch.full_like(k_bhnd, float("nan"))
    rope_ops.apply_rope_2d_triton(
        q_bhnd, k_bhnd, tables, scale_ids, rows, cols, layout="bhnd", out=(q_out, k_out), block_rows=8
    )
    torch.testing.assert_close(q_out, expected_q.transpose(1, 2), atol=atol, rtol=rtol)
    torch.testing.assert_close(k_out, expected_k.transpose(1, 2), atol=atol, rtol=rtol)
    # In place on the strided views writes through to qkv and leaves v alone.
    v_before = qkv[:, :, 2].clone()
    rope_ops.apply_rope_2d_triton(q_bhnd, k_bhnd, tables, scale_ids, rows, cols, layout="bhnd", inplace=True)
    torch.testing.assert_close(qkv[:, :, 0], expected_q, atol=atol, rtol=rtol)
    torch.testing.assert_close(qkv[:, :, 1], expected_k, atol=atol, rtol=rtol)
    assert torch.equal(qkv[:, :, 2], v_before)


def test_triton_tables_feed_triton_apply(rope_ops, device, packed_positions):
    # The full Triton path (both kernels) against the full torch path, on the 1M square schedule.
    scheme = InfinityRope2D(64)
    tables = rope_ops.precompute_rope_tables_triton(scheme, SQUARE_1M_SCHEDULE, device)
    reference = precompute_rope_tables(scheme, SQUARE_1M_SCHEDULE, device)
    q, k, scale_ids, rows, cols = _inputs(
        2, 29, 3, 64, torch.float32, device, reference.grids, packed_positions
    )
    got = rope_ops.apply_rope_2d_triton(q, k, tables, scale_ids, rows, cols)
    expected = apply_rope_2d(q, k, reference, scale_ids, rows, cols)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_empty_token_set(rope_ops, device):
    tables = precompute_rope_tables(InfinityRope2D(16), [(2, 2)], device)
    q = torch.randn(2, 0, 3, 16, device=device)
    empty = torch.zeros(0, dtype=torch.long, device=device)
    got_q, got_k = rope_ops.apply_rope_2d_triton(q, q.clone(), tables, empty, empty, empty)
    assert got_q.shape == (2, 0, 3, 16) and got_k.shape == (2, 0, 3, 16)


@dataclass(frozen=True)
class HalfPairing(InfinityRope2D):
    """Infinity's angles with NeoX ("half") pairing: checks the kernel's second pairing layout."""

    name: str = "infinity-half-test"
    pairing: str = "half"


def test_half_pairing_matches_reference(rope_ops, device, packed_positions):
    grids = [(2, 2), (5, 7)]
    scheme = HalfPairing(48)
    reference = precompute_rope_tables(scheme, grids, device)
    tables = rope_ops.precompute_rope_tables_triton(scheme, grids, device)
    assert tables.pairing == "half"
    q, k, scale_ids, rows, cols = _inputs(2, 9, 3, 48, torch.float32, device, grids, packed_positions)
    got = rope_ops.apply_rope_2d_triton(q, k, tables, scale_ids, rows, cols, block_rows=4)
    expected = apply_rope_2d(q, k, reference, scale_ids, rows, cols)
    interleaved = apply_rope_2d(
        q, k, precompute_rope_tables(InfinityRope2D(48), grids, device), scale_ids, rows, cols
    )
    for g, e, other in zip(got, expected, interleaved, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(g, other)  # the pairing really changed the result
