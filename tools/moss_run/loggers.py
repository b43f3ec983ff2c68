"""Experiment loggers of the main job (``conf/logger``)."""

from __future__ import annotations

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


class WandbLogger(_LightningWandbLogger):
    """Lightning's W&B logger without its ``anonymous=None`` argument, which current wandb versions warn about
    on every run (\"The anonymous setting has no effect\"): a warning nobody can act on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
