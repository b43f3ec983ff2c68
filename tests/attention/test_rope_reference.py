"""The torch reference for mixed-scale 2D RoPE against hand-written per-token formulas and Infinity's values."""

import math
from dataclasses import dataclass
from fractions import Fraction

import pytest
import torch

from moss_attention import (
    InfinityRope2D,
    RopeScheme,
    apply_rope_2d,
    precompute_rope_tables,
    rope_scheme,
    scale_positions,
)

SQUARE_1M = [1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64]  # infinity.md §2
SQUARE_1M_SCHEDULE = [(s, s) for s in SQUARE_1M]


def naive_position(index: int, size: int, ref: int) -> int:
    """Exact rational position, rounded half to even (Python's round on a Fraction)."""
    return round(Fraction(index * ref, size))


def naive_rotate_token(x, row, col, base=10000.0):
    """Infinity's formula for one token's head vector, in float64 with Python math."""
    dim = len(x)
    out = [0.0] * dim
    quarter = dim // 4
    for m in range(dim // 2):
        freq = base ** (-2 * (m % quarter) / (dim / 2))
        angle = (row if m < quarter else col) * freq
        c, s = math.cos(angle), math.sin(angle)
        out[2 * m] = x[2 * m] * c - x[2 * m + 1] * s
        out[2 * m + 1] = x[2 * m] * s + x[2 * m + 1] * c
    return out


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (2, [0, 32]),
        (4, [0, 16, 32, 48]),
        (6, [0, 11, 21, 32, 43, 53]),
        (12, [0, 5, 11, 16, 21, 27, 32, 37, 43, 48, 53, 59]),
    ],
)
def test_infinity_positions_match_official_values(size, expected):
    # Values listed in infinity.md §3, verified there against the official cache.
    rows, cols = scale_positions(InfinityRope2D(128), (size, size))
    assert rows.view(size, size)[:, 0].tolist() == expected
    assert cols.view(size, size)[0, :].tolist() == expected


@pytest.mark.parametrize("grid", [*SQUARE_1M_SCHEDULE, (45, 90), (54, 72), (5, 7)])
@pytest.mark.parametrize("ref_grid", [(64, 64), (45, 90), (72, 54)])
def test_positions_equal_exact_rational_rounding(grid, ref_grid):
    rows, cols = scale_positions(InfinityRope2D(16, ref_grid=ref_grid), grid)
    h, w = grid
    expected_rows = [naive_position(i, h, ref_grid[0]) for i in range(h) for _ in range(w)]
    expected_cols = [naive_position(j, w, ref_grid[1]) for _ in range(h) for j in range(w)]
    assert rows.tolist() == expected_rows
    assert cols.tolist() == expected_cols


def test_positions_round_half_to_even():
    # 3 tokens on a 3-row grid with reference 3 rows would be integers; use ref 5 over 2 tokens: 0, 2.5 -> 2.
    rows, _ = scale_positions(InfinityRope2D(16, ref_grid=(5, 5)), (2, 2))
    assert rows.tolist() == [0.0, 0.0, 2.0, 2.0]
    rows, _ = scale_positions(InfinityRope2D(16, ref_grid=(7, 7)), (2, 2))  # 3.5 -> 4
    assert rows.tolist() == [0.0, 0.0, 4.0, 4.0]


def test_inv_freq_matches_formula():
    scheme = InfinityRope2D(128)
    expected = torch.tensor([10000.0 ** (-2 * k / 64) for k in range(32)], dtype=torch.float64)
    torch.testing.assert_close(scheme.inv_freq().double(), expected, rtol=1e-6, atol=0)
    assert scheme.pair_frequencies().shape == (64,)
    assert scheme.pair_axes().tolist() == [0] * 32 + [1] * 32


