"""The fused Triton q/k preparation (cosine norm, q scale, 2D RoPE) against its torch reference.

Interpreted on CPU (~1.5 ms per program), so ``block_rows`` keeps the program count small while still running
several programs with a ragged tail.
"""

import pytest
import torch

import moss_attention
from moss_attention import InfinityRope2D, RopeTables, precompute_rope_tables
from moss_attention.qk import cosine_multiplier, cosine_qk_rope, gather_rope_angles

from .conftest import TRITON_SKIP_REASON

GRIDS = [(1, 1), (2, 2), (5, 7), (12, 12), (64, 64)]
WIDE_GRIDS = [(1, 2), (3, 6), (7, 5), (15, 30)]  # non-square, both orientations

# No bit-exactness: the norm's reduction order differs. bf16: the interpreter truncates fp32 -> bf16 on store
# where torch rounds to nearest, so allow 1 ulp (~1e-2 near |x| = 1; the multiplier only scales q up to 100x,
# hence a relative tolerance too).
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (2e-2, 2e-2),
}
DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
    pytest.param(torch.bfloat16, id="bf16"),
]


@pytest.fixture
def qk_ops():
    """The Triton q/k preparation module, or a skip that says why it cannot run."""
    if TRITON_SKIP_REASON:
        pytest.skip(TRITON_SKIP_REASON)
    from moss_attention.ops import qk_rope

    return qk_rope


def _multiplier(heads, device):
    # Learned log-scales around Infinity's init (ln 4 ≈ 1.39), some above the ln 100 clamp.
    return cosine_multiplier(torch.rand(heads) * 5.5).to(device)


def _reference(q, k, multiplier, tables, scale_ids, rows, cols, out_dtype=None):
    angles = gather_rope_angles(tables, scale_ids, rows, cols, batch=q.shape[0])
    both = cosine_qk_rope(torch.stack([q, k], 2), multiplier, angles, out_dtype)
    return both[:, :, 0], both[:, :, 1]


def _assert_close(got, expected):
    assert got.dtype == expected.dtype and got.shape == expected.shape
    atol, rtol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(got, expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("batch", "tokens", "heads", "dim", "block_rows"),
    [
        (1, 1, 1, 16, 1),
        (2, 37, 3, 16, 32),  # odd N, odd H: several programs, ragged tail
        (3, 19, 5, 48, 64),  # non-power-of-two head dim (masked pairs)
        (2, 23, 2, 64, None),  # default block: one program
        (2, 13, 3, 128, 16),
    ],
)
def test_matches_reference(qk_ops, device, packed_positions, dtype, batch, tokens, heads, dim, block_rows):
    tables = precompute_rope_tables(InfinityRope2D(dim), GRIDS, device)
    scale_ids, rows, cols = packed_positions(GRIDS, tokens, batch, device=device)
    q = torch.randn(batch, tokens, heads, dim, device=device).to(dtype)
    k = torch.randn(batch, tokens, heads, dim, device=device).to(dtype)
    q[0, 0, 0] = 0  # an all-zero row: the eps clamp keeps it zero, not NaN
    multiplier = _multiplier(heads, device)
    expected_q, expected_k = _reference(q, k, multiplier, tables, scale_ids, rows, cols)
    q_before, k_before = q.clone(), k.clone()

    got_q, got_k = qk_ops.cosine_qk_rope_triton(
        q, k, multiplier, tables, scale_ids, rows, cols, block_rows=block_rows
    )
    assert got_q.is_contiguous() and got_k.is_contiguous()
    _assert_close(got_q, expected_q)
    _assert_close(got_k, expected_k)
    assert torch.equal(got_q[0, 0, 0], torch.zeros_like(got_q[0, 0, 0]))
    assert torch.equal(q, q_before) and torch.equal(k, k_before)  # inputs untouched

    # In place: every element of a row is read (for its norm) before it is overwritten.
    ret_q, ret_k = qk_ops.cosine_qk_rope_triton(
        q, k, multiplier, tables, scale_ids, rows, cols, q_out=q, k_out=k, block_rows=block_rows
    )
    assert ret_q is q and ret_k is k
    _assert_close(q, expected_q)
    _assert_close(k, expected_k)


