"""Model building for the main job: ``conf/model/*.yaml`` instantiate :func:`moss_models.load` (a partial); this
module only turns what can go wrong into one-paragraph user errors.

The LightningModule calls the partial in ``setup()`` with the device Lightning assigned to its rank, so each
process builds its model directly on its own device.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

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


WHOLE_FILE_LIMIT = 64 << 20  # files up to this size are hashed whole; larger ones by their ends (below)
END_BYTES = 4 << 20


def file_digest(path: Path) -> str:
    """:func:`_digest` of ``path``, cached by path, size and modification time: a run asks twice (its fingerprint,
    then the fidelity twin's key), and a sweep once per job."""
    stat = path.stat()
    return _digest(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file: the whole file when it is small (the shipped testbed), else its size and its first
    and last 4 MiB, so that a multi-GB release checkpoint is identified in milliseconds. Retraining or replacing a
    file changes its digest; a file edited only in its middle would not, which checkpoints are not."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= WHOLE_FILE_LIMIT:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return h.hexdigest()
        h.update(str(size).encode())
        h.update(f.read(END_BYTES))
        f.seek(size - END_BYTES)
        h.update(f.read(END_BYTES))
    return f"ends:{h.hexdigest()}"


def weights_identity(model_cfg) -> dict[str, str] | None:
    """What the release weights are, for a run's fingerprint and the fidelity reference's key: the digest of every
    file the model loads, by role. Without it, retrained or replaced weights under the same config would resume an
    old run folder (mixing images of two models) or reuse a stale ``moss=off`` reference. None for random weights
    (the seed in the config decides them)."""
    if model_cfg.get("weights") != "release":
        return None
    # the files were checked up front (check_model_files)
    paths = model_entry(model_cfg.name).release_paths(model_cfg.get("checkpoints"))
    return {role: file_digest(Path(p)) for role, p in sorted(paths.items())}
