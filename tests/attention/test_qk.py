"""The per-pass q/k preparation (RoPE angles gathered once, cosine attention and rotation for q and k together)
and attention over a cache the pass wrote into first: bit for bit what the per-layer reference path gives."""

import pytest
import torch

from moss_attention import (
    InfinityRope2D,
    RopeTables,
    apply_rope_2d,
    attention_over_cache,
    cosine_attention_qk,
    cosine_multiplier,
    cosine_qk_rope,
    gather_rope_angles,
    mixed_scale_attention,
    precompute_rope_tables,
    qk_scale,
)

GRIDS = [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16)]
WIDE = [(1, 2), (3, 6), (15, 30)]


def _tables(grids, dim, pairing):
    tables = precompute_rope_tables(InfinityRope2D(dim, ref_grid=grids[-1]), grids)
    if pairing == "interleaved":
        return tables
    return RopeTables.from_cos_sin(tables.cos, tables.sin, grids, "half")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pairing", ["interleaved", "half"])
@pytest.mark.parametrize(
    ("grids", "batch", "tokens", "heads", "dim"), [(GRIDS, 2, 50, 4, 16), (WIDE, 1, 33, 3, 48)]
)
def test_cosine_qk_rope_is_the_reference_bit_for_bit(
    packed_positions, dtype, pairing, grids, batch, tokens, heads, dim
):
    tables = _tables(grids, dim, pairing)
    sid, rows, cols = packed_positions(grids, tokens, batch, device="cpu")
    qkv = torch.randn(batch, tokens, 3, heads, dim).to(dtype)
    scale_mul = (torch.randn(1, heads, 1, 1) + 2.5).to(dtype)  # some above ln 100: the clamp is exercised
    q, k, _ = qkv.unbind(2)
    q_ref, k_ref = cosine_attention_qk(q.float(), k.float(), scale_mul)
    q_ref, k_ref = apply_rope_2d(q_ref, k_ref, tables, sid, rows, cols)
    angles = gather_rope_angles(tables, sid, rows, cols, batch=batch)
    for multiplier in (cosine_multiplier(scale_mul), qk_scale(cosine_multiplier(scale_mul))):
        out = cosine_qk_rope(qkv[:, :, :2], multiplier, angles, dtype)
        assert out.dtype == dtype
        assert torch.equal(out[:, :, 0], q_ref.to(dtype)) and torch.equal(out[:, :, 1], k_ref.to(dtype))


@pytest.mark.parametrize(("mode", "sa_impl"), [("cssa", None), ("sa", "mask"), ("sa", "loop")])
@pytest.mark.parametrize("shuffled", [False, True])
def test_attention_over_a_cache_written_first_is_the_concatenating_call(mode, sa_impl, shuffled):
    batch, tokens, heads, dim, cached, capacity = 2, 13, 3, 16, 7, 32
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    if shuffled:
        ids = ids[torch.randperm(tokens)]
    q, k, v = (torch.randn(batch, tokens, heads, dim) for _ in range(3))
    keys = torch.full((batch, heads, capacity, dim), float("nan"))  # never-written slots must not be read
    values = torch.full((batch, heads, capacity, dim), float("nan"))
    keys[:, :, :cached], values[:, :, :cached] = torch.randn(2, batch, heads, cached, dim)
    want = mixed_scale_attention(
        q,
        k,
        v,
        keys[:, :, :cached],
        values[:, :, :cached],
        ids,
        mode=mode,
        softmax_scale=0.3,
        sa_impl=sa_impl,
    )
    keys[:, :, cached : cached + tokens] = k.transpose(1, 2)
    values[:, :, cached : cached + tokens] = v.transpose(1, 2)
    got = attention_over_cache(
        q, keys[:, :, : cached + tokens], values[:, :, : cached + tokens], ids, cache_len=cached, mode=mode,
        softmax_scale=0.3, sa_impl=sa_impl,
    )  # fmt: skip
    assert torch.equal(got, want)


def test_attention_over_cache_refuses_mismatched_lengths():
    q = torch.randn(1, 4, 2, 8)
    keys = torch.randn(1, 2, 9, 8)
    with pytest.raises(ValueError, match=r"cache_len \+ N"):
        attention_over_cache(q, keys, keys, cache_len=3, softmax_scale=1.0)
    with pytest.raises(ValueError, match="scale_ids"):
        attention_over_cache(q, keys, keys, cache_len=5, mode="sa", softmax_scale=1.0)