@pytest.mark.parametrize("dim", [16, 48, 128])
def test_tables_equal_naive_angles(dim):
    tables = precompute_rope_tables(InfinityRope2D(dim), SQUARE_1M_SCHEDULE[:6])
    assert tables.offsets == (0, 1, 5, 21, 57, 121, 265)
    assert tables.cos.shape == (265, dim // 2) and tables.cos.dtype == torch.float32
    for scale, (h, w) in enumerate(tables.grids):
        cos, sin = tables.scale_table(scale)
        for i, j in [(0, 0), (h - 1, w - 1), (h // 2, w // 3)]:
            row, col = naive_position(i, h, 64), naive_position(j, w, 64)
            quarter = dim // 4
            angles = [
                (row if m < quarter else col) * 10000.0 ** (-2 * (m % quarter) / (dim / 2))
                for m in range(dim // 2)
            ]
            expected = torch.tensor(angles, dtype=torch.float64)
            torch.testing.assert_close(cos[i * w + j].double(), expected.cos(), rtol=0, atol=1e-5)
            torch.testing.assert_close(sin[i * w + j].double(), expected.sin(), rtol=0, atol=1e-5)


def test_rope_scheme_registry():
    scheme = rope_scheme("infinity", rotary_dim=64, ref_grid=(45, 90))
    assert isinstance(scheme, InfinityRope2D) and isinstance(scheme, RopeScheme)
    assert scheme.ref_grid == (45, 90) and scheme.pairing == "interleaved"


def test_schedule_accepts_infinity_triples():
    tables = precompute_rope_tables(InfinityRope2D(16), [(1, 1, 1), (1, 2, 3)])
    assert tables.grids == ((1, 1), (2, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_apply_matches_naive_per_token_formula(dtype, packed_positions, device):
    grids = [(1, 1), (2, 2), (6, 6), (5, 7)]
    tables = precompute_rope_tables(InfinityRope2D(16, ref_grid=(64, 64)), grids, device)
    batch, tokens, heads, dim = 2, 9, 3, 16
    scale_ids, rows, cols = packed_positions(grids, tokens, batch)
    q = torch.randn(batch, tokens, heads, dim, dtype=dtype, device=device)
    k = torch.randn(batch, tokens, heads, dim, dtype=dtype, device=device)
    q_rot, k_rot = apply_rope_2d(q, k, tables, scale_ids, rows, cols)
    for b in range(batch):
        for n in range(tokens):
            h_grid, w_grid = grids[int(scale_ids[n])]
            row = naive_position(int(rows[b, n]), h_grid, 64)
            col = naive_position(int(cols[b, n]), w_grid, 64)
            for h in range(heads):
                for src, got in ((q, q_rot), (k, k_rot)):
                    expected = naive_rotate_token(src[b, n, h].tolist(), row, col)
                    torch.testing.assert_close(
                        got[b, n, h].double().cpu(),
                        torch.tensor(expected, dtype=torch.float64),
                        rtol=1e-5,
                        atol=1e-5,
                    )


def test_apply_full_scale_in_order_equals_per_scale_rotation(device):
    # Packing whole scales in schedule order must reproduce Infinity's per-scale slice of the table.
    grids = SQUARE_1M_SCHEDULE[:5]
    tables = precompute_rope_tables(InfinityRope2D(32), grids, device)
    scale = 3
    h, w = grids[scale]
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    q = torch.randn(1, h * w, 2, 32, device=device)
    q_rot, _ = apply_rope_2d(
        q,
        q.clone(),
        tables,
        torch.full((h * w,), scale, device=device),
        ii.reshape(1, -1).to(device),
        jj.reshape(1, -1).to(device),
    )
    cos, sin = tables.scale_table(scale)
    x = q.view(1, h * w, 2, 16, 2)
    expected = torch.stack(
        [
            x[..., 0] * cos[None, :, None] - x[..., 1] * sin[None, :, None],
            x[..., 0] * sin[None, :, None] + x[..., 1] * cos[None, :, None],
        ],
        dim=-1,
    ).view_as(q)
    torch.testing.assert_close(q_rot, expected)


def test_rotation_preserves_norms_and_order_independence(packed_positions, device):
    grids = [(2, 2), (4, 4), (8, 8)]
    tables = precompute_rope_tables(InfinityRope2D(64), grids, device)
    scale_ids, rows, cols = packed_positions(grids, 11, 2)
    q, k = torch.randn(2, 11, 4, 64, device=device), torch.randn(2, 11, 4, 64, device=device)
    q_rot, k_rot = apply_rope_2d(q, k, tables, scale_ids, rows, cols)
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(k_rot.norm(dim=-1), k.norm(dim=-1))
    # Permuting the packed tokens permutes the result: each token depends only on its own position.
    perm = torch.randperm(11, device=device)
    q_perm, _ = apply_rope_2d(q[:, perm], k[:, perm], tables, scale_ids[perm], rows[:, perm], cols[:, perm])
    torch.testing.assert_close(q_perm, q_rot[:, perm])
    assert not torch.allclose(q_rot, q)


def test_bhnd_layout_and_inplace(packed_positions, device):
    grids = [(3, 3), (6, 6)]
    tables = precompute_rope_tables(InfinityRope2D(16), grids, device)
    scale_ids, rows, cols = packed_positions(grids, 7, 2)
    q, k = torch.randn(2, 7, 3, 16, device=device), torch.randn(2, 7, 3, 16, device=device)
    expected_q, expected_k = apply_rope_2d(q, k, tables, scale_ids, rows, cols)
    q_bhnd, k_bhnd = q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous()
    got_q, got_k = apply_rope_2d(q_bhnd, k_bhnd, tables, scale_ids, rows, cols, layout="bhnd")
    assert got_q.shape == (2, 3, 7, 16)
    torch.testing.assert_close(got_q, expected_q.transpose(1, 2))
    torch.testing.assert_close(got_k, expected_k.transpose(1, 2))
    ret_q, ret_k = apply_rope_2d(q_bhnd, k_bhnd, tables, scale_ids, rows, cols, layout="bhnd", inplace=True)
    assert ret_q is q_bhnd and ret_k is k_bhnd
    torch.testing.assert_close(q_bhnd, expected_q.transpose(1, 2))
    torch.testing.assert_close(k_bhnd, expected_k.transpose(1, 2))


@dataclass(frozen=True)
class HalfSplitRope2D:
    """A test-only scheme: NeoX ("half") pairing with un-rounded positions, to exercise the protocol."""

    rotary_dim: int
    name: str = "half-split-test"
    pairing: str = "half"
    round_positions: bool = False

    def pair_frequencies(self):
        quarter = self.rotary_dim // 4
        inv = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
        return torch.cat([inv, inv])

    def pair_axes(self):
        quarter = self.rotary_dim // 4
        return torch.tensor([1] * quarter + [0] * quarter, dtype=torch.int32)

    def position_steps(self, grid):
        return 10 / grid[0], 10 / grid[1]


def test_custom_half_pairing_scheme_against_naive(device):
    scheme = HalfSplitRope2D(8)
    tables = precompute_rope_tables(scheme, [(3, 4)], device)
    x = torch.randn(1, 1, 1, 8, dtype=torch.float64, device=device)
    i, j = 2, 3
    rot, _ = apply_rope_2d(x, x.clone(), tables, torch.zeros(1, dtype=torch.long, device=device), *(
        torch.tensor([[v]], device=device) for v in (i, j)
    ))  # fmt: skip
    row, col = i * 10 / 3, j * 10 / 4
    v = x.flatten().tolist()
    expected = [0.0] * 8
    for m in range(4):
        freq = 100.0 ** (-(m % 2) / 2)
        angle = (col if m < 2 else row) * freq
        c, s = math.cos(angle), math.sin(angle)
        expected[m] = v[m] * c - v[m + 4] * s
        expected[m + 4] = v[m] * s + v[m + 4] * c
    torch.testing.assert_close(
        rot.flatten().cpu(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5
    )
