"""One attention setting for every pass of a generation.

The drafter's scales, the baseline's scales and the packed MoSs stage all read the same :class:`AttentionSpec`:
how packed tokens attend (``mode``), which kernel runs it (``backend``, ``sa_impl``) and which RoPE
implementation rotates q and k (``rope_impl``). A single-scale pass attends the same way in both modes (all its
tokens are one scale), so the mode only changes what a packed pass computes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch.nn.functional as F

from moss_attention import MODES, attention_over_cache, backend_names, mixed_scale_attention

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


def scale_self_attention(q, k, v, *, layer: int, spec, scale: float):
    """Self-attention of one pass's tokens over the KV cache and themselves, ``(B, N, H, D)`` in and out.

    The three ways a pass attends, shared by the families whose q and k are final before the cache (VAR, HART):

    * ``spec.causal_scale_mask``: a whole-sequence forward (the training-style block-causal mask, no cache);
    * a pass that appends to a cache of q's dtype: k and v are written into their slot first and the pass attends
      over a view of the cache (:func:`~moss_attention.attention_over_cache`, no concatenation);
    * otherwise (a packed MoSs stage that appends nothing, or a cache of another dtype): the cache is read and the
      pass attends to it and to its own tokens with the spec's mode (:func:`~moss_attention.mixed_scale_attention`),
      then appends if asked.
    """
    cache, attention, n = spec.cache, spec.attention, q.shape[1]
    if spec.causal_scale_mask is not None:
        return F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=spec.causal_scale_mask,
            scale=scale,
        ).transpose(1, 2)  # fmt: skip
    if cache is not None and spec.append and cache.keys[layer].dtype == v.dtype:
        k_slot, v_slot = cache.slot(layer, n)
        k_slot.copy_(k.transpose(1, 2))
        v_slot.copy_(v.transpose(1, 2))
        keys, values = cache.joint(layer)
        return attention_over_cache(
            q, keys, values, spec.scale_ids, cache_len=cache.layer_length(layer), mode=attention.mode,
            backend=attention.backend, softmax_scale=scale, sa_impl=attention.sa_impl,
        )  # fmt: skip
    k_cache = v_cache = None
    if cache is not None:
        k_cache, v_cache = cache.read(layer)
        k_cache, v_cache = k_cache.to(v.dtype), v_cache.to(v.dtype)
    out = mixed_scale_attention(
        q, k, v, k_cache, v_cache, spec.scale_ids, mode=attention.mode, backend=attention.backend,
        softmax_scale=scale, sa_impl=attention.sa_impl,
    )  # fmt: skip
    if spec.append:
        cache.write(layer, k, v)
    return out
