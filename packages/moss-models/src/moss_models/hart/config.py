"""HART transformer configurations: read from the release's ``llm/config.json``, or registered by name.

The official ``HARTForT2IConfig`` (mit-han-lab/hart@e28a41f, ``hart/modules/models/transformer/configuration.py``)
has many switches; the release runs one combination of them, and this re-implementation supports exactly that
one: Llama-style blocks (``attn_type = mlp_type = "llama"``: weighted RMSNorm, SwiGLU, RoPE), no AdaLN inside the
blocks (``disable_aln=True``, ``shared_aln=False``), no cross-attention, a level embedding (not a timestep
embedding). :func:`config_from_llm_json` refuses any other value of these switches with the key and the value, and
reads the fields that do vary (``depth``, ``embed_dim``, ``num_heads``, ``attn_l2_norm``, ``use_context_norm``,
``context_token``, ``patch_nums``, …) from the file.

The registered ``hart_0.7b`` is what the reference notes infer for ``mit-han-lab/hart-0.7b-1024px``
(hart_var_fastvar.md §A.1: depth 24, width 1536, 24 heads, 300 context tokens of width 1536, 14 scales at 1024²);
a release folder's own ``config.json`` overrides it when the model is loaded. ``hart_tiny`` is the same code and
key names at a size that runs on a CPU in milliseconds.

Precision: the release weights are fp32; the official ``sample.py`` runs them under CUDA
``torch.autocast(float16)``. ``block_dtype`` is the dtype the weights are kept in, ``autocast_dtype`` the dtype a
CUDA run autocasts to.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

#: HART's 1024² schedule (14 scales); the 1×1 scale is replaced by the text context
PATCH_NUMS_1024 = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
#: the tiny config's schedule: 8 scales (the context replaces the first; top-k 600 before scale 7, 300 from it), 128²
PATCH_NUMS_TINY = (1, 2, 3, 4, 5, 6, 7, 8)

#: the ways the residual diffusion head applies to a packed MoSs stage (see HARTFamily)
REFINE_DIFFUSION = ("last_scale", "every_refine_scale")

# The switches of HARTForT2IConfig that the release sets one way and this re-implementation supports only that
# way: key -> (value, what another value would need)
_FIXED_SWITCHES: dict[str, tuple[Any, str]] = {
    "attn_type": ("llama", "GPT-2 blocks with absolute positions (pos_start, pos_1LC)"),
    "mlp_type": ("llama", "a GELU MLP"),
    "disable_aln": (True, "per-block AdaLN (ada_lin in every block)"),
    "shared_aln": (False, "the shared scale_shift_table AdaLN"),
    "use_cross_attn": (False, "cross-attention to the context in every block"),
    "use_timestep_embed": (False, "a timestep embedding in place of lvl_embed"),
}


@dataclass(frozen=True)
class HARTConfig:
    """One HART transformer (``HARTForT2I``) and the tokens around it."""

    name: str
    depth: int
    embed_dim: int
    num_heads: int
    patch_nums: tuple[int, ...] = PATCH_NUMS_1024
    context_token: int = 300  # text tokens, padded to exactly this many; they replace the 1×1 scale
    context_dim: int = 1536  # the text encoder's hidden size (Qwen2-1.5B)
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    attn_l2_norm: bool = False  # True: L2-normalised q/k with a learned per-head scale (scale_mul_1H11)
    use_context_norm: bool = False  # True: an RMSNorm (context_norm.weight) on the text features first
    context_norm_scale: float = 1.0
    diff_width: int = 1024
    diff_depth: int = 6
    num_sampling_steps: str = "8"  # the diffusion head's respaced steps (a string, as the official config)
    vocab_size: int = 4096  # the hybrid tokenizer's codebook
    d_vae: int = 32  # Cvae: channels of one code
    rope_base: float = 10000.0
    block_dtype: torch.dtype = torch.float32
    autocast_dtype: torch.dtype | None = torch.float16  # the official sample.py's CUDA autocast
    # the tokenizer's HARTTokenizerConfig (moss_models.hart.tokenizer); None: the one the loader reads
    tokenizer: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for key in ("depth", "embed_dim", "num_heads", "context_token", "context_dim", "vocab_size", "d_vae"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HART config {key}={value!r}: must be a positive int")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"HART config embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}"
            )
        if self.head_dim % 4:
            raise ValueError(
                f"HART config head_dim={self.head_dim} (embed_dim/num_heads) must be a multiple of 4: HART's 2D "
                "RoPE gives each axis head_dim/4 frequencies"
            )
        pns = tuple(self.patch_nums)
        if len(pns) < 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in pns):
            raise ValueError(f"HART config patch_nums={pns}: need at least two positive int grid sizes")
        if pns[0] != 1 or list(pns) != sorted(pns):
            raise ValueError(
                f"HART config patch_nums={pns}: must start at 1 (the scale the text context replaces) and grow"
            )
        object.__setattr__(self, "patch_nums", pns)
        object.__setattr__(self, "num_sampling_steps", str(self.num_sampling_steps))

    # ------------------------------------------------------------------------------------------ derived

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn_hidden(self) -> int:
        """The SwiGLU width: ``int(C·mlp_ratio·2/3 + 255) // 256 · 256`` (the official LlamaMLP rule)."""
        return int((self.embed_dim * self.mlp_ratio * 2) / 3 + 255) // 256 * 256

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def num_tokens(self) -> int:
        """The full sequence: the context plus every token of the scales after the first (official ``L + 299``)."""
        return self.context_token + sum(p * p for p in self.patch_nums[1:])

    @property
    def grid(self) -> int:
        """The largest scale's side: positions are in its units, and the latent lives on it."""
        return self.patch_nums[-1]

    @property
    def resolution(self) -> int:
        """Image side: the tokenizer downsamples ×16."""
        return 16 * self.grid

    def with_(self, **changes) -> HARTConfig:
        return replace(self, **changes)


