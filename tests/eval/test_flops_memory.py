"""FLOPs (FlopCounterMode), KV-cache bytes and peak memory (None on CPU)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moss_eval import FlopCount, count_flops, kv_cache_bytes, max_memory_allocated, peak_memory

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_matmul_is_2mnk():
    m, k, n = 7, 5, 3
    a, b = torch.randn(m, k), torch.randn(k, n)
    result = count_flops(torch.matmul, a, b)
    assert isinstance(result, FlopCount)
    assert result.total == 2 * m * n * k
    assert result.by_op == {"aten.mm": 2 * m * n * k}
    assert torch.equal(result.output, a @ b)


def test_linear_stack():
    batch, d_in, hidden, d_out = 4, 16, 32, 8
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    result = count_flops(model, torch.randn(batch, d_in))
    # bias adds and the ReLU are elementwise: not counted
    assert result.total == 2 * batch * d_in * hidden + 2 * batch * hidden * d_out
    assert set(result.by_op) == {"aten.addmm"}


def test_sdpa_is_counted_on_cpu():
    b, h, lq, lk, d = 2, 3, 16, 24, 8
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    result = count_flops(F.scaled_dot_product_attention, q, k, v)
    assert result.total == 4 * b * h * lq * lk * d  # QK^T and PV, 2·M·N·K each
    assert any("scaled_dot_product" in op for op in result.by_op)
    # a mask is not exploited: still counted as dense attention
    masked = count_flops(
        F.scaled_dot_product_attention, q, k, v, attn_mask=torch.tril(torch.ones(lq, lk)).bool()
    )
    assert masked.total == result.total


def test_kv_cache_bytes_nested():
    layers = [
        (torch.zeros(2, 4, 10, 8, dtype=torch.bfloat16), torch.zeros(2, 4, 10, 8, dtype=torch.bfloat16))
    ] * 3
    assert kv_cache_bytes(layers) == 3 * 2 * (2 * 4 * 10 * 8) * 2
    assert kv_cache_bytes({"k": torch.zeros(5), "v": [torch.zeros(5, dtype=torch.float64)]}) == 5 * 4 + 5 * 8
    assert kv_cache_bytes([]) == 0
    with pytest.raises(ValueError, match=r"tensors\[1\]"):
        kv_cache_bytes([torch.zeros(1), "not a tensor"])


def test_peak_memory_is_none_on_cpu():
    with peak_memory("cpu") as peak:
        torch.zeros(1000)
    assert peak.bytes is None and peak.gib is None
    assert max_memory_allocated("cpu") is None


@pytest.mark.gpu
@needs_cuda
def test_peak_memory_cuda():
    with peak_memory("cuda") as peak:
        x = torch.empty(64, 2**20, dtype=torch.uint8, device="cuda")  # 64 MiB
        del x
    assert peak.bytes >= 64 * 2**20
