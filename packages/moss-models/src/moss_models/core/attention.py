"""One attention setting for every pass of a generation.

The drafter's scales, the baseline's scales and the packed MoSs stage all read the same :class:`AttentionSpec`:
how packed tokens attend (``mode``), which kernel runs it (``backend``, ``sa_impl``) and which RoPE
implementation rotates q and k (``rope_impl``). A single-scale pass attends the same way in both modes (all its
tokens are one scale), so the mode only changes what a packed pass computes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from moss_attention import MODES, backend_names

ROPE_IMPLS = ("torch", "triton")
SA_IMPLS = (None, "mask", "loop")


@dataclass(frozen=True)
class AttentionSpec:
    """How every self-attention of a generation runs.

    ``mode``: ``cssa`` (packed tokens see every packed token) or ``sa`` (only their own scale's); ``backend``: a
    moss-attention backend (``sdpa``, ``flex``, ``xformers``); ``sa_impl``: ``mask`` or ``loop`` for ``sa`` on
    sdpa (None: the backend's default); ``rope_impl``: ``torch`` (reference) or ``triton`` (fused kernels).
    """

    mode: str = "cssa"
    backend: str = "sdpa"
    sa_impl: str | None = None
    rope_impl: str = "torch"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"attention mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.backend not in backend_names():
            raise ValueError(
                f"attention backend must be one of {list(backend_names())}, got {self.backend!r}"
            )
        if self.sa_impl not in SA_IMPLS:
            raise ValueError(f"attention sa_impl must be one of {list(SA_IMPLS)}, got {self.sa_impl!r}")
        if self.rope_impl not in ROPE_IMPLS:
            raise ValueError(f"attention rope_impl must be one of {list(ROPE_IMPLS)}, got {self.rope_impl!r}")

    def with_(self, **changes) -> AttentionSpec:
        return replace(self, **changes)

    def for_dry_run(self) -> AttentionSpec:
        """The spec a meta-device dry run uses: the torch RoPE and the dense sdpa call of the same mode.

        Kernels cannot launch on meta tensors; the RoPE is elementwise (no FLOPs counted either way) and the
        attention FLOPs are those of the dense call over the same keys, which is what every backend computes.
        """
        return replace(self, backend="sdpa", rope_impl="torch")
