"""Token and KV-cache accounting for baseline next-scale runs and MoSs plans.

Conventions (the ones the MoSs paper's Table 1 uses):

* *tokens processed* — every token that goes through the transformer in one generation (per image, per CFG
  branch);
* *KV-cache tokens* — the tokens held in the cache when the last forward pass runs, not counting that pass's own
  tokens. For the baseline that is every scale but the last (Infinity 1024²: 6,425); for MoSs it is the
  drafter's scales, because the MoSs stage adds nothing to the cache (Infinity k5: 921);
* *forward passes* — one per scale for the baseline; drafter scales plus one for MoSs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from moss_dispatch._checks import check_schedule


@dataclass(frozen=True)
class TokenAccount:
    """Per-generation token counts; ``tokens_per_pass[i]`` is what forward pass ``i`` processes."""

    tokens_per_pass: tuple[int, ...]
    kv_tokens: int

    @property
    def tokens_processed(self) -> int:
        return sum(self.tokens_per_pass)

    @property
    def forward_passes(self) -> int:
        return len(self.tokens_per_pass)

    def kv_cache_bytes(
        self, *, num_layers: int, kv_channels: int, batch_size: int = 1, bytes_per_element: int = 2
    ) -> int:
        """Bytes of this account's KV cache; see :func:`kv_cache_bytes`."""
        return kv_cache_bytes(
            self.kv_tokens,
            num_layers=num_layers,
            kv_channels=kv_channels,
            batch_size=batch_size,
            bytes_per_element=bytes_per_element,
        )


def scale_tokens(schedule: Sequence) -> list[int]:
    """Tokens of every scale of a schedule, ``h·w`` each."""
    return [h * w for h, w in check_schedule(schedule)]


def baseline_account(schedule: Sequence) -> TokenAccount:
    """The unmodified next-scale loop: one pass per scale; the last pass reads every earlier scale's KV."""
    per_scale = scale_tokens(schedule)
    return TokenAccount(tokens_per_pass=tuple(per_scale), kv_tokens=sum(per_scale[:-1]))


def kv_cache_bytes(
    num_tokens: int, *, num_layers: int, kv_channels: int, batch_size: int = 1, bytes_per_element: int = 2
) -> int:
    """Bytes of a K and V cache: ``2 · tokens · layers · channels · batch · bytes``.

    ``kv_channels`` is heads × head_dim of the cached keys (the model width for Infinity). With classifier-free
    guidance by batch doubling, pass ``batch_size = 2 · images``. ``bytes_per_element`` is 2 for bf16/fp16.
    """
    for name, value in (
        ("num_tokens", num_tokens),
        ("num_layers", num_layers),
        ("kv_channels", kv_channels),
        ("batch_size", batch_size),
        ("bytes_per_element", bytes_per_element),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return 2 * num_tokens * num_layers * kv_channels * batch_size * bytes_per_element
