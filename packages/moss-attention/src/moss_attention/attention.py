"""Attention of the MoSs stage: packed mixed-scale queries over the drafter's KV cache plus themselves.

Shapes: q, k, v ``(B, N, H, D)`` — the packed tokens of all refine scales, as projected by the model;
k_cache, v_cache ``(B, H, L, D)`` — the drafter's cache (``L = 0`` or None: no cache). Output ``(B, N, H, D)``.

Cosine attention (Infinity): the NEW q and k are L2-normalised over D and q is multiplied by
``exp(min(scale_mul, ln 100))``; the softmax scale is then 1. Cached keys are NOT normalised here: Infinity
caches them already normalised (and rotated), and so must any caller. Rotation preserves norms, so
normalise-then-RoPE equals RoPE-then-normalise; :class:`MixedScaleAttention` normalises first, as Infinity does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from moss_attention.backends import SA_IMPLS, backend_names, get_backend, join_keys_values, sa_mask
from moss_attention.qk import cosine_multiplier
from moss_attention.rope import RopeTables, apply_rope_2d

MODES: tuple[str, ...] = ("cssa", "sa")
ROPE_IMPLS: tuple[str, ...] = ("auto", "triton", "torch")


def _check_scale_mul(scale_mul: torch.Tensor, heads: int) -> torch.Tensor:
    if not isinstance(scale_mul, torch.Tensor) or tuple(scale_mul.shape) not in ((heads,), (1, heads, 1, 1)):
        shape = tuple(scale_mul.shape) if isinstance(scale_mul, torch.Tensor) else type(scale_mul).__name__
        raise ValueError(f"cosine_scale_mul must have shape (H,) or (1, H, 1, 1) with H={heads}, got {shape}")
    return scale_mul.reshape(heads)


def cosine_attention_qk(
    q: torch.Tensor, k: torch.Tensor, scale_mul: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Infinity's cosine attention on ``(B, N, H, D)`` q and k: unit-norm rows, q scaled per head.

    ``scale_mul`` is the learned per-head log-scale, ``(H,)`` or Infinity's ``(1, H, 1, 1)``. Done in the
    inputs' dtype, as Infinity does, so results match its numerics.
    """
    multiplier = cosine_multiplier(_check_scale_mul(scale_mul, q.shape[2])).to(q.dtype)
    q = F.normalize(q, dim=-1, eps=1e-12) * multiplier[:, None]
    k = F.normalize(k, dim=-1, eps=1e-12)
    return q, k


