"""Load VAR's released VQVAE (``vae_ch160v4096z32.pth``) and transformers (``var_d16.pth`` … ``var_d36.pth``),
all from the Hugging Face repo ``FoundationVision/var``.

Each release is a plain state dict saved with ``torch.save``; it is read with ``torch.load(weights_only=True)``
(or from safetensors) through the shared checkpoint helpers and checked key for key (missing, unexpected and
mis-shaped keys are listed). The VQVAE holds one buffer besides the parameters, ``quantize.ema_vocab_hit_SV``
``(10, 4096)``, which is loaded like the rest; the transformers hold ``lvl_1L``, ``attn_bias_for_masking`` and
every block's ``attn.zero_k_bias`` (see :func:`load_var_transformer`).
"""

from __future__ import annotations

from pathlib import Path

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
from moss_models.var.config import VAR_CONFIGS, VARConfig, get_var_config
from moss_models.var.transformer import VARTransformer, block_causal_bias, level_ids
from moss_models.var.vqvae import MultiScaleVQVAE, VQVAEConfig, get_vqvae_config

VQVAE_RELEASE_FILE = "vae_ch160v4096z32.pth"
EMA_KEY = "quantize.ema_vocab_hit_SV"


def _missing_message(path: Path, explicit: bool) -> str:
    where = "" if explicit else f" under the checkpoint folder {path.parent}"
    return (
        f"the VAR VQVAE needs its release checkpoint {VQVAE_RELEASE_FILE}, and it is missing{where} "
        f"(looked for {path}). Download {VQVAE_RELEASE_FILE} from the Hugging Face repo FoundationVision/var "
        f"into your checkpoint folder and point {CHECKPOINT_ENV} at it (export {CHECKPOINT_ENV}=/path/to/"
        "checkpoints), or pass the folder or the file explicitly (root=... or path=... in Python)."
    )


def vqvae_release_path(root: str | Path | None = None) -> Path:
    """The release file under ``root`` (default ``$MOSS_CHECKPOINTS``, else ``./checkpoints``); raises
    :class:`CheckpointNotFoundError` if it is not there."""
    path = checkpoint_root(root) / VQVAE_RELEASE_FILE
    if not path.is_file():
        raise CheckpointNotFoundError(_missing_message(path, explicit=False))
    return path


