"""tools/analyze.py: the paper's analyses on the tiny models, its numbers consistent, its plots real PNGs; a bad
setting or a missing release file stops with exit code 2 before any model is built."""

import json
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

import moss_run.analyze as analyze_module
from moss_run.analyze import PLOTS, run_analysis
from moss_run.errors import UserError

from .conftest import ROOT, compose_config

SCORERS = ["variance", "gradient", "laplacian", "fft", "random"]
CASES = {
    # Infinity: its VAE decoder is the slow part on CPU, so the Observation-1 decodes run on VAR only
    # W&B disabled: the plots, numbers and table are still built as wandb objects, and nothing leaves the machine
    "tiny": ["model=tiny", "data.prompts=[a red fox in the snow,a bowl of ramen]", "analyze.fidelity=false",
             "analyze.flops=false", "analyze.heatmaps=1", "logger=wandb"],
    "var_tiny": ["model=var_tiny", "data=imagenet_classes", "data.classes=[207,volcano]"],
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(CASES))
def analysed(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"analysis-{request.param}")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "disabled")
        cfg = compose_config(CASES[request.param], out, "analyze")
        report = run_analysis(cfg)
    GlobalHydra.instance().clear()
    import wandb

    wandb.teardown()  # the process-wide W&B setup keeps WANDB_MODE=disabled; later tests start their own runs
    return request.param, out, report


def test_the_numbers_are_consistent(analysed):
    case, out, report = analysed
    saved = json.loads((out / "analysis.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["num_images"] == 2 and len(saved["images"]) == 2
    k, nd = len(saved["schedule"]), saved["num_drafter"]
    assert nd == k - 5 and saved["num_refiner"] == 5  # the default: the paper's 5 refine scales
    c = saved["contribution"]
    # every token's stages sum to 1, so the pooled drafter and refiner means do too
    assert c["drafter_mean"] + c["refiner_mean"] == pytest.approx(1.0, abs=1e-5)
    assert c["max_sum_error"] < 1e-5
    assert sum(c["per_stage_mean"]) == pytest.approx(1.0, abs=1e-5)
    h, w = saved["latent_grid"]
    assert c["valid_tokens"] + c["excluded_tokens"] == 2 * h * w
    for image in saved["images"]:
        assert image["drafter_mean"] + image["refiner_mean"] == pytest.approx(1.0, abs=1e-5)
    scorers = saved["frequency"]["scorers"]
    assert sorted(scorers) == sorted(SCORERS)  # one r per scorer
    for stats in scorers.values():
        assert -1 <= stats["pooled"] <= 1
        assert len(stats["per_image"]) == 2 and all(-1 <= r <= 1 for r in stats["per_image"])
        assert stats["tokens"] == c["valid_tokens"]
    curve = saved["observation1"]["curve"]
    assert [p["scales"] for p in curve] == list(range(1, k + 1))
    assert curve[-1]["cumulative_tokens"] == sum(a * b for a, b in saved["schedule"])
    assert curve[-1]["contribution"] == pytest.approx(1.0, abs=1e-5)
    if case == "var_tiny":  # the Observation-1 decodes and FLOPs
        assert curve[-1]["psnr_db"] is None and curve[-1]["ssim"] == pytest.approx(
            1.0
        )  # the final image itself
        assert all(p["psnr_db"] > 0 and -1 <= p["ssim"] <= 1 for p in curve[:-1])
        assert curve[-1]["flops_share"] == pytest.approx(1.0)
        assert 0 < curve[nd - 1]["flops_share"] < curve[nd - 1]["token_share"] < 1
    else:
        assert all(p["psnr_db"] is None and p["flops_share"] is None for p in curve)
    assert saved["tuned"] is False and saved["weights"] == "random"


def test_the_plots_are_valid_images(analysed):
    from PIL import Image

    _, out, report = analysed
    assert report["plots"] == PLOTS
    for name in PLOTS.values():
        with Image.open(out / name) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 300


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("analyze.num_drafter=10", r"analyze.num_drafter=10 is not allowed: an int in \[1, 9\]"),
        ("analyze.scorers=[variance,sobel]", r"analyze.scorers\[1\]='sobel'"),
        ("analyze.heatmaps=-1", "analyze.heatmaps=-1"),
        ("moss=k2", "moss=k2: tools/analyze.py measures the full model"),
        ("generation.resolution=512", "generation.resolution=512"),
    ],
)
def test_bad_settings_stop_before_any_model_is_built(tmp_path, monkeypatch, override, match):
    monkeypatch.setattr(analyze_module, "build", _no_model)
    cfg = compose_config([override], tmp_path, "analyze")
    with pytest.raises(UserError, match=match):
        run_analysis(cfg)
    assert not (tmp_path / "analysis.json").exists()


def _no_model(*args, **kwargs):
    raise AssertionError("a model was built")


def test_a_short_schedule_needs_an_explicit_drafter(tmp_path):
    cfg = compose_config([], tmp_path, "analyze")
    with pytest.raises(UserError, match=r"analyze.num_drafter=null means S−5 .* only S=4 scales"):
        analyze_module.check_analysis_settings(cfg, 4)


def test_missing_release_files_exit_2_before_anything_is_built(tmp_path):
    run_dir = tmp_path / "run"
    proc = _cli(["model=infinity_2b", f"paths.checkpoints={tmp_path / 'none'}", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: model=infinity_2b") and "infinity_2b_reg.pth" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not run_dir.exists()  # the folder Hydra made for the refused call is gone again


def _cli(args, timeout=90):
    """``python tools/analyze.py ARGS`` in a child forked from this process (torch and Hydra already imported)."""
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        child = ctx.Process(target=_child, args=(args, str(out), str(err)))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            raise TimeoutError(f"tools/analyze.py {args} ran past {timeout} s")
        return subprocess.CompletedProcess(args, child.exitcode, out.read_text(), err.read_text())


def _child(argv, out, err):
    code = 0
    try:
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.chdir(ROOT)
        GlobalHydra.instance().clear()
        sys.argv = [str(ROOT / "tools" / "analyze.py"), *argv]
        runpy.run_path(str(ROOT / "tools" / "analyze.py"), run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
