"""Benchmark MoSs against the baseline, side by side in one process (see tools/moss_run/bench.py).

uv run python tools/bench.py model=infinity_2b model.weights=random 'bench.moss=[off,k2,k3,k4,k5]' attn=cssa
uv run python tools/bench.py +preset=cpu
uv run python tools/bench.py +preset=paper_table
"""

import sys

import hydra
from omegaconf import DictConfig

from moss_run.config import register_resolvers
from moss_run.errors import UserError

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    from moss_run.bench import run_bench

    try:
        run_bench(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
