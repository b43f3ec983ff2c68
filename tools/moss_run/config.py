"""OmegaConf resolvers the configs use; registered before Hydra composes (tools/run.py imports this first)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf

from moss_dispatch import preset_thresholds


def moss_preset(family: str, name: str) -> list[float]:
    """``${moss_preset:${model.family},k5}``: the paper's thresholds for a model family."""
    try:
        return list(preset_thresholds(family, name))
    except ValueError as err:
        raise ValueError(
            f"moss={name} with model.family={family}: {err}; or give moss.thresholds=[...]"
        ) from None


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """``$WANDB_MODE`` if set; else ``online`` with credentials and ``offline`` without (never a login prompt)."""
    return os.environ.get("WANDB_MODE") or ("online" if has_wandb_credentials() else "offline")


def register_resolvers() -> None:
    for name, fn in (("moss_preset", moss_preset), ("wandb_mode", wandb_mode)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
