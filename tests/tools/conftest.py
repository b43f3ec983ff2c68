import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write

from moss_run.config import register_resolvers

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"

register_resolvers()


def load_script(relative: str, name: str):
    """A script of the repository (not a package module, e.g. ``tools/summarize.py``) imported as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The run machinery's tests use the tiny Infinity (random weights, 256², any prompt) unless they choose a model:
# their expectations (sizes, token counts, prompts) were written for it. The default of tools/run.py, the trained
# testbed, has its own tests (test_readme's default run, test_testbed_trained.py).
MACHINERY_MODEL = "model=tiny"


def with_model(args, config_name="config"):
    args = list(args)
    if config_name != "config" or any(a.lstrip("+~").startswith("model=") for a in args):
        return args
    return [*args, MACHINERY_MODEL]  # last: flags such as -m come first


def compose_config(overrides=(), output_dir=None, config_name="config"):
    """The real config tree, composed as tools/run.py composes it, with the Hydra config set for this process
    (``model=tiny`` unless the overrides choose a model: :data:`MACHINERY_MODEL`)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=with_model(overrides, config_name), return_hydra_config=True)
    if output_dir is not None:
        with read_write(cfg), open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.paths.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_cli(args, *, timeout=300, env=None, cwd=ROOT):
    """tools/run.py in a subprocess (W&B offline, its files under the run dir; ``model=tiny`` unless ``args``
    choose a model)."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset the variable
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run.py"), *with_model(args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()