def load_vqvae(
    path: str | Path | None = None,
    *,
    config: VQVAEConfig | str = "var_vqvae",
    root: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> MultiScaleVQVAE:
    """Build the VQVAE of ``config`` and load ``path`` (default: the release file under ``root``) strictly.

    Returns the model in eval mode with gradients off, as the release builds it for VAR (``test_mode=True``).

    One exception to strictness, taken over from the official ``VQVAE.load_state_dict``: a
    ``quantize.ema_vocab_hit_SV`` with a different number of scales (a schedule of another length) is replaced
    by the model's own zero buffer. It is a training statistic that inference never reads.
    """
    cfg = get_vqvae_config(config) if isinstance(config, str) else config
    if path is None:
        path = vqvae_release_path(root)
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(_missing_message(path, explicit=True))
    state = load_state_dict(path)
    with torch.device("meta"):
        vae = MultiScaleVQVAE(cfg)
    own_ema = vae.quantize.ema_vocab_hit_SV
    if EMA_KEY in state and state[EMA_KEY].ndim >= 1 and state[EMA_KEY].shape[0] != own_ema.shape[0]:
        state[EMA_KEY] = torch.zeros(own_ema.shape, dtype=own_ema.dtype)
    what = f"VAR VQVAE checkpoint {path}"
    # Checked on the meta model first: a wrong file fails before the 109M parameters are allocated.
    check_state_dict(vae, state, what)
    vae = vae.to_empty(device=device)
    load_into(vae, state, what)
    return vae.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------------------
# The transformer (var_d16.pth … var_d36.pth)
# --------------------------------------------------------------------------------------------------------------

#: Buffers the release saves that are pure functions of ``patch_nums``: recomputed, and a saved copy is checked.
DERIVED_BUFFERS = ("lvl_1L", "attn_bias_for_masking")


def _transformer_missing_message(name: str, file: str, path: Path, explicit: bool) -> str:
    where = "" if explicit else f" under the checkpoint folder {path.parent}"
    return (
        f"{name} needs its release checkpoint {file}, and it is missing{where} (looked for {path}). Download "
        f"{file} (and the shared VQVAE {VQVAE_RELEASE_FILE}) from the Hugging Face repo FoundationVision/var into "
        f"your checkpoint folder and point {CHECKPOINT_ENV} at it (export {CHECKPOINT_ENV}=/path/to/checkpoints), "
        "or pass the folder or the file explicitly (root=... or path=... in Python)."
    )


def var_release_path(name: str, root: str | Path | None = None) -> Path:
    """The release transformer file of config ``name`` under ``root`` (default ``$MOSS_CHECKPOINTS``, else
    ``./checkpoints``); raises :class:`CheckpointNotFoundError` if it is not there."""
    cfg = get_var_config(name)
    if cfg.release_file is None:
        raise ValueError(f"{name!r} has no release file; pass path=... (configs with one: {_released()})")
    path = checkpoint_root(root) / cfg.release_file
    if not path.is_file():
        raise CheckpointNotFoundError(
            _transformer_missing_message(cfg.name, cfg.release_file, path, explicit=False)
        )
    return path


def _released() -> list[str]:
    return sorted(n for n, c in VAR_CONFIGS.items() if c.release_file)


def meta_var_transformer(config: VARConfig | str) -> VARTransformer:
    """The transformer on the meta device: shapes, key names and parameter counts, no memory (accounting)."""
    cfg = get_var_config(config) if isinstance(config, str) else config
    with torch.device("meta"):
        return VARTransformer(cfg)


def _mismatch_hint(state: dict, config: VARConfig) -> str:
    """Say which registered config a transformer state dict looks like, if it is not the requested one."""
    width = state.get("word_embed.weight")
    if width is None:
        return ""
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    shared = "shared_ada_lin.1.weight" in state
    for other in VAR_CONFIGS.values():
        if (other.embed_dim, other.depth, other.shared_aln) == (width.shape[0], depth, shared):
            if other.name != config.name:
                return f"The file looks like {other.name} weights (width {width.shape[0]}, depth {depth})."
            return ""
    kind = "shared" if shared else "per-block"
    return f"The file has width {width.shape[0]}, depth {depth} and {kind} AdaLN."


def _check_derived_buffers(state: dict, model: VARTransformer, what: str) -> dict:
    """Check the saved schedule buffers against the recomputed ones, and add ``attn_bias_for_masking`` when the
    file leaves it out: it is an (L, L) 0/−inf mask that only teacher forcing reads (1.85 MB at 256², 20 MB at
    512²), fully determined by ``patch_nums``, so a file may drop it (the official-code fixture does) without
    losing anything. ``lvl_1L`` is tiny and always saved; it is required like every other key."""
    out = dict(state)
    patch_nums = model.config.patch_nums
    expected = {
        "lvl_1L": level_ids(patch_nums).view(1, -1),
        "attn_bias_for_masking": block_causal_bias(patch_nums),
    }
    for key in DERIVED_BUFFERS:
        if key not in out:
            if key == "attn_bias_for_masking":
                out[key] = expected[key]
            continue
        saved = out[key]
        if tuple(saved.shape) != tuple(expected[key].shape):
            continue  # the strict key check lists it with its shapes
        if saved.dtype != expected[key].dtype or not torch.equal(saved.cpu(), expected[key]):
            raise CheckpointMismatchError(
                f"{what}: its buffer {key} {tuple(saved.shape)} {saved.dtype} differs from the one the schedule "
                f"patch_nums={patch_nums} defines ({expected[key].dtype}); the file was made for another "
                "schedule or is corrupt. Pick the config whose patch_nums the checkpoint was trained with."
            )
    return out


def load_var_transformer(
    config: VARConfig | str,
    path: str | Path | None = None,
    *,
    root: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> VARTransformer:
    """Build the transformer of ``config`` and load ``path`` (default: the config's release file under ``root``)
    strictly; returns it in eval mode with gradients off and its blocks in the config's block dtype.

    Every key of the release is required with its shape (missing, unexpected and mis-shaped keys are listed),
    except ``attn_bias_for_masking``, which is recomputed when absent; the saved ``lvl_1L`` and
    ``attn_bias_for_masking`` must equal the ones the config's schedule defines.
    """
    cfg = get_var_config(config) if isinstance(config, str) else config
    if path is None:
        if cfg.release_file is None:
            raise ValueError(f"{cfg.name!r} has no release file; pass path=...")
        path = checkpoint_root(root) / cfg.release_file
        explicit = False
    else:
        path, explicit = Path(path), True
    if not path.exists():
        file = cfg.release_file or path.name
        raise CheckpointNotFoundError(_transformer_missing_message(cfg.name, file, path, explicit))
    what = f"VAR transformer checkpoint {path}"
    model = meta_var_transformer(cfg)
    state = _check_derived_buffers(load_state_dict(path), model, what)
    # Checked on the meta model first: a mismatched multi-GB file fails before anything is allocated.
    check_state_dict(model, state, what, _mismatch_hint(state, cfg))
    model = model.to_empty(device=device).reset_derived_buffers()
    load_into(model, state, what)
    return model.cast_blocks().eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------------------
# The registry's builder
# --------------------------------------------------------------------------------------------------------------


def release_paths(name: str, root: str | Path | None = None) -> dict[str, Path]:
    """The two files a release model needs (its transformer and the shared VQVAE) under the checkpoint root;
    raises :class:`CheckpointNotFoundError` naming every missing one, before anything is built."""
    cfg = get_var_config(name)
    if cfg.release_file is None:
        raise ValueError(f"{name!r} has no release files; choose one of {_released()} or weights=random")
    base = checkpoint_root(root)
    paths = {"transformer": base / cfg.release_file, "vae": base / VQVAE_RELEASE_FILE}
    missing = {k: p for k, p in paths.items() if not p.is_file()}
    if missing:
        listed = "; ".join(f"{k} {p.name} (looked for {p})" for k, p in missing.items())
        raise CheckpointNotFoundError(
            f"{name} needs its release checkpoints, and {len(missing)} of {len(paths)} are missing: {listed}. "
            f"Download them from the Hugging Face repo FoundationVision/var into one folder and point "
            f"{CHECKPOINT_ENV} at it (export {CHECKPOINT_ENV}=/path/to/checkpoints), or pass the folder "
            "explicitly (checkpoints=... in Python; paths.checkpoints=... for tools/run.py)."
        )
    return paths


def random_vqvae(config: VQVAEConfig, seed: int = 0, device: torch.device | str = "cpu") -> MultiScaleVQVAE:
    """The VQVAE with torch's default initialisation drawn from ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = MultiScaleVQVAE(config)
    return vae.to(device).eval().requires_grad_(False)


def random_var_transformer(
    config: VARConfig, seed: int = 0, device: torch.device | str = "cpu"
) -> VARTransformer:
    """The transformer with seeded random weights (:meth:`VARTransformer.init_random`, drawn on the CPU)."""
    model = VARTransformer(config).init_random(seed)
    return model.to(device).reset_derived_buffers().cast_blocks().eval().requires_grad_(False)


def build(
    name: str,
    *,
    weights: str = "release",
    checkpoints: str | Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    more_smooth: bool = False,
    dtype: str | torch.dtype | None = None,
):
    """The registry's builder (``moss_models.load("var_d30", ...)``).

    ``more_smooth``: the official Gumbel smoothing of the codes (visualisation; not for FID); ``dtype``: the
    blocks' weight dtype (``fp32``, as released, or ``bf16``/``fp16``, run under autocast to it off CUDA).
    Random weights: the transformer from ``seed``, the VQVAE from ``seed + 1``.
    """
    from moss_models.core.generator import NextScaleGenerator
    from moss_models.var.family import VARFamily, meta_family

    cfg = get_var_config(name)
    if dtype is not None:
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
        if isinstance(dtype, str) and dtype not in dtypes:
            raise ValueError(f"dtype={dtype!r}; choose one of {sorted(dtypes)}")
        cfg = cfg.with_(block_dtype=dtypes[dtype] if isinstance(dtype, str) else dtype)
    if torch.device(device).type == "meta":
        family = meta_family(cfg, more_smooth=more_smooth)
    elif weights == "random":
        family = VARFamily(
            random_var_transformer(cfg, seed, device),
            random_vqvae(cfg.vae, seed + 1, device),
            more_smooth=more_smooth,
        )
    else:
        paths = release_paths(name, checkpoints)
        family = VARFamily(
            load_var_transformer(cfg, paths["transformer"], device=device).cast_blocks(),
            load_vqvae(paths["vae"], config=cfg.vae, device=device),
            more_smooth=more_smooth,
        )
    return NextScaleGenerator(family, name=cfg.name, default_resolution=cfg.resolution)
