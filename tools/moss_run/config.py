"""OmegaConf resolvers the configs use; registered before Hydra composes (tools/run.py imports this first)."""

from __future__ import annotations

import netrc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from moss_models import SamplingConfig
from moss_models.core import preset_thresholds
from moss_models.core.presets import peer_setting


@dataclass(frozen=True)
class GenerationConfig:
    """``conf/generation``: what every image of a run is generated with (built by ``instantiate``)."""

    resolution: Any = 1024
    aspect_ratio: float = 1.0
    cfg: Any = 3.0
    tau: Any = 0.5
    top_k: int = 900
    top_p: float = 0.97
    seeding: str = "per_image"
    batch_size: int = 1
    cuda_graphs: bool = False  # capture each transformer pass once per shape and replay it (CUDA only)

    def __post_init__(self) -> None:
        for name in ("cfg", "tau"):  # a number or one per scale, as floats (so 3 and 3.0 are one setting)
            value = getattr(self, name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
            elif not isinstance(value, str) and value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            cfg=self.cfg, tau=self.tau, top_k=self.top_k, top_p=self.top_p, seeding=self.seeding
        )


def moss_preset(family: str, name: str) -> list[float]:
    """``${moss_preset:${model.family},k5}``: the paper's thresholds for a model family."""
    try:
        return list(preset_thresholds(family, name))
    except ValueError as err:
        raise ValueError(
            f"moss={name} with model.family={family}: {err}; or give moss.thresholds=[...]"
        ) from None


# ``+preset=paper_table``'s rows per family: the paper's MoSs rows (Infinity k2…k5; HART k2), scale skipping and the
# peers, and on Infinity two combinations with MoSs.
PAPER_TABLE_ROWS = {
    "infinity": [
        "off",
        "k2",
        "k3",
        "k4",
        "k5",
        "skip1",
        "skip2",
        "fastvar",
        "fastervar",
        "k3+cfgoff",
        "k2+fastvar",
    ],
    "hart": ["off", "k2", "skip1", "skip2", "fastvar", "fastervar"],
}


def paper_table_rows(family: str) -> list[str]:
    """``${paper_table_rows:${model.family}}``: the methods ``+preset=paper_table`` counts for a family."""
    if family not in PAPER_TABLE_ROWS:
        raise ValueError(
            f"+preset=paper_table has rows for the families {sorted(PAPER_TABLE_ROWS)}, not model.family={family}; "
            "list the methods with bench.moss=[...]"
        )
    return list(PAPER_TABLE_ROWS[family])


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """``$WANDB_MODE`` if set; else ``online`` with credentials and ``offline`` without (never a login prompt)."""
    return os.environ.get("WANDB_MODE") or ("online" if has_wandb_credentials() else "offline")


def project_root() -> str:
    """``${moss_root:}``: the repository root (this file is ``tools/moss_run/config.py``).

    It resolves without Hydra's runtime config, which does not exist yet when a multirun resolves its sweep
    directory (``${hydra:runtime.cwd}`` fails there).
    """
    return str(Path(__file__).resolve().parents[2])


def register_resolvers() -> None:
    for name, fn in (
        ("moss_preset", moss_preset),
        ("peer_setting", peer_setting),
        ("paper_table_rows", paper_table_rows),
        ("wandb_mode", wandb_mode),
        ("moss_root", project_root),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
