"""Load HART's release (``mit-han-lab/hart-0.7b-1024px`` and its Qwen2 text encoder) and build the registry's models.

The release layout under the checkpoint root (``$MOSS_CHECKPOINTS`` or ``paths.checkpoints``)::

    hart-0.7b-1024px/llm/config.json          the transformer's HARTForT2IConfig (read: depth, heads, switches, …)
    hart-0.7b-1024px/llm/ema_model.bin        its EMA weights (what sample.py uses by default), a plain state dict
    hart-0.7b-1024px/tokenizer/config.json    the hybrid tokenizer (moss_models.hart.tokenizer)
    hart-0.7b-1024px/tokenizer/model.safetensors (or pytorch_model.bin)
    Qwen2-VL-1.5B-Instruct/                   the text encoder (transformers folder: config, tokenizer, weights)

``ema_model.bin`` is read with ``torch.load(weights_only=True)``. The release saves three buffers that are functions
of the schedule (:data:`~moss_models.hart.transformer.DERIVED_KEYS` and every block's ``attn.zero_k_bias``); they are
checked (``lvl_1L`` equal to the recomputed one, the mask's shape, the zero biases zero) and dropped, never loaded
(the mask alone is 380 MB). Every other key is required with its shape; differing keys are listed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from moss_models.core.checkpoints import (
    CHECKPOINT_ENV,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    check_state_dict,
    checkpoint_root,
    load_into,
    load_state_dict,
)
from moss_models.hart.config import HARTConfig, config_from_llm_json, get_hart_config
from moss_models.hart.transformer import DERIVED_BLOCK_KEY, DERIVED_KEYS, HARTTransformer, level_ids

RELEASE_FOLDER = "hart-0.7b-1024px"
TEXT_ENCODER_FOLDER = "Qwen2-VL-1.5B-Instruct"
TOKENIZER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def release_paths(name: str, root: str | Path | None = None) -> dict[str, Path]:
    """The release files of ``name`` under the checkpoint root; raises :class:`CheckpointNotFoundError` naming
    every missing one in one paragraph, before anything is built."""
    base = checkpoint_root(root)
    model_dir = base / RELEASE_FOLDER
    text_dir = base / TEXT_ENCODER_FOLDER
    paths = {
        "transformer config": model_dir / "llm" / "config.json",
        "transformer weights": model_dir / "llm" / "ema_model.bin",
        "tokenizer config": model_dir / "tokenizer" / "config.json",
        "tokenizer weights": model_dir / "tokenizer" / TOKENIZER_WEIGHTS[0],
        "text encoder config": text_dir / "config.json",
        "text encoder tokenizer": text_dir / "tokenizer_config.json",
    }
    alt = model_dir / "tokenizer" / TOKENIZER_WEIGHTS[1]
    if not paths["tokenizer weights"].is_file() and alt.is_file():
        paths["tokenizer weights"] = alt
    missing = {k: p for k, p in paths.items() if not p.is_file()}
    if missing:
        listed = "; ".join(f"{k} {p.relative_to(base)} (looked for {p})" for k, p in missing.items())
        raise CheckpointNotFoundError(
            f"{name} needs its release files, and {len(missing)} of {len(paths)} are missing: {listed}. Download the "
            f"Hugging Face repos mit-han-lab/hart-0.7b-1024px (into {RELEASE_FOLDER}/: llm/ and tokenizer/; the "
            f"tokenizer weights may be {' or '.join(TOKENIZER_WEIGHTS)}) and mit-han-lab/Qwen2-VL-1.5B-Instruct "
            f"(into {TEXT_ENCODER_FOLDER}/) into one folder and point {CHECKPOINT_ENV} at it (export "
            f"{CHECKPOINT_ENV}=/path/to/checkpoints), or pass the folder explicitly (checkpoints=... in Python; "
            "paths.checkpoints=... for tools/run.py)."
        )
    paths["text encoder"] = text_dir
    paths["tokenizer"] = model_dir / "tokenizer"
    return paths


def meta_hart_transformer(config: HARTConfig | str) -> HARTTransformer:
    """The transformer on the meta device: key names, shapes and parameter counts, no memory."""
    cfg = get_hart_config(config) if isinstance(config, str) else config
    with torch.device("meta"):
        return HARTTransformer(cfg)


def _drop_derived(state: dict, config: HARTConfig, what: str) -> dict:
    """Check the schedule's buffers the file may hold, and drop them (see the module doc)."""
    out = dict(state)
    n = config.num_tokens
    if "lvl_1L" in out:
        saved, want = out.pop("lvl_1L"), level_ids(config)
        if tuple(saved.shape) != tuple(want.shape) or not torch.equal(saved.cpu().long(), want):
            raise CheckpointMismatchError(
                f"{what}: its lvl_1L {tuple(saved.shape)} differs from the levels of patch_nums={config.patch_nums} "
                f"with {config.context_token} context tokens {tuple(want.shape)}; the file was made for another "
                "schedule or context length"
            )
    if "attn_bias_for_masking" in out:
        saved = out.pop("attn_bias_for_masking")
        if tuple(saved.shape) != (1, 1, n, n):
            raise CheckpointMismatchError(
                f"{what}: its attn_bias_for_masking is {tuple(saved.shape)}, the schedule needs (1, 1, {n}, {n})"
            )
    for key in [k for k in out if k.endswith(DERIVED_BLOCK_KEY) and k.startswith("blocks.")]:
        if bool(out.pop(key).ne(0).any()):
            raise CheckpointMismatchError(f"{what}: {key} is not all zeros (the release's k bias is zero)")
    assert not set(DERIVED_KEYS) & set(out)
    return out


