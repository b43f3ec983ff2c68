"""A preallocated per-layer KV cache for next-scale generation.

Each layer holds one ``(B, H, capacity, D)`` buffer for keys and one for values, sized once for every token
that will ever be cached, so appending a scale writes in place instead of re-concatenating the whole cache
(the official loop re-allocates it every scale). Its size is the KV memory a run really holds, which is what
the accounting reports.

Layers may cache different numbers of tokens (FastVAR appends only the tokens a pruned layer kept), so every
layer has its own capacity and its own length. :meth:`KVCache.with_rows` is a view of some CFG rows that shares
the buffers and lengths (a pass that runs on the unconditional rows only reads and writes those).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch


class KVCache:
    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        head_dim: int,
        capacity: int | Sequence[int],
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        caps = [int(capacity)] * num_layers if isinstance(capacity, int) else [int(c) for c in capacity]
        if len(caps) != num_layers:
            raise ValueError(f"capacity has {len(caps)} entries for {num_layers} layers")
        self.keys = [
            torch.empty(batch_size, num_heads, c, head_dim, dtype=dtype, device=device) for c in caps
        ]
        self.values = [
            torch.empty(batch_size, num_heads, c, head_dim, dtype=dtype, device=device) for c in caps
        ]
        self.capacities = caps
        self._lengths = [
            0
        ] * num_layers  # tokens committed by finished passes, per layer (shared by row views)
        self._pending = [0] * num_layers  # tokens written by the pass in progress

    @property
    def capacity(self) -> int:
        return max(self.capacities, default=0)

    @property
    def length(self) -> int:
        """Committed tokens of the longest layer (every layer, unless a method cached fewer in some)."""
        return max(self._lengths, default=0)

    def layer_length(self, layer: int) -> int:
        return self._lengths[layer]

    def lengths(self) -> tuple[list[int], list[int]]:
        """The committed and staged token counts of every layer (host state; see :meth:`set_lengths`)."""
        return list(self._lengths), list(self._pending)

    def set_lengths(self, lengths, pending=None) -> None:
        """Set the host-side lengths, e.g. to empty a reused cache or after a captured pass was replayed (a
        replay writes the buffers but runs no Python). Row views share these lengths."""
        self._lengths[:] = [int(n) for n in lengths]
        self._pending[:] = [0] * len(self._lengths) if pending is None else [int(n) for n in pending]

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The committed ``(B, H, L, D)`` keys and values of one layer (views, no copy)."""
        n = self._lengths[layer]
        return self.keys[layer][:, :, :n], self.values[layer][:, :, :n]

    def slot(self, layer: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage ``n`` tokens after the committed ones of one layer and return their ``(B, H, n, D)`` key and
        value slots (views) for the pass to write into, e.g. straight from a fused kernel."""
        start = self._lengths[layer]
        if start + n > self.capacities[layer]:
            raise RuntimeError(
                f"KV cache overflow at layer {layer}: {start} + {n} tokens > capacity {self.capacities[layer]}"
            )
        self._pending[layer] = n
        return self.keys[layer][:, :, start : start + n], self.values[layer][:, :, start : start + n]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Stage a pass's ``(B, N, H, D)`` keys and values after the committed tokens of one layer."""
        k_slot, v_slot = self.slot(layer, k.shape[1])
        k_slot.copy_(k.transpose(1, 2))
        v_slot.copy_(v.transpose(1, 2))

    def joint(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The committed and the staged keys and values of one layer, ``(B, H, L + n, D)`` views: what a pass
        that wrote its own tokens first attends over, with nothing concatenated."""
        n = self._lengths[layer] + self._pending[layer]
        return self.keys[layer][:, :, :n], self.values[layer][:, :, :n]

    def commit(self) -> None:
        """Make the staged tokens visible to the next pass (call once per pass, after every layer wrote)."""
        for layer, n in enumerate(self._pending):
            self._lengths[layer] += n
            self._pending[layer] = 0

    def with_rows(self, rows: slice) -> KVCache:
        """A view of the CFG rows ``rows``: same buffers, same lengths (writes land in this cache)."""
        view = copy.copy(self)
        view.keys = [k[rows] for k in self.keys]
        view.values = [v[rows] for v in self.values]
        return view

    @property
    def nbytes(self) -> int:
        """Bytes allocated for keys and values over all layers."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))
