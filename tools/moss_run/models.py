"""Model building for the main job: ``conf/model/*.yaml`` instantiate :func:`moss_models.load` (a partial); this
module only turns what can go wrong into one-paragraph user errors.

The LightningModule calls the partial in ``setup()`` with the device Lightning assigned to its rank, so each
process builds its model directly on its own device.
"""

from __future__ import annotations

from collections.abc import Callable

from moss_models import CheckpointMismatchError, CheckpointNotFoundError, NextScaleGenerator
from moss_models.core import model_entry
from moss_run.errors import UserError


def build(partial: Callable[..., NextScaleGenerator], device) -> NextScaleGenerator:
    """Call the model partial, with its errors as user errors naming the ``model.*`` settings."""
    try:
        return partial(device=device)
    except CheckpointNotFoundError as err:
        raise UserError(str(err)) from None
    except (CheckpointMismatchError, ValueError, TypeError) as err:
        raise UserError(f"model: {err}") from None


def check_model_files(model_cfg) -> None:
    """Fail before anything starts when a release model's files are missing (one paragraph, no traceback)."""
    if model_cfg.get("weights") != "release":
        return
    try:
        entry = model_entry(model_cfg.name)
    except ValueError as err:
        raise UserError(f"model.name: {err}") from None
    if entry.release_paths is None:
        raise UserError(f"model={model_cfg.name} has no release files; use model.weights=random")
    try:
        entry.release_paths(model_cfg.checkpoints)
    except CheckpointNotFoundError as err:
        raise UserError(f"model={model_cfg.name}: {err}") from None
