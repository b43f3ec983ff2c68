"""Model builders referenced by ``conf/model/*.yaml`` (``_target_`` with ``_partial_: true``).

The LightningModule calls the partial in ``setup()`` with the device Lightning assigned to its rank, so each
process builds its model directly on its own device.
"""

from __future__ import annotations

from pathlib import Path

import torch

from moss_models.infinity import (
    CheckpointNotFoundError,
    HashedTextEncoder,
    InfinityGenerator,
    T5TextEncoder,
    get_config,
    load_infinity,
    random_infinity,
    release_paths,
)
from moss_run.errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHTS = ("release", "random")


def build_generator(
    *,
    device: torch.device | str,
    config: str,
    family: str = "infinity",
    weights: str = "release",
    seed: int = 0,
    checkpoints: str | None = None,
    text_encoder: str | None = None,
    resolution: int = 1024,
    dtype: str = "bf16",
    arch: dict | None = None,
    rope_impl: str = "torch",
) -> InfinityGenerator:
    del resolution  # the run reads it from the config; kept here so the model group can carry its default
    if family != "infinity":
        raise UserError(f"model.family={family!r} is not implemented yet; available: ['infinity']")
    if weights not in WEIGHTS:
        raise UserError(f"model.weights={weights!r}; choose one of {list(WEIGHTS)}")
    cfg = model_config(config, dtype, arch)
    if arch and weights == "release":
        raise UserError(
            f"model.arch={dict(arch)} changes the architecture, so the release weights cannot load; use model.weights=random"
        )
    if weights == "random":
        encoder = _text_encoder(cfg, checkpoints, text_encoder, device)
        return random_infinity(cfg, seed, device, text_encoder=encoder, rope_impl=rope_impl)
    try:
        return load_infinity(cfg, checkpoints, device, rope_impl=rope_impl)
    except CheckpointNotFoundError as err:
        raise UserError(str(err)) from None


def model_config(config: str, dtype: str = "bf16", arch: dict | None = None):
    """The registered config with the run's block dtype and architecture overrides."""
    if dtype not in DTYPES:
        raise UserError(f"model.dtype={dtype!r}; choose one of {sorted(DTYPES)}")
    try:
        cfg = get_config(config).with_(block_dtype=DTYPES[dtype], **dict(arch or {}))
    except (ValueError, TypeError) as err:
        raise UserError(f"model.config={config} / model.arch={dict(arch or {})}: {err}") from None
    if "vae" in dict(arch or {}):
        raise UserError("model.arch cannot change the VAE")
    return cfg


def check_model_files(model_cfg) -> None:
    """Fail before anything starts when a release model's files are missing (one paragraph, no traceback)."""
    if model_cfg.get("weights") != "release":
        return
    try:
        release_paths(model_cfg.config, model_cfg.checkpoints)
    except CheckpointNotFoundError as err:
        raise UserError(f"model={model_cfg.config}: {err}") from None
    except ValueError as err:
        raise UserError(f"model.config: {err}") from None


def _text_encoder(cfg, checkpoints, text_encoder, device):
    """flan-t5 if the folder exists, else hashed stand-in features (random-weight models only)."""
    if text_encoder and checkpoints and (Path(checkpoints) / text_encoder).is_dir():
        return T5TextEncoder(Path(checkpoints) / text_encoder, device=device, max_length=cfg.text_maxlen)
    return HashedTextEncoder(cfg.text_channels, cfg.text_maxlen, device)
