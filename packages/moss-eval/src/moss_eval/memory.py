"""Peak device memory and KV-cache size.

Peak memory is CUDA's allocator statistic (``torch.cuda.max_memory_allocated``): bytes of live tensors at their
highest point, not what the caching allocator reserved or what ``nvidia-smi`` shows. **On CPU (or any non-CUDA
device) there is no such statistic and every function here returns None** — never 0, so a missing measurement
cannot pass for a small one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch


def _cuda(device: torch.device | str) -> torch.device | None:
    device = torch.device(device)
    return device if device.type == "cuda" else None


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window on a CUDA device; does nothing on other devices."""
    if (cuda := _cuda(device)) is not None:
        torch.cuda.reset_peak_memory_stats(cuda)


def max_memory_allocated(device: torch.device | str) -> int | None:
    """Peak bytes allocated on a CUDA device since the last reset (synchronises first); None elsewhere."""
    if (cuda := _cuda(device)) is None:
        return None
    torch.cuda.synchronize(cuda)
    return int(torch.cuda.max_memory_allocated(cuda))


@dataclass
class PeakMemory:
    """Filled in when the :func:`peak_memory` block exits; ``bytes`` stays None on non-CUDA devices."""

    device: torch.device
    bytes: int | None = None

    @property
    def gib(self) -> float | None:
        return None if self.bytes is None else self.bytes / 2**30


@contextmanager
def peak_memory(device: torch.device | str) -> Iterator[PeakMemory]:
    """``with peak_memory("cuda") as peak: ...`` then ``peak.bytes`` (None on CPU).

    The window is reset on entry, so the result is the peak *inside* the block (including tensors that were
    already allocated before it, which count towards the allocator's total).
    """
    result = PeakMemory(torch.device(device))
    reset_peak_memory(device)
    try:
        yield result
    finally:
        result.bytes = max_memory_allocated(device)


def kv_cache_bytes(tensors: torch.Tensor | Mapping | list | tuple) -> int:
    """Bytes held by a KV cache: the sum of ``numel · element_size`` over its tensors.

    ``tensors`` is a tensor or a (nested) list / tuple / dict of tensors, e.g. ``[(k0, v0), (k1, v1), ...]``.
    Views are counted by their own size, not their storage's.
    """

    def walk(obj, where: str) -> int:
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, Mapping):
            return sum(walk(v, f"{where}[{k!r}]") for k, v in obj.items())
        if isinstance(obj, list | tuple):
            return sum(walk(v, f"{where}[{i}]") for i, v in enumerate(obj))
        raise ValueError(
            f"{where} must be a tensor or a list/tuple/dict of tensors, got {type(obj).__name__}"
        )

    return walk(tensors, "tensors")
