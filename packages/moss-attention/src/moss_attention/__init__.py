"""moss-attention: how the packed mixed-scale tokens of the MoSs stage attend.

* 2D RoPE for token sets that mix scales: schemes (:class:`InfinityRope2D`, by name via :func:`rope_scheme`),
  per-schedule cos/sin tables (:func:`precompute_rope_tables`, Triton :func:`precompute_rope_tables_triton`)
  and their application to q and k (:func:`apply_rope_2d`, Triton :func:`apply_rope_2d_triton`);
* HART's RoPE (:mod:`moss_attention.hart_rope`): 2D image-token angles (:func:`hart_scale_positions`,
  :func:`hart_rope_cos_sin`), 1D Llama context-token angles (:func:`llama_rope_cos_sin`), applied with
  ``rotate_half`` (:func:`apply_rope_rotate_half`, ``impl="torch"`` or ``"triton"``), and the Triton kernels
  that compute the angles on the fly for q and k in one launch (:func:`hart_rope_qk_triton`,
  :func:`llama_rope_qk_triton`; torch references :func:`hart_rope_qk`, :func:`llama_rope_qk`);
* :func:`mixed_scale_attention` over ``[drafter KV cache ++ packed tokens]`` in modes ``cssa`` and ``sa``, with
  backends ``sdpa``, ``flex`` and ``xformers`` chosen by name (:func:`available_backends`), Infinity's cosine
  attention as an option, and :class:`MixedScaleAttention` bundling a configuration.

The package owns no weights: the model supplies projections and learned scales. The Triton functions live in
:mod:`moss_attention.ops.rope_2d` and are imported lazily here, so that importing the package does not fix
Triton's interpreter mode (``TRITON_INTERPRET`` is read when kernels are defined); HART's in
:mod:`moss_attention.ops.rope_half`, likewise lazily.
"""

from typing import Any

from moss_attention.attention import (
    MODES,
    MixedScaleAttention,
    attention_mask,
    attention_over_cache,
    cosine_attention_qk,
    dense_attention_reference,
    mixed_scale_attention,
)
from moss_attention.backends import (
    AttentionBackend,
    BackendUnavailableError,
    available_backends,
    backend_names,
    get_backend,
    register_backend,
)
from moss_attention.hart_rope import (
    apply_rope_rotate_half,
    hart_rope_cos_sin,
    hart_rope_qk,
    hart_scale_positions,
    llama_rope_cos_sin,
    llama_rope_qk,
    rotate_half,
)
from moss_attention.qk import RopeAngles, cosine_multiplier, cosine_qk_rope, gather_rope_angles, qk_scale
from moss_attention.rope import RopeTables, apply_rope_2d, precompute_rope_tables, scale_positions
from moss_attention.schemes import (
    InfinityRope2D,
    RopeScheme,
    register_rope_scheme,
    rope_scheme,
    rope_scheme_names,
)

__version__ = "0.3.0"

_TRITON_EXPORTS = ("apply_rope_2d_triton", "precompute_rope_tables_triton", "cosine_qk_rope_triton")
_HART_TRITON_EXPORTS = ("apply_rope_rotate_half_triton", "hart_rope_qk_triton", "llama_rope_qk_triton")


def __getattr__(name: str) -> Any:
    if name == "cosine_qk_rope_triton":
        from moss_attention.ops import qk_rope

        return qk_rope.cosine_qk_rope_triton
    if name in _HART_TRITON_EXPORTS:
        from moss_attention.ops import rope_half

        return getattr(rope_half, name)
    if name in _TRITON_EXPORTS:
        from moss_attention.ops import rope_2d

        return getattr(rope_2d, name)
    raise AttributeError(f"module 'moss_attention' has no attribute {name!r}")


__all__ = [
    "MODES",
    "AttentionBackend",
    "BackendUnavailableError",
    "InfinityRope2D",
    "MixedScaleAttention",
    "RopeAngles",
    "RopeScheme",
    "RopeTables",
    "apply_rope_2d",
    "apply_rope_2d_triton",
    "apply_rope_rotate_half",
    "apply_rope_rotate_half_triton",
    "attention_mask",
    "attention_over_cache",
    "available_backends",
    "backend_names",
    "cosine_attention_qk",
    "cosine_multiplier",
    "cosine_qk_rope",
    "cosine_qk_rope_triton",
    "dense_attention_reference",
    "gather_rope_angles",
    "get_backend",
    "hart_rope_cos_sin",
    "hart_rope_qk",
    "hart_rope_qk_triton",
    "hart_scale_positions",
    "llama_rope_cos_sin",
    "llama_rope_qk",
    "llama_rope_qk_triton",
    "mixed_scale_attention",
    "precompute_rope_tables",
    "precompute_rope_tables_triton",
    "qk_scale",
    "register_backend",
    "register_rope_scheme",
    "rope_scheme",
    "rope_scheme_names",
    "rotate_half",
    "scale_positions",
]
