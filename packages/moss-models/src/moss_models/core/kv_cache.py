"""A preallocated per-layer KV cache for next-scale generation.

Each layer holds one ``(B, H, capacity, D)`` buffer for keys and one for values, sized once for every token
that will ever be cached, so appending a scale writes in place instead of re-concatenating the whole cache
(the official loop re-allocates it every scale). Its size is the KV memory a run really holds, which is what
the accounting reports.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        shape = (batch_size, num_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.capacity = capacity
        self.length = 0  # tokens committed by finished passes
        self._pending = 0  # tokens written by the pass in progress

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The committed ``(B, H, L, D)`` keys and values of one layer (views, no copy)."""
        return self.keys[layer][:, :, : self.length], self.values[layer][:, :, : self.length]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Stage a pass's ``(B, N, H, D)`` keys and values after the committed tokens of one layer."""
        n = k.shape[1]
        if self.length + n > self.capacity:
            raise RuntimeError(f"KV cache overflow: {self.length} + {n} tokens > capacity {self.capacity}")
        self.keys[layer][:, :, self.length : self.length + n] = k.transpose(1, 2)
        self.values[layer][:, :, self.length : self.length + n] = v.transpose(1, 2)
        self._pending = n

    def commit(self) -> None:
        """Make the staged tokens visible to the next pass (call once per pass, after every layer wrote)."""
        self.length += self._pending
        self._pending = 0

    @property
    def nbytes(self) -> int:
        """Bytes allocated for keys and values over all layers."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))
