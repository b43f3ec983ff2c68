"""Every option of every config group composes, and its objects instantiate."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from moss_run.app import check_machine, moss_config
from moss_run.data import PromptDataset
from moss_run.errors import UserError

from .conftest import CONF, compose_config


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("model", _options("model"))
def test_models_compose(model, tmp_path):
    cfg = compose_config([f"model={model}"], tmp_path)
    build = instantiate(cfg.model)
    assert callable(build)
    assert cfg.generation.resolution in (256, 1024)
    expected = {"tiny": "infinity_tiny", "infinity": "infinity_2b"}.get(model, model)
    assert cfg.model.config == expected


@pytest.mark.parametrize("moss", _options("moss"))
def test_moss_presets_follow_the_model_family(moss, tmp_path):
    cfg = compose_config([f"moss={moss}"], tmp_path)
    m = moss_config(cfg)
    paper = {
        "off": None,
        "k2": (50, 25),
        "k3": (50, 15, 5),
        "k4": (80, 70, 30, 10),
        "k5": (90, 50, 15, 10, 5),
    }
    assert (m.thresholds if m else None) == paper[moss]


def test_thresholds_and_drafter_scales_from_the_command_line(tmp_path):
    m = moss_config(
        compose_config(["moss=k2", "moss.thresholds=[60,30]", "moss.num_draft_scales=5"], tmp_path)
    )
    assert m.thresholds == (60.0, 30.0)
    with pytest.raises(
        UserError, match=r"moss.num_draft_scales=4 leaves 3 refine scales of the 7-scale schedule"
    ):
        moss_config(compose_config(["moss=k2", "moss.num_draft_scales=4"], tmp_path))


def test_a_family_without_the_preset_says_so(tmp_path):
    cfg = compose_config(["moss=k5", "model.family=hart"], tmp_path)
    with pytest.raises(
        Exception,
        match=r"moss=k5 with model.family=hart: unknown preset 'k5' for family 'hart'; choose one of \['k2'\]",
    ):
        OmegaConf.to_container(cfg.moss, resolve=True)


@pytest.mark.parametrize("attn", _options("attn"))
def test_attention_options(attn, tmp_path):
    cfg = compose_config([f"attn={attn}", "moss=k3"], tmp_path)
    m = moss_config(cfg)
    assert m.mode == ("sa" if attn == "sa" else "cssa")
    assert m.backend == {"cssa_flex": "flex", "cssa_xformers": "xformers"}.get(attn, "sdpa")
    assert cfg.attn.rope_impl == ("triton" if attn == "cssa_triton" else "torch")


def test_xformers_and_gpu_without_cuda_are_clear_errors(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = compose_config(["attn=cssa_xformers", "moss=k2"], tmp_path)
    with pytest.raises(
        UserError,
        match=r"attn=cssa_xformers: .*needs a CUDA GPU.*Use attn=cssa \(torch sdpa\) or attn=cssa_flex",
    ):
        check_machine(cfg, moss_config(cfg), [])
    cfg = compose_config(["trainer=gpu"], tmp_path)
    with pytest.raises(UserError, match=r"trainer.accelerator=gpu needs a CUDA GPU.*Use trainer=cpu"):
        check_machine(cfg, moss_config(cfg), [])


def test_triton_rope_without_cuda_or_interpreter_is_a_recorded_fallback(tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    cfg = compose_config(["attn=cssa_triton"], tmp_path)
    fallbacks = []
    with pytest.warns(RuntimeWarning, match="used the torch RoPE reference instead"):
        assert check_machine(cfg, moss_config(cfg), fallbacks) == "torch"
    assert len(fallbacks) == 1


@pytest.mark.parametrize("dispatch", _options("dispatch"))
def test_dispatch_scorers(dispatch, tmp_path):
    cfg = compose_config([f"dispatch={dispatch}", "moss=k2"], tmp_path)
    from moss_dispatch import get_scorer

    m = moss_config(cfg)
    assert m.scorer == dispatch
    scores = get_scorer(m.scorer, **m.scorer_params)(torch.randn(1, 4, 16, 16))
    assert scores.shape == (1, 16, 16)


@pytest.mark.parametrize("logger", _options("logger"))
def test_loggers(logger, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config([f"logger={logger}"], tmp_path)
    if logger == "none":
        assert not cfg.logger  # an empty group: no logger object
        return
    obj = instantiate(cfg.logger)
    assert type(obj).__name__ == {"wandb": "WandbLogger", "csv": "CSVLogger"}[logger]


def test_wandb_mode_without_credentials_is_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert compose_config(["logger=wandb"], tmp_path).logger.mode == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert compose_config(["logger=wandb"], tmp_path).logger.mode == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert compose_config(["logger=wandb"], tmp_path).logger.mode == "disabled"


@pytest.mark.parametrize("trainer", _options("trainer"))
def test_trainers_compose(trainer, tmp_path):
    cfg = compose_config([f"trainer={trainer}"], tmp_path)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert cfg.trainer.strategy == "ddp" if trainer == "ddp" else "strategy" not in cfg.trainer
    if trainer == "cpu":
        trainer_obj = instantiate(cfg.trainer, logger=False)
        assert trainer_obj.num_devices == 1


def test_slurm_launcher_and_multinode_compose(tmp_path):
    cfg = compose_config(
        ["hydra/launcher=submitit_slurm", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=8",
         "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"],
        tmp_path,
    )  # fmt: skip
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.nodes == 2 and cfg.trainer.num_nodes == 2


def test_prompt_list_and_defaults(tmp_path):
    cfg = compose_config(["data.prompts=[one,two]", "seed=10"], tmp_path)
    ds = instantiate(cfg.data)
    assert isinstance(ds, PromptDataset)
    assert [(it.id, it.prompt, it.seed) for it in ds.items] == [("00000", "one", 10), ("00001", "two", 11)]
    assert cfg.generation.cfg == 3.0 and cfg.generation.tau == 0.5
    assert cfg.generation.top_k == 900 and cfg.generation.top_p == 0.97