def load_hart_transformer(
    config: HARTConfig, path: str | Path, *, device: torch.device | str = "cpu"
) -> HARTTransformer:
    """Build the transformer of ``config`` and load ``path`` (``ema_model.bin``, or a safetensors file) strictly;
    eval mode, blocks in the config's block dtype (parameters keep ``requires_grad``, as the official model's)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{config.name}: the transformer weights {path} do not exist")
    what = f"HART transformer checkpoint {path}"
    model = meta_hart_transformer(config)
    state = _drop_derived(load_state_dict(path), config, what)
    # checked on the meta model first: a mismatched file fails before anything is allocated
    check_state_dict(model, state, what)
    model = model.to_empty(device=device)
    load_into(model, state, what)
    return model.cast_blocks().eval()  # parameters keep requires_grad: see HARTTransformer


def config_of_release(folder: str | Path, name: str) -> HARTConfig:
    """The config of a release's ``llm/`` folder (its ``config.json``)."""
    data = json.loads((Path(folder) / "config.json").read_text())
    return config_from_llm_json(data, name=name)


def random_hart_transformer(
    config: HARTConfig, seed: int = 0, device: torch.device | str = "cpu"
) -> HARTTransformer:
    """The transformer with seeded random weights (:meth:`HARTTransformer.init_random`, drawn on the CPU)."""
    return HARTTransformer(config).init_random(seed).to(device).cast_blocks().eval()


def tiny_tokenizer_config():
    """``hart_tiny``'s tokenizer: the official module tree at ch=4, Cvae=8, V=1024 (so that the official top-k of
    600/300 really truncates), GroupNorm groups 2 — the official-code fixture's (tests/models/fixtures/hart_tiny)."""
    from moss_models.hart.tokenizer import HARTTokenizerConfig

    cfg = get_hart_config("hart_tiny")
    return HARTTokenizerConfig(
        vocab_size=cfg.vocab_size, z_channels=cfg.d_vae, ch=4, v_patch_nums=cfg.patch_nums, norm_groups=2
    )


def random_tokenizer(config, seed: int = 0, device: torch.device | str = "cpu"):
    """The tokenizer with torch's default initialisation drawn from ``seed`` (the global RNG is left untouched)."""
    from moss_models.hart.tokenizer import HARTTokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = HARTTokenizer(config)
    return tok.to(device).eval().requires_grad_(False)


def meta_family(
    config: HARTConfig,
    *,
    more_smooth: bool = False,
    refine_diffusion: str = "last_scale",
    precision_device: str | None = "cuda",
):
    """A HART family on the meta device (real modules, no memory) for exact FLOP and KV accounting; precision
    follows ``precision_device`` (default CUDA: the release's fp16 autocast and fp16 KV cache)."""
    from moss_models.hart.family import HARTFamily
    from moss_models.hart.tokenizer import HARTTokenizer, HARTTokenizerConfig

    tok_cfg = config.tokenizer or (
        tiny_tokenizer_config() if config.name == "hart_tiny" else HARTTokenizerConfig()
    )
    with torch.device("meta"):
        tf = HARTTransformer(config).cast_blocks()
        tok = HARTTokenizer(tok_cfg)
    return HARTFamily(
        tf, tok, more_smooth=more_smooth, refine_diffusion=refine_diffusion, precision_device=precision_device
    )


