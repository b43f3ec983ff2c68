"""Attention backends for the MoSs stage, chosen by name through a registry.

Every backend computes the same thing (see :func:`moss_attention.mixed_scale_attention`): queries are the
packed tokens ``(B, N, H, D)``; keys/values are the drafter's cache ``(B, H, L, D)`` followed by the packed
tokens. Mode ``cssa``: every packed token sees all of them. Mode ``sa``: the whole cache plus the packed tokens
of its own scale.

=========== ======================================================= ==========================================
name        how                                                     ``sa`` implementations (``sa_impl``)
=========== ======================================================= ==========================================
``sdpa``    ``torch.nn.functional.scaled_dot_product_attention``    ``"mask"`` one masked call (default);
                                                                    ``"loop"`` one call per scale (the paper's SA)
``flex``    ``flex_attention`` + ``create_block_mask``              ``"mask"`` (block mask); compiled on CUDA,
                                                                    eager elsewhere (torch warns)
``xformers`` ``memory_efficient_attention`` + ``BlockDiagonalMask`` ``"mask"`` (block diagonal over scales);
                                                                    CUDA + a working xformers only
=========== ======================================================= ==========================================
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

SA_IMPLS: tuple[str, ...] = ("mask", "loop")
INSTALL_XFORMERS = "pip install 'moss-attention[xformers]' (or: uv pip install 'moss-attention[xformers]')"


class BackendUnavailableError(RuntimeError):
    """A known backend was requested but cannot run here (missing package, no CUDA, failed probe)."""


@runtime_checkable
class AttentionBackend(Protocol):
    """A backend gets validated inputs with the keys and values already joined: the cache first, then the pass's
    own tokens, so a caller that wrote the pass's keys into its preallocated cache attends over a view of it with
    no copy. ``scale`` is already resolved (never None)."""

    name: str
    sa_impls: tuple[str, ...]  # the first one is the default

    def unavailable_reason(self) -> str | None:
        """None if the backend can run here, else a sentence saying why not and how to fix it."""
        ...

    def __call__(
        self,
        q: torch.Tensor,  # (B, N, H, D)
        keys: torch.Tensor,  # (B, H, L + N, D): the cache (L may be 0), then the N packed tokens
        values: torch.Tensor,  # (B, H, L + N, Dv)
        scale_ids: torch.Tensor | None,  # (N,), required for mode "sa"
        *,
        cache_len: int,  # L
        mode: str,
        scale: float,
        sa_impl: str,
    ) -> torch.Tensor:  # (B, N, H, Dv)
        ...


# ----------------------------------------------------------------------------------------------- mask helpers


def sa_mask(scale_ids: torch.Tensor, cache_len: int) -> torch.Tensor:
    """``(N, L + N)`` bool, True = may attend: the whole cache, then the packed tokens of the same scale."""
    same_scale = scale_ids[:, None] == scale_ids[None, :]
    cache = torch.ones(scale_ids.shape[0], cache_len, dtype=torch.bool, device=scale_ids.device)
    return torch.cat([cache, same_scale], dim=1)


def scale_runs(scale_ids: torch.Tensor) -> list[tuple[int, int]] | None:
    """``[(start, end), ...]`` if every scale's packed tokens are one contiguous run, else None."""
    values, counts = torch.unique_consecutive(scale_ids, return_counts=True)
    if values.unique().numel() != values.numel():
        return None
    ends = torch.cumsum(counts, 0).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


def group_by_scale(
    scale_ids: torch.Tensor,
) -> tuple[list[tuple[int, int]], torch.Tensor | None]:
    """Runs of each scale, after a stable sort by scale if the packing is not contiguous per scale.

    Returns ``(runs, order)``: ``order`` is None for contiguous packing, else the permutation of the packed
    tokens (apply it with ``x[:, order]``, undo it with ``out[:, order] = y``).
    """
    runs = scale_runs(scale_ids)
    if runs is not None:
        return runs, None
    order = torch.sort(scale_ids, stable=True).indices
    runs = scale_runs(scale_ids[order])
    assert runs is not None  # sorted ids are contiguous by construction
    return runs, order


