"""The main job: generate images with Hydra configs, a Lightning predict loop and W&B logging.

uv run python tools/run.py                                        # the trained testbed on CPU
uv run python tools/run.py model=infinity moss=k5 attn=cssa_triton
uv run python tools/run.py -m moss=off,k2,k3,k4,k5                # a sweep; then tools/summarize.py

Exit codes: 0 done; 2 a setting, a file or this machine is wrong (one paragraph on stderr, written before any
model is built; a run folder this call created is removed again); 1 anything else (a bug: the traceback is in
the run's run.log too).
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
os.environ.setdefault("WANDB_QUIET", "true")  # W&B's banner and run summary: the last line says where it went
log = logging.getLogger("moss.run")
_task_started = False


def _to_run_log(level: int, message: str, exc_info=None) -> None:
    """Write to the run's run.log only (the console already has it)."""
    record = logging.LogRecord("moss.run", level, __file__, 0, message, None, exc_info)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    global _task_started
    _task_started = True
    run_dir = Path(cfg.paths.output_dir)
    new_folder = not run_dir.exists() or not any(run_dir.iterdir())  # Hydra made it just now, empty
    try:
        from moss_run.prepare import prepare  # no Lightning yet: a bad setting is reported in seconds

        prepared = prepare(cfg)
        from moss_run.app import run

        after = None
        if prepared.evaluators:
            from moss_run.evaluation import quality_step

            after = quality_step(cfg, prepared, run)
        summary = run(cfg, prepared, after=after)
    except UserError as err:
        message = f"error: {err}"
        print(message, file=sys.stderr)
        if new_folder and all(p.name == "run.log" for p in run_dir.iterdir()):
            logging.shutdown()
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing of this run is left behind
        else:
            _to_run_log(logging.ERROR, message)
        raise SystemExit(2) from None
    except BaseException as err:
        if not isinstance(err, SystemExit | KeyboardInterrupt):
            _to_run_log(logging.ERROR, f"the run failed: {err!r}", sys.exc_info())
        raise
    latency = (summary.get("latency_s") or {}).get("backbone") or {}
    return latency.get("median")  # what a Hydra sweeper would optimise


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exit_:
        # Hydra exits 1 for a config it cannot compose (an unknown key or option, a malformed override): that is a
        # bad setting too, reported (by Hydra, naming the key) before anything ran.
        if exit_.code == 1 and not _task_started:
            raise SystemExit(2) from None
        raise
