"""Every backend x mode against a dense float64 reference with an explicit mask, and the call options."""

import math

import pytest
import torch
import torch.nn.functional as F

from moss_attention import (
    BackendUnavailableError,
    InfinityRope2D,
    MixedScaleAttention,
    apply_rope_2d,
    attention_mask,
    available_backends,
    backend_names,
    dense_attention_reference,
    get_backend,
    mixed_scale_attention,
    precompute_rope_tables,
)

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

# (backend, sa_impl) pairs; xformers needs CUDA and a working install, else these cases skip with the reason.
IMPLS = [("sdpa", "mask"), ("sdpa", "loop"), ("flex", "mask"), ("xformers", "mask")]
IMPL_IDS = [f"{b}-{i}" for b, i in IMPLS]
CONTIGUOUS_IDS = [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]  # 3 scales packed in order, like the dispatcher
SHUFFLED_IDS = [2, 0, 1, 1, 2, 0, 2, 1, 0, 2, 1, 2, 1]  # same scales, interleaved


def require(backend):
    reason = get_backend_reason(backend)
    if reason is not None:
        pytest.skip(reason)


def get_backend_reason(backend):
    try:
        get_backend(backend)
    except BackendUnavailableError as error:
        return str(error)
    return None


def explicit_mask(scale_ids, cache_len, mode):
    """The definition, written out token by token."""
    ids = scale_ids.tolist()
    rows = []
    for i in range(len(ids)):
        cache = [True] * cache_len
        packed = [mode == "cssa" or ids[i] == ids[j] for j in range(len(ids))]
        rows.append(cache + packed)
    return torch.tensor(rows, dtype=torch.bool, device=scale_ids.device).reshape(
        len(ids), cache_len + len(ids)
    )


def make_inputs(device, batch=2, tokens=13, heads=3, dim=16, cache_len=7, dtype=torch.float32):
    q, k, v = (torch.randn(batch, tokens, heads, dim, device=device, dtype=dtype) for _ in range(3))
    k_cache, v_cache = (
        torch.randn(batch, heads, cache_len, dim, device=device, dtype=dtype) for _ in range(2)
    )
    return q, k, v, k_cache, v_cache


def test_attention_mask_matches_definition(device):
    ids = torch.tensor(SHUFFLED_IDS, device=device)
    for mode in ("cssa", "sa"):
        assert torch.equal(attention_mask(ids, 5, mode), explicit_mask(ids, 5, mode))


def test_registry_lists_backends():
    assert set(backend_names()) >= {"sdpa", "flex", "xformers"}
    assert {"sdpa", "flex"} <= set(available_backends())
    assert ("xformers" in available_backends()) == (get_backend_reason("xformers") is None)


# sa_impl only matters for mode "sa", so "cssa" runs once per backend.
CASES = [(b, None, "cssa") for b in dict(IMPLS)] + [(b, i, "sa") for b, i in IMPLS]