def _mix(name, tokens, batch, device, packed_positions):
    """``(grids, scale_ids, rows, cols)`` of one kind of token set."""
    if name == "random":  # random scales in random order, per-image positions
        return (GRIDS, *packed_positions(GRIDS, tokens, batch, device=device))
    if name == "single":  # one whole scale in raster order, positions shared by the images: (N,) each
        h, w = GRIDS[2]
        flat = torch.arange(h * w, device=device)
        return GRIDS, torch.full_like(flat, 2), flat // w, flat % w
    if name == "wide":
        return (WIDE_GRIDS, *packed_positions(WIDE_GRIDS, tokens, batch, device=device))
    # "per_image": every image packs different scales at the same slots, (B, N) scale ids
    scale_ids = torch.randint(0, len(GRIDS), (batch, tokens))
    sizes = torch.tensor(GRIDS)[scale_ids]
    rows = (torch.rand(batch, tokens) * sizes[..., 0]).long()
    cols = (torch.rand(batch, tokens) * sizes[..., 1]).long()
    return GRIDS, scale_ids.to(device), rows.to(device), cols.to(device)


@pytest.mark.parametrize("mix", ["random", "single", "wide", "per_image"])
@pytest.mark.parametrize("pairing", ["interleaved", "half"])
def test_scale_mixes_and_pairings(qk_ops, device, packed_positions, mix, pairing):
    batch, heads, dim = 2, 3, 32
    grids, scale_ids, rows, cols = _mix(mix, 29, batch, device, packed_positions)
    tables = precompute_rope_tables(InfinityRope2D(dim), grids, device)
    interleaved = tables
    if pairing == "half":  # the same angles, paired NeoX-style: (x[p], x[p + D/2])
        tables = RopeTables.from_cos_sin(tables.cos, tables.sin, tables.grids, "half")
    tokens = scale_ids.shape[-1]
    q, k = (torch.randn(batch, tokens, heads, dim, device=device) for _ in range(2))
    multiplier = _multiplier(heads, device)
    expected = _reference(q, k, multiplier, tables, scale_ids, rows, cols)
    got = qk_ops.cosine_qk_rope_triton(q, k, multiplier, tables, scale_ids, rows, cols, block_rows=64)
    for g, e in zip(got, expected, strict=True):
        _assert_close(g, e)
    if pairing == "half":
        other = _reference(q, k, multiplier, interleaved, scale_ids, rows, cols)
        for g, o in zip(got, other, strict=True):
            assert not torch.allclose(g, o, atol=1e-3)  # the pairing really changed the result


@pytest.mark.parametrize(
    ("in_dtype", "out_dtype"),
    [
        (torch.float32, torch.float32),
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.bfloat16),
        (torch.float32, torch.bfloat16),  # fp32 projection, bf16 cache
        (torch.bfloat16, torch.float32),
    ],
    ids=lambda d: str(d).removeprefix("torch."),
)
def test_qkv_views_into_cache_slot(qk_ops, device, packed_positions, in_dtype, out_dtype):
    batch, tokens, heads, dim, capacity, start = 2, 21, 3, 48, 40, 11
    tables = precompute_rope_tables(InfinityRope2D(dim), WIDE_GRIDS, device)
    scale_ids, rows, cols = packed_positions(WIDE_GRIDS, tokens, batch, device=device)
    qkv = torch.randn(batch, tokens, 3, heads, dim, device=device).to(in_dtype)
    q, k = qkv[:, :, 0], qkv[:, :, 1]  # strided views of the fused projection
    multiplier = _multiplier(heads, device)
    expected_q, expected_k = _reference(q, k, multiplier, tables, scale_ids, rows, cols, out_dtype)
    qkv_before = qkv.clone()

    sentinel = 7.0
    cache = torch.full((batch, heads, capacity, dim), sentinel, dtype=out_dtype, device=device)
    slot = cache[:, :, start : start + tokens].transpose(1, 2)  # (B, N, H, D), strided
    got_q, got_k = qk_ops.cosine_qk_rope_triton(
        q, k, multiplier, tables, scale_ids, rows, cols, k_out=slot, out_dtype=out_dtype, block_rows=64
    )
    assert got_k is slot and got_q.dtype == out_dtype
    _assert_close(got_q, expected_q)
    _assert_close(cache[:, :, start : start + tokens].transpose(1, 2), expected_k)
    untouched = torch.ones(capacity, dtype=torch.bool, device=device)
    untouched[start : start + tokens] = False
    assert bool((cache[:, :, untouched] == sentinel).all())
    assert torch.equal(qkv, qkv_before)

    # In place on the views writes through to qkv and leaves v alone (same dtype only).
    if in_dtype == out_dtype:
        qk_ops.cosine_qk_rope_triton(
            q, k, multiplier, tables, scale_ids, rows, cols, q_out=q, k_out=k, block_rows=64
        )
        _assert_close(qkv[:, :, 0], expected_q)
        _assert_close(qkv[:, :, 1], expected_k)
        assert torch.equal(qkv[:, :, 2], qkv_before[:, :, 2])


