"""FLOPs of a call, counted by ``torch.utils.flop_counter.FlopCounterMode``.

What is counted (torch 2.15): matrix products (``mm``, ``bmm``, ``addmm``, ``baddbmm``, ``matmul`` via those),
convolutions, and attention — ``scaled_dot_product_attention`` on every SDPA backend torch dispatches to (on CPU
it arrives as ``aten._scaled_dot_product_flash_attention_for_cpu``; checked: ``4·B·H·Lq·Lk·D`` for the two
products) and ``flex_attention``. One FLOP is a multiply *or* an add, so ``(M×K)·(K×N)`` is ``2·M·N·K``.

What is not: elementwise work (norms, activations, softmax outside fused attention, RoPE), and anything that does
not go through an aten op — **Triton kernels and other custom kernels are invisible**. Masks are not exploited:
a masked SDPA or a block-sparse ``flex_attention`` is counted as dense attention over the full ``Lq × Lk`` (so
moss-attention's ``sa`` mode counts like ``cssa`` with ``sa_impl="mask"``, and exactly with ``sa_impl="loop"``).

Caveat seen on CPU: eager ``flex_attention`` (which moss-attention's ``flex`` backend uses off-CUDA) tries to
``torch.compile`` itself and fails under ``FlopCounterMode`` ("found no compiled frames"); count FLOPs with the
``sdpa`` backend, whose dense count is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class FlopCount:
    total: int  # FLOPs over every counted op
    by_op: dict[str, int]  # e.g. {"aten.mm": ..., "aten._scaled_dot_product_flash_attention_for_cpu": ...}
    output: Any = field(default=None, repr=False)  # what the call returned


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FlopCount:
    """Run ``fn(*args, **kwargs)`` once under ``FlopCounterMode(display=False)`` and return its FLOPs."""
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            out = fn(*args, **kwargs)
    except RuntimeError as err:
        if "compiled frames" in str(err):
            err.add_note(
                "moss_eval.count_flops: torch.compile'd code (e.g. eager flex_attention off-CUDA) cannot run under "
                "FlopCounterMode; count with the sdpa attention backend instead."
            )
        raise
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCount(total=int(counter.get_total_flops()), by_op=by_op, output=out)