@pytest.mark.parametrize("ids", [CONTIGUOUS_IDS, SHUFFLED_IDS], ids=["contiguous", "shuffled"])
@pytest.mark.parametrize(("backend", "sa_impl", "mode"), CASES, ids=[f"{b}-{m}-{i}" for b, i, m in CASES])
def test_backend_matches_dense_reference(device, backend, sa_impl, mode, ids):
    require(backend)
    q, k, v, k_cache, v_cache = make_inputs(device)
    scale_ids = torch.tensor(ids, device=device)
    out = mixed_scale_attention(
        q, k, v, k_cache, v_cache, scale_ids, mode=mode, backend=backend, sa_impl=sa_impl
    )
    expected = dense_attention_reference(q, k, v, k_cache, v_cache, explicit_mask(scale_ids, 7, mode))
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize(("backend", "sa_impl"), IMPLS, ids=IMPL_IDS)
def test_sa_with_one_scale_equals_cssa(device, backend, sa_impl):
    require(backend)
    q, k, v, k_cache, v_cache = make_inputs(device, tokens=9)
    one_scale = torch.full((9,), 4, device=device)
    sa = mixed_scale_attention(
        q, k, v, k_cache, v_cache, one_scale, mode="sa", backend=backend, sa_impl=sa_impl
    )
    cssa = mixed_scale_attention(q, k, v, k_cache, v_cache, one_scale, mode="cssa", backend=backend)
    torch.testing.assert_close(sa, cssa, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ids", [CONTIGUOUS_IDS, SHUFFLED_IDS], ids=["contiguous", "shuffled"])
def test_sa_loop_equals_sa_mask(device, ids):
    q, k, v, k_cache, v_cache = make_inputs(device)
    scale_ids = torch.tensor(ids, device=device)
    loop = mixed_scale_attention(q, k, v, k_cache, v_cache, scale_ids, mode="sa", sa_impl="loop")
    mask = mixed_scale_attention(q, k, v, k_cache, v_cache, scale_ids, mode="sa", sa_impl="mask")
    torch.testing.assert_close(loop, mask, rtol=1e-5, atol=1e-6)
    # And SA really differs from CSSA when there are several scales.
    cssa = mixed_scale_attention(q, k, v, k_cache, v_cache, scale_ids, mode="cssa")
    assert not torch.allclose(loop, cssa, atol=1e-3)


@pytest.mark.parametrize(("backend", "sa_impl"), IMPLS, ids=IMPL_IDS)
def test_empty_cache_equals_plain_attention(device, backend, sa_impl):
    require(backend)
    q, k, v, _, _ = make_inputs(device)
    scale_ids = torch.tensor(CONTIGUOUS_IDS, device=device)
    plain = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(
        1, 2
    )
    empty = torch.empty(2, 3, 0, 16, device=device)
    for k_cache, v_cache in ((None, None), (empty, empty)):
        out = mixed_scale_attention(q, k, v, k_cache, v_cache, scale_ids, mode="cssa", backend=backend)
        torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-6)
    # SA without a cache is plain attention within each scale.
    out = mixed_scale_attention(q, k, v, None, None, scale_ids, mode="sa", backend=backend, sa_impl=sa_impl)
    for s in range(3):
        sel = scale_ids == s
        part = F.scaled_dot_product_attention(*(t[:, sel].transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
        torch.testing.assert_close(out[:, sel], part, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["cssa", "sa"])
@pytest.mark.parametrize(("backend", "sa_impl"), IMPLS, ids=IMPL_IDS)
def test_softmax_scale_option(device, backend, sa_impl, mode):
    require(backend)
    q, k, v, k_cache, v_cache = make_inputs(device)
    scale_ids = torch.tensor(SHUFFLED_IDS, device=device)
    out = mixed_scale_attention(
        q, k, v, k_cache, v_cache, scale_ids, mode=mode, backend=backend, sa_impl=sa_impl, softmax_scale=0.37
    )
    mask = explicit_mask(scale_ids, 7, mode)
    # Written out: softmax(0.37 * q K^T) V over the masked keys.
    keys = torch.cat([k_cache, k.transpose(1, 2)], 2).double()
    values = torch.cat([v_cache, v.transpose(1, 2)], 2).double()
    scores = 0.37 * q.transpose(1, 2).double() @ keys.transpose(2, 3)
    expected = (scores.masked_fill(~mask, -math.inf).softmax(-1) @ values).transpose(1, 2)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=2e-6)
    default = mixed_scale_attention(q, k, v, k_cache, v_cache, scale_ids, mode=mode, backend=backend)
    assert not torch.allclose(out, default, atol=1e-4)


@pytest.mark.parametrize("scale_mul_shape", [(3,), (1, 3, 1, 1)])
@pytest.mark.parametrize("mode", ["cssa", "sa"])
@pytest.mark.parametrize(("backend", "sa_impl"), IMPLS, ids=IMPL_IDS)
def test_cosine_attention_option(device, backend, sa_impl, mode, scale_mul_shape):
    require(backend)
    q, k, v, k_cache, v_cache = make_inputs(device)
    k_cache = F.normalize(k_cache, dim=-1)  # cached keys arrive normalised, as Infinity caches them
    scale_ids = torch.tensor(CONTIGUOUS_IDS, device=device)
    # Per-head log-scales; the last is above ln 100 and must be clamped there.
    log_scale = torch.tensor([math.log(4.0), 0.5, 6.0], device=device)
    out = mixed_scale_attention(
        q, k, v, k_cache, v_cache, scale_ids, mode=mode, backend=backend, sa_impl=sa_impl,
        cosine_scale_mul=log_scale.reshape(scale_mul_shape),
    )  # fmt: skip
    multiplier = torch.tensor([4.0, math.exp(0.5), 100.0], dtype=torch.float64, device=device)
    qn = q.double() / q.double().norm(dim=-1, keepdim=True) * multiplier[:, None]
    kn = k.double() / k.double().norm(dim=-1, keepdim=True)
    expected = dense_attention_reference(
        qn, kn, v, k_cache, v_cache, explicit_mask(scale_ids, 7, mode), softmax_scale=1.0
    )
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=5e-6)


