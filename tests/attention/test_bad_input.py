"""Bad arguments raise ValueError naming the argument and what is allowed."""

import pytest
import torch

from moss_attention import (
    InfinityRope2D,
    MixedScaleAttention,
    apply_rope_2d,
    mixed_scale_attention,
    precompute_rope_tables,
    rope_scheme,
)

GRIDS = [(1, 1), (2, 2), (4, 6)]


@pytest.fixture(params=["torch", "triton"])
def rope_fn(request):
    if request.param == "torch":
        return apply_rope_2d
    return request.getfixturevalue("rope_ops").apply_rope_2d_triton


@pytest.fixture
def rope_args(device):
    tables = precompute_rope_tables(InfinityRope2D(16), GRIDS, device)
    q = torch.randn(2, 4, 3, 16, device=device)
    scale_ids = torch.tensor([0, 1, 2, 2], device=device)
    rows = torch.tensor([[0, 1, 3, 0], [0, 0, 2, 1]], device=device)
    cols = torch.tensor([[0, 1, 5, 0], [0, 1, 4, 2]], device=device)
    return q, q.clone(), tables, scale_ids, rows, cols


@pytest.mark.parametrize("rotary_dim", [18, 7, 0, -4, 2])
def test_rotary_dim_must_be_multiple_of_four(rotary_dim):
    with pytest.raises(ValueError, match=r"rotary_dim must be a positive multiple of 4"):
        InfinityRope2D(rotary_dim)


def test_unknown_scheme_and_bad_schedule():
    with pytest.raises(ValueError, match=r"scheme must be one of \('infinity',\)"):
        rope_scheme("hart-typo", rotary_dim=16)
    with pytest.raises(ValueError, match=r"schedule must be a non-empty sequence"):
        precompute_rope_tables(InfinityRope2D(16), [])
    with pytest.raises(ValueError, match=r"schedule\[1\] must be a pair of positive ints"):
        precompute_rope_tables(InfinityRope2D(16), [(2, 2), (0, 3)])
    with pytest.raises(ValueError, match=r"ref_grid must be a pair of positive ints"):
        InfinityRope2D(16, ref_grid=(64,))


def test_rows_outside_grid(rope_fn, rope_args):
    q, k, tables, scale_ids, rows, cols = rope_args
    rows[1, 2] = 4  # scale 2 has 4 rows: 0..3
    with pytest.raises(
        ValueError, match=r"rows must lie inside each token's scale grid.*\(b=1, n=2\).*grid 4x6"
    ):
        rope_fn(q, k, tables, scale_ids, rows, cols)


def test_cols_outside_grid(rope_fn, rope_args):
    q, k, tables, scale_ids, rows, cols = rope_args
    cols[0, 0] = -1
    with pytest.raises(ValueError, match=r"cols must lie inside each token's scale grid.*\(b=0, n=0\)"):
        rope_fn(q, k, tables, scale_ids, rows, cols)
    cols[0, 0] = 1  # inside the 6-wide scale, outside the 1x1 scale this token belongs to
    with pytest.raises(ValueError, match=r"cols must lie inside.*grid 1x1"):
        rope_fn(q, k, tables, scale_ids, rows, cols)


@pytest.mark.parametrize("bad_scale", [3, -1])
def test_scale_index_outside_schedule(rope_fn, rope_args, bad_scale):
    q, k, tables, scale_ids, rows, cols = rope_args
    scale_ids[1] = bad_scale
    with pytest.raises(ValueError, match=r"scale_ids must lie in \[0, 3\)"):
        rope_fn(q, k, tables, scale_ids, rows, cols)


def test_head_dim_mismatch(rope_fn, rope_args, device):
    q, _, tables, scale_ids, rows, cols = rope_args
    q32 = torch.randn(2, 4, 3, 32, device=device)
    with pytest.raises(
        ValueError, match=r"head dim D of q and k \(32\) must equal the tables' rotary_dim \(16\)"
    ):
        rope_fn(q32, q32.clone(), tables, scale_ids, rows, cols)
    with pytest.raises(ValueError, match=r"q and k must have the same head dim D"):
        rope_fn(q, q32, tables, scale_ids, rows, cols)


def test_batch_and_token_mismatch(rope_fn, rope_args, device):
    q, k, tables, scale_ids, rows, cols = rope_args
    with pytest.raises(ValueError, match=r"q and k must have the same batch size B"):
        rope_fn(q, torch.randn(3, 4, 3, 16, device=device), tables, scale_ids, rows, cols)
    with pytest.raises(ValueError, match=r"rows must have shape \(N,\) or \(B, N\)"):
        rope_fn(q, k, tables, scale_ids, rows.repeat(2, 1), cols)
    with pytest.raises(ValueError, match=r"scale_ids must have shape \(N,\) or \(B, N\)"):
        rope_fn(q, k, tables, scale_ids[:3], rows, cols)
    with pytest.raises(ValueError, match=r"cols must be an integer tensor"):
        rope_fn(q, k, tables, scale_ids, rows, cols.float())


def test_unknown_layout(rope_fn, rope_args):
    with pytest.raises(ValueError, match=r"layout must be one of \('bnhd', 'bhnd'\), got 'nhd'"):
        rope_fn(*rope_args, layout="nhd")


