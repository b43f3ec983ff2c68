"""Load VAR's released VQVAE (``vae_ch160v4096z32.pth``, Hugging Face ``FoundationVision/var``).

The release is a plain state dict saved with ``torch.save``; it is read with ``torch.load(weights_only=True)``
through the shared checkpoint helpers and checked key for key (missing, unexpected and mis-shaped keys are
listed). It holds one buffer besides the parameters, ``quantize.ema_vocab_hit_SV`` ``(10, 4096)``, which is
loaded like the rest.
"""

from __future__ import annotations

from pathlib import Path

import torch

from moss_models.core.checkpoints import (
    CHECKPOINT_ENV,
    CheckpointNotFoundError,
    check_state_dict,
    checkpoint_root,
    load_into,
    load_state_dict,
)
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
