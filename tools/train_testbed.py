"""Train the testbed (a small Infinity on procedural shapes) one stage at a time; see conf/train_testbed.yaml.

uv run python tools/train_testbed.py stage=vae
uv run python tools/train_testbed.py stage=transformer

Exit codes: 0 done (the stage's safetensors are exported); 2 a bad setting (one paragraph on stderr); 1 anything
else.
"""

import sys

import hydra
from omegaconf import DictConfig

from moss_run.config import register_resolvers
from moss_run.errors import UserError

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_testbed")
def main(cfg: DictConfig) -> None:
    from moss_run.train import run_training

    try:
        run_training(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
