"""Search MoSs thresholds for a model offline: the paper's top-down heuristic (see tools/moss_run/search.py).

uv run python tools/search_thresholds.py model=var_tiny
uv run python tools/search_thresholds.py model=var_d30 search.k=3 search.budget=0.5

Exit codes: 0 done (the preset file is written); 2 a bad setting (one paragraph on stderr, before any model is
built); 1 anything else.
"""

import sys

import hydra
from omegaconf import DictConfig

from moss_run.config import register_resolvers
from moss_run.errors import UserError

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="search")
def main(cfg: DictConfig) -> None:
    from moss_run.search import run_search

    try:
        run_search(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
