"""Build Infinity models: from the official release files, or with seeded random weights.

Release files (Hugging Face ``FoundationVision/Infinity``), looked for under one checkpoint folder:

============== ====================================== ======================================= ==============
config         transformer                            VAE                                     text encoder
============== ====================================== ======================================= ==============
infinity_2b    ``infinity_2b_reg.pth``                ``infinity_vae_d32reg.pth``             ``flan-t5-xl/``
infinity_8b    ``infinity_8b_weights/`` (shards)      ``infinity_vae_d56_f8_14_patchify.pth`` ``flan-t5-xl/``
infinity_125m  ``infinity_125M_256x256.pth``          ``infinity_vae_d32reg.pth``             ``flan-t5-xl/``
============== ====================================== ======================================= ==============

The VAE files keep their weights under ``"vae"``; the official loader also accepts raw ``nn.Conv2d``/``GroupNorm``
names (without the ``.conv``/``.norm`` wrapper level), and so does this one. Training checkpoints that nest the
weights under ``["trainer"]["gpt_fsdp"]`` are unwrapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from moss_models.core.checkpoints import (
    CHECKPOINT_ENV,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    check_state_dict,
    checkpoint_root,
    compare_state_dict,
    load_into,
    load_state_dict,
)
from moss_models.core.generator import NextScaleGenerator
from moss_models.infinity.config import CONFIGS, InfinityConfig, get_config
from moss_models.infinity.family import InfinityFamily
from moss_models.infinity.text import HashedTextEncoder, T5TextEncoder
from moss_models.infinity.transformer import InfinityTransformer
from moss_models.infinity.vae import BSQVAE


@dataclass(frozen=True)
class ReleaseFiles:
    transformer: str
    vae: str
    text_encoder: str = "flan-t5-xl"


RELEASE_FILES: dict[str, ReleaseFiles] = {
    "infinity_2b": ReleaseFiles("infinity_2b_reg.pth", "infinity_vae_d32reg.pth"),
    "infinity_8b": ReleaseFiles("infinity_8b_weights", "infinity_vae_d56_f8_14_patchify.pth"),
    "infinity_125m": ReleaseFiles("infinity_125M_256x256.pth", "infinity_vae_d32reg.pth"),
}


def release_paths(name: str, root: str | Path | None = None, *, text_encoder: bool = True) -> dict[str, Path]:
    """The files a release config needs, resolved under the checkpoint root; raises if any is missing."""
    if name not in RELEASE_FILES:
        raise ValueError(f"{name!r} has no release files; choose one of {sorted(RELEASE_FILES)}")
    files = RELEASE_FILES[name]
    base = checkpoint_root(root)
    paths = {"transformer": base / files.transformer, "vae": base / files.vae}
    if text_encoder:
        paths["text encoder"] = base / files.text_encoder
    missing = {k: p for k, p in paths.items() if not p.exists()}
    if missing:
        listed = "; ".join(
            f"{k} {p.name}{'/' if k != 'vae' and not p.suffix else ''} (looked for {p})"
            for k, p in missing.items()
        )
        raise CheckpointNotFoundError(
            f"{name} needs its release checkpoints, and {len(missing)} of {len(paths)} are missing: {listed}. "
            f"Download them from the Hugging Face repos FoundationVision/Infinity (transformer and VAE) and "
            f"google/flan-t5-xl (text encoder) into one folder and point {CHECKPOINT_ENV} at it "
            f"(export {CHECKPOINT_ENV}=/path/to/checkpoints), or pass the folder explicitly "
            "(root=... in Python; paths.checkpoints=... for tools/run.py)."
        )
    return paths


def _unwrap(state: dict, *names: str) -> dict:
    for name in names:
        if name in state and isinstance(state[name], dict):
            state = state[name]
    return state


def _mismatch_hint(state: dict, config: InfinityConfig) -> str:
    """Say which registered config a transformer state dict looks like, if it is not the requested one."""
    width = state.get("word_embed.weight")
    if width is None:
        return ""
    depth = len({k.split(".")[1] + "." + k.split(".")[3] for k in state if k.startswith("block_chunks.")})
    shape = tuple(width.shape)
    for other in CONFIGS.values():
        if (other.embed_dim, other.d_vae) == shape and other.depth == depth and other.name != config.name:
            return f"The file looks like {other.name} weights (width {shape[0]}, depth {depth}), not {config.name}."
    return f"The file has width {shape[0]}, {shape[1]} input channels and depth {depth}."


def load_transformer(
    config: InfinityConfig | str, path: str | Path, device: torch.device | str = "cpu"
) -> InfinityTransformer:
    """Load transformer weights strictly; blocks are cast to the config's block dtype (bf16 for releases)."""
    config = get_config(config) if isinstance(config, str) else config
    state = _unwrap(load_state_dict(path), "trainer", "gpt_fsdp")
    with torch.device("meta"):
        model = InfinityTransformer(config)
    # Check on the meta model first: a mismatched multi-GB file fails before anything is allocated.
    missing, unexpected, misshaped = compare_state_dict(model, state)
    if missing or unexpected or misshaped:
        check_state_dict(model, state, f"transformer checkpoint {path}", _mismatch_hint(state, config))
    model = model.to_empty(device=device)
    load_into(model, state, f"transformer checkpoint {path}")
    return model.cast_blocks()


