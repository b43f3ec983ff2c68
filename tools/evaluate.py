"""Evaluate the images of an existing run folder: quality next to the speed the run recorded.

uv run python tools/evaluate.py outputs/runs/<name>/<time> 'eval=[fidelity]'
uv run python tools/evaluate.py RUN_DIR 'eval=[geneval,hps,imagereward]' evaluation.device=cuda logger=wandb

The first argument is the run folder; the rest are Hydra overrides of conf/evaluate.yaml (the `eval` group is the
same as tools/run.py's). Exit codes: 0 done; 2 a bad setting or a missing weight file (one paragraph on stderr,
before any model is loaded); 1 anything else.
"""

import sys

import hydra
from omegaconf import DictConfig

from moss_run.config import register_resolvers
from moss_run.errors import UserError

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from moss_run.evaluation import evaluate_folder

    try:
        evaluate_folder(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_dir_argument(argv: list[str]) -> list[str]:
    """``tools/evaluate.py RUN_DIR k=v ...`` → Hydra's ``run_dir=RUN_DIR k=v ...`` (the folder may hold '=')."""
    for i, arg in enumerate(argv[1:], start=1):
        if not arg.startswith("-") and "=" not in arg:
            return [*argv[:i], f"run_dir={_quote(arg)}", *argv[i + 1 :]]
    return argv


def _quote(path: str) -> str:
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


if __name__ == "__main__":
    sys.argv = _run_dir_argument(sys.argv)
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1:  # Hydra's exit for a config it cannot compose: a bad setting
            raise SystemExit(2) from None
        raise
