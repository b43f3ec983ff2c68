"""The main job: generate images with Hydra configs, a Lightning predict loop and W&B logging.

uv run python tools/run.py                                        # tiny model on CPU
uv run python tools/run.py model=infinity moss=k5 attn=cssa_triton
uv run python tools/run.py -m moss=off,k2,k3,k4,k5                # a sweep; then tools/summarize.py
"""

import sys

import hydra
from omegaconf import DictConfig

from moss_run.config import register_resolvers
from moss_run.errors import UserError

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from moss_run.app import run

    try:
        summary = run(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    latency = (summary.get("latency_s") or {}).get("backbone") or {}
    return latency.get("median")  # what a Hydra sweeper would optimise


if __name__ == "__main__":
    main()
