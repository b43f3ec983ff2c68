"""The paper's analyses on one model: Eq. 2 contributions, frequency vs contribution, Observation 1.

uv run python tools/analyze.py                                        # the trained testbed on CPU
uv run python tools/analyze.py model=var_tiny data=imagenet_classes
uv run python tools/analyze.py model=infinity_2b trainer=gpu 'data.prompts=[...]' logger=wandb

Writes analysis.json and the plots into the run folder (see tools/moss_run/analyze.py). Exit codes: 0 done; 2 a
bad setting or a missing model file (one paragraph on stderr, before any model is built; a run folder this call
created is removed again); 1 anything else.
"""

import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from moss_run.config import register_resolvers
from moss_run.errors import UserError

register_resolvers()
os.environ.setdefault("WANDB_QUIET", "true")
_task_started = False


@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    run_dir = Path(cfg.paths.output_dir)
    new_folder = not run_dir.exists() or not any(run_dir.iterdir())  # Hydra made it just now, empty
    from moss_run.analyze import run_analysis

    try:
        run_analysis(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        if new_folder and run_dir.is_dir() and all(p.name == "run.log" for p in run_dir.iterdir()):
            logging.shutdown()
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing of this call is left behind
        raise SystemExit(2) from None


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exit_:
        # Hydra exits 1 for a config it cannot compose (an unknown key or option): a bad setting too
        if exit_.code == 1 and not _task_started:
            raise SystemExit(2) from None
        raise
