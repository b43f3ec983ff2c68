"""Query/key preparation of one pass, done once per pass where it can be: the RoPE gather and cosine attention.

A transformer pass applies the same 2D RoPE angles in every layer (the tokens' positions do not change between
layers), so :func:`gather_rope_angles` gathers them once per pass, laid out for a single multiply-add:
``rotated = x · cos + swap(x) · sin`` with ``swap`` exchanging the two members of every rotary pair and the sign
folded into ``sin``. :func:`cosine_qk_rope` then does, for q and k together, what Infinity's self-attention does
to them: L2-normalise over the head dim, multiply q by its per-head scale, rotate, cast. It is the torch reference
of the fused Triton kernel (:func:`moss_attention.cosine_qk_rope_triton`) and gives, bit for bit, what
:func:`~moss_attention.cosine_attention_qk` followed by :func:`~moss_attention.apply_rope_2d` gives: the negation
is exact and the two products of each output are added in the same order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from moss_attention.rope import RopeTables, table_rows
from moss_attention.schemes import Pairing

MAX_LOG_SCALE = math.log(100.0)  # Infinity clamps the learned log-scale at ln 100


@dataclass(frozen=True)
class RopeAngles:
    """The RoPE angles of one pass's tokens, ``(B, N, 1, D)`` float32 each, broadcast over heads.

    ``cos`` holds each pair's cosine at both members; ``sin`` holds ``−sin`` at the first member and ``+sin`` at
    the second, so that ``x · cos + swap(x) · sin`` is the rotation.
    """

    cos: torch.Tensor
    sin: torch.Tensor
    pairing: Pairing

    def swap(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the two members of every rotary pair exchanged (last dim)."""
        # stack of the two members, not flip: flip is a slow generic kernel on CPU (about 5x a stack here)
        d = x.shape[-1]
        if self.pairing == "interleaved":
            pairs = x.unflatten(-1, (d // 2, 2))
            return torch.stack((pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return torch.cat((x[..., d // 2 :], x[..., : d // 2]), dim=-1)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate the float32 ``x`` ``(B, N, ..., D)`` (its dims after N broadcast against ``(1, D)``)."""
        cos, sin = self.cos, self.sin
        extra = x.ndim - cos.ndim
        if extra:  # e.g. q and k stacked on a dim before the heads
            cos = cos.reshape(*cos.shape[:2], *([1] * extra), *cos.shape[2:])
            sin = sin.reshape(*sin.shape[:2], *([1] * extra), *sin.shape[2:])
        return (x * cos).add_(self.swap(x) * sin)


def gather_rope_angles(
    tables: RopeTables,
    scale_ids: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    batch: int | None = None,
) -> RopeAngles:
    """The angles of a pass's tokens: ``scale_ids`` ``(N,)`` and ``rows``/``cols`` ``(N,)`` or ``(B, N)`` on each
    token's own scale grid. Nothing is read back from the device (positions are trusted: see
    :func:`~moss_attention.apply_rope_2d` with ``check_bounds`` for a checked call)."""
    b = batch if batch is not None else (rows.shape[0] if rows.ndim == 2 else 1)
    n = scale_ids.shape[-1]
    index = table_rows(tables, scale_ids.expand(b, n), rows.expand(b, n), cols.expand(b, n))
    cos, sin = tables.cos[index], tables.sin[index]  # (B, N, P)
    if tables.pairing == "interleaved":
        cos2 = torch.stack((cos, cos), dim=-1).flatten(-2)
        sin2 = torch.stack((-sin, sin), dim=-1).flatten(-2)
    else:
        cos2 = torch.cat((cos, cos), dim=-1)
        sin2 = torch.cat((-sin, sin), dim=-1)
    return RopeAngles(cos2.unsqueeze(2), sin2.unsqueeze(2), tables.pairing)


def cosine_multiplier(scale_mul: torch.Tensor) -> torch.Tensor:
    """Infinity's per-head q multiplier ``exp(min(scale_mul, ln 100))`` as ``(H,)`` float32, computed in the
    parameter's own dtype (bf16 in the releases' blocks) as Infinity does, then widened."""
    return scale_mul.reshape(-1).clamp_max(MAX_LOG_SCALE).exp().float()


def cosine_qk_rope(
    qk: torch.Tensor,
    multiplier: torch.Tensor,
    angles: RopeAngles,
    out_dtype: torch.dtype | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Torch reference: q and k stacked as ``qk`` ``(B, N, 2, H, D)`` (any dtype; e.g. a view of the qkv
    projection) → normalised over D in float32, q multiplied by ``multiplier`` ``(H,)`` (or its
    :func:`qk_scale`), rotated by ``angles``,
    cast to ``out_dtype`` (default: ``qk``'s). Returns ``(B, N, 2, H, D)``; ``[:, :, 0]`` is q, ``[:, :, 1]`` k.
    """
    x = qk.float()
    # out of place: autograd saves the norm for its backward (training the testbed differentiates through this)
    x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)
    scale = multiplier if multiplier.ndim == 3 else qk_scale(multiplier)
    return angles.rotate(x * scale).to(out_dtype or qk.dtype)


def qk_scale(multiplier: torch.Tensor) -> torch.Tensor:
    """``(2, H, 1)`` float32: q's per-head multiplier and k's 1, one multiply for q and k stacked (``x · 1`` is
    exact). :func:`cosine_qk_rope` takes it in place of the ``(H,)`` multiplier, to build it once."""
    m = multiplier.float()
    return torch.stack((m, torch.ones_like(m)))[:, :, None]