def build(
    name: str,
    *,
    weights: str = "release",
    checkpoints: str | Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    more_smooth: bool = False,
    official_top_k: bool = True,
    refine_diffusion: str = "last_scale",
    dtype: str | torch.dtype | None = None,
    text_encoder: Any = None,
):
    """The registry's builder (``moss_models.load("hart_0.7b", ...)``).

    ``more_smooth``: the official Gumbel smoothing of the codes; ``official_top_k``: top-k 600/300 by scale (the
    official loop) or ``SamplingConfig.top_k``; ``refine_diffusion``: the diffusion head on a packed MoSs stage
    (``last_scale`` or ``every_refine_scale``, see :mod:`moss_models.hart.family`); ``dtype``: the blocks' weight
    dtype (``fp32`` as released, ``bf16``/``fp16`` under autocast). Random weights: the transformer from
    ``seed``, the tokenizer from ``seed + 1``, and for ``hart_tiny`` a tiny random Qwen2 text encoder from
    ``seed + 2`` (``text_encoder``: a :class:`~moss_models.hart.text.Qwen2TextEncoder` to use instead).
    """
    from moss_models.core.generator import NextScaleGenerator
    from moss_models.hart.family import HARTFamily
    from moss_models.hart.text import Qwen2TextEncoder, tiny_text_encoder
    from moss_models.hart.tokenizer import HARTTokenizerConfig, load_hart_tokenizer

    cfg = get_hart_config(name)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    block_dtype = None
    if dtype is not None:
        if isinstance(dtype, str) and dtype not in dtypes:
            raise ValueError(f"dtype={dtype!r}; choose one of {sorted(dtypes)}")
        block_dtype = dtypes[dtype] if isinstance(dtype, str) else dtype
    options = dict(more_smooth=more_smooth, official_top_k=official_top_k, refine_diffusion=refine_diffusion)
    if torch.device(device).type == "meta":
        family = meta_family(cfg.with_(block_dtype=block_dtype or cfg.block_dtype), more_smooth=more_smooth,
                             refine_diffusion=refine_diffusion)  # fmt: skip
    elif weights == "random":
        if block_dtype is not None:
            cfg = cfg.with_(block_dtype=block_dtype)
        tok_cfg = tiny_tokenizer_config() if name == "hart_tiny" else HARTTokenizerConfig()
        if text_encoder is None and name == "hart_tiny":
            text_encoder = tiny_text_encoder(cfg.context_dim, cfg.context_token, seed=seed + 2, device=device)
        family = HARTFamily(
            random_hart_transformer(cfg, seed, device), random_tokenizer(tok_cfg, seed + 1, device), text_encoder,
            **options,
        )  # fmt: skip
    else:
        paths = release_paths(name, checkpoints)
        cfg = config_of_release(paths["transformer config"].parent, name)
        if block_dtype is not None:
            cfg = cfg.with_(block_dtype=block_dtype)
        tokenizer = load_hart_tokenizer(paths["tokenizer"], device=device)
        cfg = cfg.with_(tokenizer=tokenizer.config, vocab_size=tokenizer.config.vocab_size,
                        d_vae=tokenizer.config.z_channels)  # fmt: skip
        transformer = load_hart_transformer(cfg, paths["transformer weights"], device=device)
        if text_encoder is None:
            text_encoder = Qwen2TextEncoder.from_folder(
                paths["text encoder"], device=device, context_token=cfg.context_token
            )
        if text_encoder.channels != cfg.context_dim:
            raise ValueError(
                f"text encoder {paths['text encoder']} has width {text_encoder.channels}, {name} needs "
                f"{cfg.context_dim} (Qwen2-1.5B)"
            )
        family = HARTFamily(transformer, tokenizer, text_encoder, **options)
    return NextScaleGenerator(family, name=cfg.name, default_resolution=cfg.resolution)