def _with_wrapper_levels(state: dict, model: torch.nn.Module) -> dict:
    """Map raw conv/norm names (``…conv1.weight``) to the wrapped ones (``…conv1.conv.weight``) when needed."""
    out = dict(state)
    for key in model.state_dict():
        if key in out:
            continue
        for level in (".conv.", ".norm."):
            head, sep, tail = key.rpartition(level)
            raw = f"{head}.{tail}" if sep else None
            if raw and raw in out:
                out[key] = out.pop(raw)
                break
    return out


def load_vae(config: InfinityConfig | str, path: str | Path, device: torch.device | str = "cpu") -> BSQVAE:
    config = get_config(config) if isinstance(config, str) else config
    with torch.device("meta"):
        vae = BSQVAE(config.vae)
    state = _with_wrapper_levels(_unwrap(load_state_dict(path), "vae"), vae)
    check_state_dict(vae, state, f"VAE checkpoint {path}")
    vae = vae.to_empty(device=device)
    load_into(vae, state, f"VAE checkpoint {path}")
    return vae.eval()


def load_infinity(
    name: str | InfinityConfig = "infinity_2b",
    root: str | Path | None = None,
    device: torch.device | str = "cpu",
    *,
    text_encoder: bool = True,
) -> NextScaleGenerator:
    """A generator built from the release files of ``name`` under the checkpoint root.

    ``name`` may be a config whose fields were changed (e.g. ``block_dtype``); its ``name`` picks the files.
    """
    config = get_config(name) if isinstance(name, str) else name
    name = config.name
    paths = release_paths(name, root, text_encoder=text_encoder)
    transformer = load_transformer(config, paths["transformer"], device)
    vae = load_vae(config, paths["vae"], device)
    encoder = None
    if text_encoder:
        encoder = T5TextEncoder(paths["text encoder"], device=device, max_length=config.text_maxlen)
        if encoder.channels != config.text_channels:
            raise CheckpointMismatchError(
                f"text encoder {paths['text encoder']} has width {encoder.channels}, {name} needs "
                f"{config.text_channels} (flan-t5-xl)"
            )
    return generator(transformer, vae, encoder)


def generator(
    transformer: InfinityTransformer,
    vae: BSQVAE,
    text_encoder: T5TextEncoder | HashedTextEncoder | None = None,
) -> NextScaleGenerator:
    """The generator of an Infinity transformer and VAE (and text encoder); its default resolution is the
    largest the config supports."""
    family = InfinityFamily(transformer, vae, text_encoder)
    return NextScaleGenerator(
        family, name=transformer.config.name, default_resolution=transformer.config.max_resolution
    )


def random_infinity(
    name: str | InfinityConfig = "infinity_tiny",
    seed: int = 0,
    device: torch.device | str = "cpu",
    *,
    text_encoder: T5TextEncoder | HashedTextEncoder | None = None,
) -> NextScaleGenerator:
    """A generator with seeded random weights, built directly on ``device`` (no CPU copy of the model).

    Latency does not depend on weight values, so this measures a full-size architecture without its checkpoint;
    the tiny config is the CPU default that needs nothing downloaded.
    """
    config = get_config(name) if isinstance(name, str) else name
    with torch.device(device):
        transformer = InfinityTransformer(config)
        vae = BSQVAE(config.vae)
    transformer.init_random(seed).cast_blocks()
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in vae.named_parameters():
            if pname.endswith("norm.weight"):
                values = torch.ones(p.shape)
            elif p.ndim == 1:
                values = torch.zeros(p.shape)
            else:  # He-style scale keeps activations O(1) through the random decoder
                values = torch.randn(p.shape, generator=gen) * (2 / p[0].numel()) ** 0.5
            p.copy_(values)
    return generator(transformer.eval(), vae.eval(), text_encoder)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(
    name: str,
    *,
    weights: str = "release",
    checkpoints: str | Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    dtype: str | torch.dtype | None = None,
    arch: dict | None = None,
    text_encoder: str | None = "flan-t5-xl",
) -> NextScaleGenerator:
    """The registry's builder (``moss_models.load("infinity_2b", ...)``).

    ``dtype``: the transformer blocks' dtype (``bf16`` for the releases); ``arch``: config fields to change
    (random weights only: the release files have one shape); ``text_encoder``: the flan-t5 folder name under the
    checkpoint root. Random-weight models use that T5 when the folder exists, else the deterministic hashed
    stand-in features (random weights understand no language either way).
    """
    config = get_config(name)
    changes = dict(arch or {})
    if "vae" in changes:
        raise ValueError("arch cannot change the VAE")
    if dtype is not None:
        if isinstance(dtype, str) and dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}; choose one of {sorted(DTYPES)}")
        changes["block_dtype"] = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if changes:
        try:
            config = config.with_(**changes)
        except (TypeError, ValueError) as err:
            raise ValueError(f"arch={dict(arch or {})}: {err}") from None
    if torch.device(device).type == "meta":  # the real modules without memory or weights (exact accounting)
        from moss_models.infinity.family import meta_family

        family = meta_family(config)
        return NextScaleGenerator(family, name=config.name, default_resolution=config.max_resolution)
    if weights == "random":
        root = checkpoint_root(checkpoints) if checkpoints else None
        if text_encoder and root is not None and (root / text_encoder).is_dir():
            encoder = T5TextEncoder(root / text_encoder, device=device, max_length=config.text_maxlen)
        else:
            encoder = HashedTextEncoder(config.text_channels, config.text_maxlen, device)
        return random_infinity(config, seed, device, text_encoder=encoder)
    if arch:
        raise ValueError(
            f"arch={dict(arch)} changes the architecture, so the release weights cannot load; use weights=random"
        )
    return load_infinity(config, checkpoints, device)