@pytest.mark.parametrize("rope_impl", ["torch", "triton"])
def test_mixed_scale_attention_config_runs_cosine_rope_then_attention(
    device, rope_impl, request, packed_positions
):
    if rope_impl == "triton":
        request.getfixturevalue("rope_ops")  # skips when Triton cannot run here
    grids = [(2, 2), (4, 4), (8, 8)]
    tables = precompute_rope_tables(InfinityRope2D(16), grids, device)
    scale_ids, rows, cols = packed_positions(grids, 13, 2, device=device)
    scale_ids, order = torch.sort(scale_ids)  # contiguous per scale, as packed by the dispatcher
    rows, cols = rows[:, order], cols[:, order]
    q, k, v, k_cache, v_cache = make_inputs(device)
    log_scale = torch.full((3,), math.log(4.0), device=device)
    attn = MixedScaleAttention(
        mode="sa", backend="sdpa", sa_impl="loop", cosine=True, rope_tables=tables, rope_impl=rope_impl
    )
    out, k_attended = attn(q, k, v, k_cache, v_cache, scale_ids, rows=rows, cols=cols, scale_mul=log_scale)

    qn, kn = F.normalize(q, dim=-1) * 4.0, F.normalize(k, dim=-1)
    q_rot, k_rot = apply_rope_2d(qn, kn, tables, scale_ids, rows, cols)
    torch.testing.assert_close(k_attended, k_rot, rtol=1e-5, atol=1e-6)
    expected = dense_attention_reference(
        q_rot, k_rot, v, k_cache, v_cache, explicit_mask(scale_ids, 7, "sa"), softmax_scale=1.0
    )
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=5e-6)


def test_low_precision_sdpa_close_to_reference(device):
    q, k, v, k_cache, v_cache = make_inputs(device, dtype=torch.bfloat16)
    scale_ids = torch.tensor(SHUFFLED_IDS, device=device)
    for impl in ("mask", "loop"):
        out = mixed_scale_attention(q, k, v, k_cache, v_cache, scale_ids, mode="sa", sa_impl=impl)
        assert out.dtype == torch.bfloat16
        expected = dense_attention_reference(q, k, v, k_cache, v_cache, explicit_mask(scale_ids, 7, "sa"))
        torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)


def test_unavailable_xformers_says_how_to_install():
    reason = get_backend_reason("xformers")
    if reason is None:
        pytest.skip("xformers works here")
    assert "xformers" not in available_backends()
    with pytest.raises(BackendUnavailableError, match=r"moss-attention\[xformers\]") as info:
        mixed_scale_attention(*make_inputs("cpu"), backend="xformers")
    assert "CUDA" in str(info.value)
