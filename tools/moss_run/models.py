"""Model building for the main job: ``conf/model/*.yaml`` instantiate :func:`moss_models.load` (a partial); this
module only turns what can go wrong into one-paragraph user errors.

The LightningModule calls the partial in ``setup()`` with the device Lightning assigned to its rank, so each
process builds its model directly on its own device.
"""

from __future__ import annotations

from collections.abc import Callable

from moss_models import CheckpointMismatchError, CheckpointNotFoundError, NextScaleGenerator
from moss_models.infinity import release_paths
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
        release_paths(model_cfg.name, model_cfg.checkpoints)
    except CheckpointNotFoundError as err:
        raise UserError(f"model={model_cfg.name}: {err}") from None
    except ValueError as err:
        raise UserError(f"model.name: {err}") from None