def config_from_llm_json(data: dict, *, name: str, base: HARTConfig | None = None, **extra) -> HARTConfig:
    """The config of a release's ``llm/config.json`` (``data``, already parsed).

    Fields the file gives replace ``base``'s (default: the registered ``hart_0.7b``); the switches this
    re-implementation does not support are refused, naming the key, the value and what is supported.
    """
    what = f"{name}: llm/config.json"
    model_type = data.get("model_type", "hart_transformer_t2i")
    if model_type != "hart_transformer_t2i":
        raise ValueError(
            f"{what} has model_type={model_type!r}; only 'hart_transformer_t2i' (HARTForT2I) is supported"
        )
    for key, (want, other) in _FIXED_SWITCHES.items():
        if key in data and data[key] != want:
            raise ValueError(
                f"{what} sets {key}={data[key]!r}; only {key}={want!r} (the released HART) is supported — another "
                f"value means {other}, which this re-implementation does not build"
            )
    pooling = data.get("sep_aln_pooling_mode", "max")
    if pooling != "max":
        # only the head's AdaLN pools the context here, and it max-pools whatever this says (official code)
        raise ValueError(f"{what} sets sep_aln_pooling_mode={pooling!r}; only 'max' is supported")
    base = base or HART_CONFIGS["hart_0.7b"]
    fields = {
        "depth": int,
        "embed_dim": int,
        "num_heads": int,
        "context_token": int,
        "context_dim": int,
        "mlp_ratio": float,
        "norm_eps": float,
        "attn_l2_norm": bool,
        "use_context_norm": bool,
        "context_norm_scale": float,
        "diff_width": int,
        "diff_depth": int,
        "num_sampling_steps": str,
    }
    changes: dict[str, Any] = {"name": name}
    for key, kind in fields.items():
        if key in data and data[key] is not None:
            changes[key] = kind(data[key])
    if "patch_nums" in data:
        changes["patch_nums"] = tuple(int(p) for p in data["patch_nums"])
    sampler = data.get("sampler", "iddpm")
    if sampler != "iddpm":
        raise ValueError(f"{what} sets sampler={sampler!r}; only 'iddpm' (the official default) is supported")
    return base.with_(**changes, **extra)


HART_CONFIGS: dict[str, HARTConfig] = {
    # mit-han-lab/hart-0.7b-1024px as inferred in hart_var_fastvar.md §A.1; the folder's config.json wins
    "hart_0.7b": HARTConfig("hart_0.7b", depth=24, embed_dim=1536, num_heads=24),
    # the official-code fixture's config (tests/models/fixtures/hart_tiny): every code path and key name of the
    # release (text prefix, 1D and 2D RoPE, SwiGLU, the head, the diffusion MLP), a few hundred kB
    "hart_tiny": HARTConfig(
        "hart_tiny",
        depth=2,
        embed_dim=64,
        num_heads=4,
        patch_nums=PATCH_NUMS_TINY,
        context_token=8,
        context_dim=32,
        diff_width=32,
        diff_depth=2,
        vocab_size=1024,
        d_vae=8,
    ),
}


def get_hart_config(name: str, **overrides) -> HARTConfig:
    """A registered config by name, optionally with fields replaced."""
    if name not in HART_CONFIGS:
        raise ValueError(f"unknown HART config {name!r}; choose one of {sorted(HART_CONFIGS)}")
    cfg = HART_CONFIGS[name]
    return cfg.with_(**overrides) if overrides else cfg