def test_triton_rejects_float64_and_bad_block(rope_ops, rope_args):
    q, k, tables, scale_ids, rows, cols = rope_args
    with pytest.raises(ValueError, match=r"q.dtype must be one of"):
        rope_ops.apply_rope_2d_triton(q.double(), k.double(), tables, scale_ids, rows, cols)
    with pytest.raises(ValueError, match=r"block_rows must be a positive int"):
        rope_ops.apply_rope_2d_triton(q, k, tables, scale_ids, rows, cols, block_rows=0)
    with pytest.raises(ValueError, match=r"out must be None when inplace=True"):
        rope_ops.apply_rope_2d_triton(q, k, tables, scale_ids, rows, cols, inplace=True, out=(q, k))


@pytest.fixture
def attention_args(device):
    q, k, v = (torch.randn(2, 5, 3, 16, device=device) for _ in range(3))
    k_cache, v_cache = (torch.randn(2, 3, 4, 16, device=device) for _ in range(2))
    return q, k, v, k_cache, v_cache, torch.tensor([0, 0, 1, 1, 1], device=device)


def test_unknown_backend_mode_and_sa_impl(attention_args):
    with pytest.raises(ValueError, match=r"backend must be one of \('sdpa', 'flex', 'xformers'.*got 'flash'"):
        mixed_scale_attention(*attention_args, backend="flash")
    with pytest.raises(ValueError, match=r"mode must be one of \('cssa', 'sa'\), got 'causal'"):
        mixed_scale_attention(*attention_args, mode="causal")
    with pytest.raises(ValueError, match=r"sa_impl must be one of \('mask', 'loop'\)"):
        mixed_scale_attention(*attention_args, mode="sa", sa_impl="scan")
    with pytest.raises(ValueError, match=r"sa_impl 'loop' is not offered by backend 'flex'"):
        mixed_scale_attention(*attention_args, mode="sa", backend="flex", sa_impl="loop")
    with pytest.raises(ValueError, match=r"backend must be one of"):
        MixedScaleAttention(backend="flash")
    with pytest.raises(ValueError, match=r"mode must be one of"):
        MixedScaleAttention(mode="causal")


def test_attention_shape_mismatches(attention_args, device):
    q, k, v, k_cache, v_cache, scale_ids = attention_args
    with pytest.raises(ValueError, match=r"k_cache must have the batch size B of q/v \(2\)"):
        mixed_scale_attention(q, k, v, k_cache[:1], v_cache[:1], scale_ids)
    with pytest.raises(ValueError, match=r"k_cache must have the head dim D of q/v \(16\)"):
        mixed_scale_attention(q, k, v, k_cache[..., :8], v_cache, scale_ids)
    with pytest.raises(ValueError, match=r"k must have q's shape"):
        mixed_scale_attention(q, k[..., :8], v, k_cache, v_cache, scale_ids)
    with pytest.raises(ValueError, match=r"k_cache and v_cache must both be given"):
        mixed_scale_attention(q, k, v, k_cache, None, scale_ids)
    with pytest.raises(ValueError, match=r"scale_ids must be an integer tensor of shape \(N,\) = \(5,\)"):
        mixed_scale_attention(q, k, v, k_cache, v_cache, scale_ids[:4], mode="sa")
    with pytest.raises(ValueError, match=r"scale_ids \(N,\) is required for mode 'sa'"):
        mixed_scale_attention(q, k, v, k_cache, v_cache, None, mode="sa")


def test_scale_options(attention_args, device):
    with pytest.raises(ValueError, match=r"softmax_scale must be None with cosine attention"):
        mixed_scale_attention(
            *attention_args, softmax_scale=0.5, cosine_scale_mul=torch.zeros(3, device=device)
        )
    with pytest.raises(
        ValueError, match=r"cosine_scale_mul must have shape \(H,\) or \(1, H, 1, 1\) with H=3"
    ):
        mixed_scale_attention(*attention_args, cosine_scale_mul=torch.zeros(1, 1, 3, 1, device=device))
    with pytest.raises(ValueError, match=r"softmax_scale must be a positive number"):
        mixed_scale_attention(*attention_args, softmax_scale=-1.0)
    with pytest.raises(ValueError, match=r"scale_mul must be given exactly when cosine=True"):
        MixedScaleAttention(cosine=True)(*attention_args)


def test_mixed_scale_attention_config_checks(attention_args, device):
    with pytest.raises(ValueError, match=r"rope_impl must be one of \('auto', 'triton', 'torch'\)"):
        MixedScaleAttention(rope_impl="cuda")
    with pytest.raises(ValueError, match=r"sa_impl must be one of"):
        MixedScaleAttention(sa_impl="scan")
    with pytest.raises(ValueError, match=r"softmax_scale must be None with cosine attention"):
        MixedScaleAttention(cosine=True, softmax_scale=0.1)
    tables = precompute_rope_tables(InfinityRope2D(16), GRIDS, device)
    with pytest.raises(ValueError, match=r"scale_ids, rows and cols are required when rope_tables is set"):
        MixedScaleAttention(rope_tables=tables)(*attention_args)