def _check_attention_inputs(q, k, v, k_cache, v_cache, scale_ids, mode):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise ValueError(f"{name} must be a 4-D tensor (B, N, H, D), got {t!r:.80}")
    if k.shape != q.shape:
        raise ValueError(f"k must have q's shape (B, N, H, D) = {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must have q's (B, N, H) = {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    batch, packed, heads, dim = q.shape
    if (k_cache is None) != (v_cache is None):
        raise ValueError("k_cache and v_cache must both be given or both be None")
    if k_cache is None:
        k_cache = q.new_empty(batch, heads, 0, dim)
        v_cache = v.new_empty(batch, heads, 0, v.shape[3])
    for name, t, last in (("k_cache", k_cache, dim), ("v_cache", v_cache, v.shape[3])):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise ValueError(f"{name} must be a 4-D tensor (B, H, L, D), got {t!r:.80}")
        for axis, label, want in (
            (0, "batch size B", batch),
            (1, "head count H", heads),
            (3, "head dim D", last),
        ):
            if t.shape[axis] != want:
                raise ValueError(
                    f"{name} must have the {label} of q/v ({want}) in layout (B, H, L, D), got {tuple(t.shape)}"
                )
    if v_cache.shape[2] != k_cache.shape[2]:
        raise ValueError(
            f"k_cache and v_cache must have the same length L, got {k_cache.shape} and {v_cache.shape}"
        )
    for name, t in (("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(
                f"{name} must have q's dtype {q.dtype} and device {q.device}, got {t.dtype} {t.device}"
            )
    if scale_ids is None:
        if mode == "sa":
            raise ValueError("scale_ids (N,) is required for mode 'sa'")
    elif (
        not isinstance(scale_ids, torch.Tensor)
        or scale_ids.dtype.is_floating_point
        or scale_ids.dtype == torch.bool
        or tuple(scale_ids.shape) != (packed,)
    ):
        raise ValueError(
            f"scale_ids must be an integer tensor of shape (N,) = ({packed},), got {scale_ids!r:.80}"
        )
    elif scale_ids.device != q.device:
        raise ValueError(f"scale_ids must be on q's device {q.device}, got {scale_ids.device}")
    return k_cache, v_cache


def _resolve_sa_impl(backend, sa_impl: str | None) -> str:
    if sa_impl is None:
        return backend.sa_impls[0]
    if sa_impl not in SA_IMPLS:
        raise ValueError(f"sa_impl must be one of {SA_IMPLS} or None, got {sa_impl!r}")
    if sa_impl not in backend.sa_impls:
        raise ValueError(
            f"sa_impl {sa_impl!r} is not offered by backend {backend.name!r} (it has {backend.sa_impls})"
        )
    return sa_impl


def mixed_scale_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor | None = None,
    v_cache: torch.Tensor | None = None,
    scale_ids: torch.Tensor | None = None,
    *,
    mode: str = "cssa",
    backend: str = "sdpa",
    softmax_scale: float | None = None,
    cosine_scale_mul: torch.Tensor | None = None,
    sa_impl: str | None = None,
) -> torch.Tensor:
    """Attention of packed mixed-scale tokens over ``[KV cache ++ packed tokens]``.

    mode ``"cssa"``: every packed token sees the whole cache and every packed token (cross-scale).
    mode ``"sa"``: the whole cache and the packed tokens of its own scale (``scale_ids`` ``(N,)``; tokens of
    a scale need not be contiguous — backends that run per scale sort them and restore the order).
    ``softmax_scale`` defaults to ``1/sqrt(D)``; with ``cosine_scale_mul`` (per-head log-scale) the new q and
    k get Infinity's cosine attention and the softmax scale is 1 (give one or the other, not both).
    ``sa_impl``: ``"mask"`` or ``"loop"`` (sdpa only); None = the backend's default.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    attend = get_backend(backend)
    sa_impl = _resolve_sa_impl(attend, sa_impl)
    k_cache, v_cache = _check_attention_inputs(q, k, v, k_cache, v_cache, scale_ids, mode)
    if cosine_scale_mul is not None:
        if softmax_scale is not None:
            raise ValueError("softmax_scale must be None with cosine attention (its softmax scale is 1)")
        q, k = cosine_attention_qk(q, k, cosine_scale_mul)
        softmax_scale = 1.0
    elif softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[3])
    elif not isinstance(softmax_scale, int | float) or not softmax_scale > 0:
        raise ValueError(f"softmax_scale must be a positive number or None, got {softmax_scale!r}")
    keys, values = join_keys_values(k, v, k_cache, v_cache)
    return attend(
        q, keys, values, scale_ids, cache_len=k_cache.shape[2], mode=mode, scale=float(softmax_scale),
        sa_impl=sa_impl,
    )  # fmt: skip


def attention_over_cache(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    scale_ids: torch.Tensor | None = None,
    *,
    cache_len: int,
    mode: str = "cssa",
    backend: str = "sdpa",
    softmax_scale: float,
    sa_impl: str | None = None,
) -> torch.Tensor:
    """The hot-path form of :func:`mixed_scale_attention`: the pass's keys and values were already written after
    the cache, and ``keys``/``values`` ``(B, H, L + N, D)`` are a view of both, so nothing is concatenated.

    Only the arguments are checked, never tensor values: the caller validates its inputs once per generation.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    attend = get_backend(backend)
    sa_impl = _resolve_sa_impl(attend, sa_impl)
    if keys.ndim != 4 or keys.shape[2] != cache_len + q.shape[1] or values.shape[:3] != keys.shape[:3]:
        raise ValueError(
            f"keys and values must be (B, H, cache_len + N, D) with cache_len={cache_len} and N={q.shape[1]}, "
            f"got {tuple(keys.shape)} and {tuple(values.shape)}"
        )
    if mode == "sa" and scale_ids is None:
        raise ValueError("scale_ids (N,) is required for mode 'sa'")
    return attend(
        q, keys, values, scale_ids, cache_len=cache_len, mode=mode, scale=softmax_scale, sa_impl=sa_impl
    )


def attention_mask(scale_ids: torch.Tensor, cache_len: int, mode: str) -> torch.Tensor:
    """``(N, L + N)`` bool mask (True = may attend) that defines ``mode`` over ``[cache ++ packed]``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "sa":
        return sa_mask(scale_ids, cache_len)
    return torch.ones(
        scale_ids.shape[0], cache_len + scale_ids.shape[0], dtype=torch.bool, device=scale_ids.device
    )


def dense_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor | None,
    v_cache: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    softmax_scale: float | None = None,
    cosine_scale_mul: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain float64 attention with an explicit ``(N, L + N)`` mask: the yardstick for every backend."""
    q, k, v = q.double(), k.double(), v.double()
    if cosine_scale_mul is not None:
        q, k = cosine_attention_qk(q, k, cosine_scale_mul.double())
        softmax_scale = 1.0
    elif softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[3])
    keys, values = k.transpose(1, 2), v.transpose(1, 2)
    if k_cache is not None:
        keys = torch.cat([k_cache.double(), keys], dim=2)
        values = torch.cat([v_cache.double(), values], dim=2)
    scores = (q.transpose(1, 2) @ keys.transpose(2, 3)) * softmax_scale
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(dim=-1) @ values).transpose(1, 2)