def _unsort(out: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """Undo :func:`group_by_scale`'s permutation of the packed axis (dim 1)."""
    if order is None:
        return out
    unsorted = torch.empty_like(out)
    unsorted[:, order] = out
    return unsorted


def join_keys_values(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cache-then-packed keys and values in ``(B, H, L + N, D)`` (a copy; callers with a preallocated cache
    write the packed keys into it instead and pass a view)."""
    return torch.cat([k_cache, k.transpose(1, 2)], dim=2), torch.cat([v_cache, v.transpose(1, 2)], dim=2)


def _own_scale_keys(keys: torch.Tensor, cache_len: int, start: int, end: int) -> torch.Tensor:
    """The cache and the packed tokens ``start:end`` of a joined ``(B, H, L + N, D)`` tensor."""
    return torch.cat([keys[:, :, :cache_len], keys[:, :, cache_len + start : cache_len + end]], dim=2)


# ---------------------------------------------------------------------------------------------------- sdpa


class SdpaBackend:
    name = "sdpa"
    sa_impls = ("mask", "loop")

    def unavailable_reason(self) -> str | None:
        return None

    def __call__(self, q, keys, values, scale_ids, *, cache_len, mode, scale, sa_impl):
        if mode == "cssa" or sa_impl == "mask":
            mask = None if mode == "cssa" else sa_mask(scale_ids, cache_len)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask, scale=scale)
            return out.transpose(1, 2)
        # One call per scale, as the paper's SA runs it: each scale's queries see the cache and its own keys.
        runs, order = group_by_scale(scale_ids)
        if order is not None:  # sort the packed keys with the queries; the cache stays first
            q = q[:, order]
            perm = torch.cat([torch.arange(cache_len, device=order.device), cache_len + order])
            keys, values = keys[:, :, perm], values[:, :, perm]
        out = q.new_empty(*q.shape[:3], values.shape[3])
        for start, end in runs:
            part = F.scaled_dot_product_attention(
                q[:, start:end].transpose(1, 2),
                _own_scale_keys(keys, cache_len, start, end),
                _own_scale_keys(values, cache_len, start, end),
                scale=scale,
            )
            out[:, start:end] = part.transpose(1, 2)
        return _unsort(out, order)


# ---------------------------------------------------------------------------------------------------- flex


@functools.cache
def _compiled_flex_attention() -> Callable[..., torch.Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    # Compiled once per process; the block mask, not the function, changes between calls.
    return torch.compile(flex_attention, dynamic=False)


class FlexBackend:
    """``flex_attention`` with a block mask; compiled on CUDA, eager (unfused, torch warns) on other devices."""

    name = "flex"
    sa_impls = ("mask",)

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
            return f"torch {torch.__version__} has no torch.nn.attention.flex_attention (needs torch >= 2.5)"
        return None

    def __call__(self, q, keys, values, scale_ids, *, cache_len, mode, scale, sa_impl):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        block_mask = None
        if mode == "sa":
            packed = q.shape[1]
            ids = scale_ids.to(torch.int32)
            kv_ids = torch.cat([torch.full((cache_len,), -1, dtype=torch.int32, device=ids.device), ids])

            def same_scale_or_cache(b, h, q_idx, kv_idx):
                return (kv_idx < cache_len) | (ids[q_idx] == kv_ids[kv_idx])

            block_mask = create_block_mask(
                same_scale_or_cache, None, None, packed, cache_len + packed, device=q.device
            )
        attend = _compiled_flex_attention() if q.is_cuda else flex_attention
        out = attend(q.transpose(1, 2), keys, values, block_mask=block_mask, scale=scale)
        return out.transpose(1, 2)


# ------------------------------------------------------------------------------------------------ xformers


@functools.cache
def _xformers_unavailable_reason() -> str | None:
    if importlib.util.find_spec("xformers") is None:
        return "xformers is not installed"
    if not torch.cuda.is_available():
        return "xformers' memory_efficient_attention needs a CUDA GPU and none is available"
    # A successful import proves nothing (it imports even when its kernels cannot load): probe a real call.
    try:
        import xformers.ops as xops

        probe = torch.zeros(1, 8, 1, 16, device="cuda", dtype=torch.float16)
        bias = xops.fmha.attn_bias.BlockDiagonalMask.from_seqlens([3, 5], [4, 4])
        xops.memory_efficient_attention(probe, probe, probe, attn_bias=bias)
        torch.cuda.synchronize()
    except Exception as error:
        return f"the xformers probe call failed ({type(error).__name__}: {error})"
    return None


class XformersBackend:
    """``memory_efficient_attention``; ``sa`` packs each scale as its own (cache ++ scale) sequence."""

    name = "xformers"
    sa_impls = ("mask",)

    def unavailable_reason(self) -> str | None:
        reason = _xformers_unavailable_reason()
        if reason is None:
            return None
        return f"{reason}. The xformers backend needs a CUDA GPU and a working xformers: {INSTALL_XFORMERS}"

    def __call__(self, q, keys, values, scale_ids, *, cache_len, mode, scale, sa_impl):
        import xformers.ops as xops

        if not q.is_cuda:
            raise ValueError(f"backend 'xformers' needs CUDA tensors, got q on {q.device}")
        keys, values = keys.transpose(1, 2), values.transpose(1, 2)  # xformers wants (B, L + N, H, D)
        if mode == "cssa":
            return xops.memory_efficient_attention(q, keys, values, scale=scale)
        runs, order = group_by_scale(scale_ids)
        if order is not None:
            q = q[:, order]
            perm = torch.cat([torch.arange(cache_len, device=order.device), cache_len + order])
            keys, values = keys[:, perm], values[:, perm]
        batch, packed, heads, _ = q.shape
        k_cache, v_cache = keys[:, :cache_len], values[:, :cache_len]
        k, v = keys[:, cache_len:], values[:, cache_len:]
        # Sequence (b, s) = queries of scale s of image b; its keys = image b's cache ++ its scale's tokens.
        keys = torch.cat([t for a, e in runs for t in (k_cache, k[:, a:e])], dim=1)
        values = torch.cat([t for a, e in runs for t in (v_cache, v[:, a:e])], dim=1)
        counts = [e - a for a, e in runs]
        bias = xops.fmha.attn_bias.BlockDiagonalMask.from_seqlens(
            q_seqlen=counts * batch, kv_seqlen=[cache_len + c for c in counts] * batch
        )
        out = xops.memory_efficient_attention(
            q.reshape(1, batch * packed, heads, -1),
            keys.reshape(1, -1, heads, keys.shape[-1]),
            values.reshape(1, -1, heads, values.shape[-1]),
            attn_bias=bias,
            scale=scale,
        ).reshape(batch, packed, heads, -1)
        return _unsort(out, order)


# ---------------------------------------------------------------------------------------------------- registry

_BACKENDS: dict[str, AttentionBackend] = {}


def register_backend(backend: AttentionBackend) -> AttentionBackend:
    """Add (or replace) a backend under ``backend.name``."""
    if not isinstance(backend, AttentionBackend) or not backend.sa_impls:
        raise ValueError(f"backend must implement the AttentionBackend protocol, got {backend!r}")
    _BACKENDS[backend.name] = backend
    return backend


for _backend in (SdpaBackend(), FlexBackend(), XformersBackend()):
    register_backend(_backend)


def backend_names() -> tuple[str, ...]:
    """Every registered backend, available here or not."""
    return tuple(_BACKENDS)


def available_backends() -> tuple[str, ...]:
    """The registered backends that can run on this machine now."""
    return tuple(name for name, backend in _BACKENDS.items() if backend.unavailable_reason() is None)


def get_backend(name: str) -> AttentionBackend:
    """The backend called ``name``; ValueError if unknown, BackendUnavailableError if it cannot run here."""
    try:
        backend = _BACKENDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"backend must be one of {backend_names()}, got {name!r}") from None
    reason = backend.unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    return backend