def test_check_false_and_lazy_export(qk_ops, device, packed_positions):
    assert moss_attention.cosine_qk_rope_triton is qk_ops.cosine_qk_rope_triton
    assert "cosine_qk_rope_triton" in moss_attention.__all__
    tables = precompute_rope_tables(InfinityRope2D(16), GRIDS, device)
    scale_ids, rows, cols = packed_positions(GRIDS, 9, 2, device=device)
    q, k = (torch.randn(2, 9, 2, 16, device=device) for _ in range(2))
    multiplier = _multiplier(2, device)
    expected = _reference(q, k, multiplier, tables, scale_ids, rows, cols)
    got = qk_ops.cosine_qk_rope_triton(q, k, multiplier, tables, scale_ids, rows, cols, check=False)
    for g, e in zip(got, expected, strict=True):
        _assert_close(g, e)


def test_empty_token_set(qk_ops, device):
    tables = precompute_rope_tables(InfinityRope2D(16), [(2, 2)], device)
    q = torch.randn(2, 0, 3, 16, device=device)
    empty = torch.zeros(0, dtype=torch.long, device=device)
    got_q, got_k = qk_ops.cosine_qk_rope_triton(
        q, q.clone(), _multiplier(3, device), tables, empty, empty, empty, out_dtype=torch.bfloat16
    )
    assert got_q.shape == got_k.shape == (2, 0, 3, 16) and got_q.dtype == torch.bfloat16


BAD_INPUTS = [
    ({"multiplier": "short"}, r"multiplier must be float32 of shape \(H,\) = \(3,\)"),
    ({"multiplier": "2d"}, r"multiplier must be float32 of shape \(H,\)"),
    ({"multiplier": "bf16"}, r"multiplier must be float32 .* dtype torch.bfloat16"),
    ({"k": "fewer_heads"}, r"q and k must have the same head count H"),
    ({"k": "fp16"}, r"q and k must share dtype and device"),
    ({"q": "fp64"}, r"q.dtype must be one of"),
    ({"q": "int"}, r"q.dtype must be one of"),
    ({"q": "3d"}, r"q must be a 4-D tensor"),
    ({"q": "wrong_dim"}, r"head dim D of q and k \(32\) must equal the tables' rotary_dim \(16\)"),
    ({"k_out": "wrong_shape"}, r"k_out must be a tensor of q's shape"),
    ({"q_out": "fp64"}, r"q_out.dtype must be one of"),
    ({"out_dtype": torch.float64}, r"out_dtype must be one of"),
    ({"rows": "wrong_length"}, r"rows must have shape \(N,\) or \(B, N\)"),
    ({"eps": 0.0}, r"eps must be a positive float"),
]


@pytest.mark.parametrize(
    ("change", "match"),
    [pytest.param(c, m, id="-".join(f"{a}={b}" for a, b in c.items())) for c, m in BAD_INPUTS],
)
def test_bad_input_raises(qk_ops, device, change, match):
    tables = precompute_rope_tables(InfinityRope2D(16), GRIDS, device)
    q = torch.randn(2, 4, 3, 16, device=device)
    args = {
        "q": q,
        "k": q.clone(),
        "multiplier": _multiplier(3, device),
        "scale_ids": torch.tensor([0, 1, 2, 2], device=device),
        "rows": torch.tensor([0, 1, 3, 0], device=device),
        "cols": torch.tensor([0, 1, 5, 0], device=device),
    }
    kwargs = {}
    bad = {
        "short": lambda t: t[:2],
        "2d": lambda t: t[None],
        "bf16": lambda t: t.bfloat16(),
        "fewer_heads": lambda t: t[:, :, :2],
        "fp16": lambda t: t.half(),
        "fp64": lambda t: t.double(),
        "int": lambda t: t.long(),
        "3d": lambda t: t[0],
        "wrong_dim": lambda t: torch.cat([t, t], -1),
        "wrong_shape": lambda t: t[:, :3],
        "wrong_length": lambda t: t[:3],
    }
    for name, value in change.items():
        if name in ("q_out", "k_out"):
            kwargs[name] = bad[value](torch.empty_like(q))
        elif name in args:
            args[name] = bad[value](args[name])
        else:
            kwargs[name] = value
    if "q" in change and change["q"] == "wrong_dim":
        args["k"] = torch.cat([args["k"], args["k"]], -1)
    with pytest.raises(ValueError, match=match):
        qk_ops.cosine_qk_rope_triton(
            args["q"], args["k"], args["multiplier"], tables, args["scale_ids"], args["rows"], args["cols"],
            **kwargs,
        )  # fmt: skip