@dataclass(frozen=True)
class MixedScaleAttention:
    """One MoSs-stage attention configuration: cosine option, optional 2D RoPE, mode and backend.

    Calling it runs, on the projected packed ``q, k, v``: cosine normalisation (if ``cosine``), RoPE from
    ``rope_tables`` (if given; needs ``rows``/``cols``), then :func:`mixed_scale_attention`. The returned
    rotated keys are what a caller would cache. ``rope_impl="auto"`` uses the Triton kernel for CUDA
    tensors and the torch reference otherwise (Triton cannot run on CPU without the interpreter).
    """

    mode: str = "cssa"
    backend: str = "sdpa"
    sa_impl: str | None = None
    softmax_scale: float | None = None
    cosine: bool = False
    rope_tables: RopeTables | None = None
    rope_impl: Literal["auto", "triton", "torch"] = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.backend not in backend_names():
            raise ValueError(f"backend must be one of {backend_names()}, got {self.backend!r}")
        if self.sa_impl is not None and self.sa_impl not in SA_IMPLS:
            raise ValueError(f"sa_impl must be one of {SA_IMPLS} or None, got {self.sa_impl!r}")
        if self.rope_impl not in ROPE_IMPLS:
            raise ValueError(f"rope_impl must be one of {ROPE_IMPLS}, got {self.rope_impl!r}")
        if self.cosine and self.softmax_scale is not None:
            raise ValueError("softmax_scale must be None with cosine attention (its softmax scale is 1)")
        if self.rope_tables is not None and not isinstance(self.rope_tables, RopeTables):
            raise ValueError(f"rope_tables must be RopeTables or None, got {type(self.rope_tables).__name__}")

    def _rope(self, q: torch.Tensor):
        if self.rope_impl == "torch" or (self.rope_impl == "auto" and not q.is_cuda):
            return apply_rope_2d
        from moss_attention.ops.rope_2d import apply_rope_2d_triton, interpreted

        if not q.is_cuda and not interpreted():
            raise ValueError("rope_impl 'triton' needs CUDA tensors, or TRITON_INTERPRET=1 on CPU")
        return apply_rope_2d_triton

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor | None = None,
        v_cache: torch.Tensor | None = None,
        scale_ids: torch.Tensor | None = None,
        *,
        rows: torch.Tensor | None = None,
        cols: torch.Tensor | None = None,
        scale_mul: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(out, k)``: the attention output and the packed keys as attended (normalised, rotated)."""
        if self.cosine != (scale_mul is not None):
            raise ValueError("scale_mul must be given exactly when cosine=True")
        if self.cosine:
            q, k = cosine_attention_qk(q, k, scale_mul)
        if self.rope_tables is not None:
            if scale_ids is None or rows is None or cols is None:
                raise ValueError("scale_ids, rows and cols are required when rope_tables is set")
            q, k = self._rope(q)(q, k, self.rope_tables, scale_ids, rows, cols)
        out = mixed_scale_attention(
            q,
            k,
            v,
            k_cache,
            v_cache,
            scale_ids,
            mode=self.mode,
            backend=self.backend,
            softmax_scale=1.0 if self.cosine else self.softmax_scale,
            sa_impl=self.sa_impl,
        )
        return out, k
