"""Every option of every config group composes, and its objects instantiate."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from moss_models import (
    AttentionSpec,
    Baseline,
    Moss,
    NextScaleGenerator,
    ScaleSkip,
    ScorerSpec,
    method_by_name,
)
from moss_run.config import GenerationConfig
from moss_run.data import PromptDataset
from moss_run.errors import UserError
from moss_run.prepare import build_method, check_machine

from .conftest import CONF, compose_config


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("model", _options("model"))
def test_models_compose(model, tmp_path):
    cfg = compose_config([f"model={model}"], tmp_path)
    build = instantiate(cfg.model)
    assert callable(build)
    assert cfg.generation.resolution in (128, 256, 512, 1024)
    expected = {"tiny": "infinity_tiny", "infinity": "infinity_2b", "hart": "hart_0.7b"}.get(model, model)
    assert cfg.model.name == expected
    meta = build(device="meta")  # the real modules, no weights: every model builds without its files
    assert isinstance(meta, NextScaleGenerator) and meta.device.type == "meta"


def test_the_tiny_model_group_builds_a_ready_generator(tmp_path):
    cfg = compose_config([], tmp_path)
    pipe = instantiate(cfg.model)(device="cpu")
    out = pipe(["a red fox"], method="k2", seed=0)
    assert out.images[0].size == (256, 256)


def test_peer_configs_take_the_family_release(tmp_path):
    """moss=fastvar / fastervar are the peers' released settings for the model's family (VAR: Infinity's)."""
    from moss_models.hart.presets import FASTERVAR, FASTVAR

    hart = build_method(compose_config(["model=hart_tiny", "moss=fastvar"], tmp_path))
    assert (hart.prune, hart.cache_scale, hart.layers, hart.skip) == (
        FASTVAR["prune"], FASTVAR["cache_scale"], FASTVAR["layers"], FASTVAR["skip"]
    )  # fmt: skip
    assert tuple(hart.sublayers) == FASTVAR["sublayers"]
    faster = build_method(compose_config(["model=hart_tiny", "moss=fastervar"], tmp_path))
    assert (faster.unguided, faster.low_rank, faster.skip) == (
        FASTERVAR["unguided"], FASTERVAR["low_rank"], FASTERVAR["skip"]
    )  # fmt: skip
    for model in ("infinity_2b", "var_d30"):  # the values only: the tiny models have too few blocks for them
        m = OmegaConf.to_container(
            compose_config([f"model={model}", "moss=fastvar"], tmp_path).moss, resolve=True
        )
        assert (m["prune"], m["cache_scale"], m["layers"], m["skip"]) == (
            [[-4, 0.4], [-3, 0.5]],
            -5,
            [3, 28],
            [-2, -1],
        )


PAPER = {"k2": (50, 25), "k3": (50, 15, 5), "k4": (80, 70, 30, 10), "k5": (90, 50, 15, 10, 5)}


@pytest.mark.parametrize("moss", _options("moss"))
def test_moss_configs_build_methods_with_the_family_presets(moss, tmp_path):
    cfg = compose_config([f"moss={moss}"], tmp_path)
    m = build_method(cfg)
    assert m.name == moss
    if moss == "off":
        assert isinstance(m, Baseline)
    elif moss.startswith("skip"):
        assert isinstance(m, ScaleSkip) and m.num_skipped == int(moss[4:])
    elif moss in ("fastvar", "fastervar", "cfgoff") or "+" in moss:
        # the peers' configs build the same methods as their names do in the notebook API
        ref = method_by_name(moss, "infinity", attention=m.attention)
        if "+" in moss:
            assert (type(m.base), m.base.name, m.parts) == (type(ref.base), ref.base.name, ref.parts)
            assert m.base.thresholds == PAPER[m.base.name]
        else:
            assert m == ref
    else:
        assert isinstance(m, Moss) and m.thresholds == PAPER[moss]
        assert m.scorer == ScorerSpec("variance", {"window": 3})  # the dispatch group, nested
    assert m.attention == AttentionSpec("cssa", "sdpa", None, "torch")  # the attn group, nested


def test_thresholds_and_drafter_scales_from_the_command_line(tmp_path):
    m = build_method(
        compose_config(["moss=k2", "moss.thresholds=[60,30]", "moss.num_draft_scales=5"], tmp_path)
    )
    assert m.thresholds == (60.0, 30.0)
    with pytest.raises(
        UserError, match=r"moss=k2: num_draft_scales=4 leaves 3 refine scales of the 7-scale schedule"
    ):
        build_method(compose_config(["moss=k2", "moss.num_draft_scales=4"], tmp_path))


def test_a_family_without_the_preset_says_so(tmp_path):
    cfg = compose_config(["moss=k5", "model.family=lumina"], tmp_path)
    with pytest.raises(
        Exception,
        match=r"moss=k5 with model.family=lumina: unknown model family 'lumina' for threshold presets",
    ):
        OmegaConf.to_container(cfg.moss, resolve=True)
    cfg = compose_config(["moss=k5", "model=hart_tiny"], tmp_path)  # HART: the paper gives k2 only
    with pytest.raises(
        Exception, match=r"moss=k5 with model.family=hart: unknown preset 'k5' for family 'hart'"
    ):
        OmegaConf.to_container(cfg.moss, resolve=True)
    # VAR has presets, but not for every k (the paper gives none; its k2/k3 are untuned placeholders)
    cfg = compose_config(["moss=k5", "model=var_tiny"], tmp_path)
    with pytest.raises(
        Exception, match=r"moss=k5 with model.family=var: unknown preset 'k5' for family 'var'"
    ):
        OmegaConf.to_container(cfg.moss, resolve=True)


@pytest.mark.parametrize("attn", _options("attn"))
def test_attention_options(attn, tmp_path):
    cfg = compose_config([f"attn={attn}", "moss=k3"], tmp_path)
    spec = build_method(cfg).attention
    assert spec.mode == ("sa" if attn == "sa" else "cssa")
    assert spec.backend == {"cssa_flex": "flex", "cssa_xformers": "xformers"}.get(attn, "sdpa")
    assert spec.rope_impl == ("triton" if attn == "cssa_triton" else "torch")
    # one attention setting for every pass: the baseline gets it too
    assert build_method(compose_config([f"attn={attn}", "moss=off"], tmp_path)).attention == spec


def test_xformers_and_gpu_without_cuda_are_clear_errors(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = compose_config(["attn=cssa_xformers", "moss=k2"], tmp_path)
    with pytest.raises(
        UserError,
        match=r"attn=cssa_xformers: .*needs a CUDA GPU.*Use attn=cssa \(torch sdpa\) or attn=cssa_flex",
    ):
        check_machine(cfg, build_method(cfg), [])
    cfg = compose_config(["trainer=gpu"], tmp_path)
    with pytest.raises(UserError, match=r"trainer.accelerator=gpu needs a CUDA GPU.*Use trainer=cpu"):
        check_machine(cfg, build_method(cfg), [])


def test_triton_rope_without_cuda_or_interpreter_is_a_recorded_fallback(tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    cfg = compose_config(["attn=cssa_triton"], tmp_path)
    fallbacks = []
    with pytest.warns(RuntimeWarning, match="used the torch RoPE reference instead"):
        method = check_machine(cfg, build_method(cfg), fallbacks)
    assert method.attention.rope_impl == "torch"
    assert len(fallbacks) == 1


@pytest.mark.parametrize("dispatch", _options("dispatch"))
def test_dispatch_scorers(dispatch, tmp_path):
    cfg = compose_config([f"dispatch={dispatch}", "moss=k2"], tmp_path)
    m = build_method(cfg)
    assert m.scorer.name == dispatch
    assert m.scorer(torch.randn(1, 4, 16, 16)).shape == (1, 16, 16)


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
    gen = instantiate(cfg.generation)
    assert isinstance(gen, GenerationConfig)
    assert gen.sampling.cfg == 3.0 and gen.sampling.tau == 0.5
    assert gen.sampling.top_k == 900 and gen.sampling.top_p == 0.97
