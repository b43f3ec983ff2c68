"""Every bad setting through tools/run.py as a user types it: exit code 2, one paragraph naming the key, before
any model is built, and no run folder left behind (or an existing one left untouched)."""

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

from moss_run.app import run
from moss_run.prepare import prepare

from .conftest import ROOT, compose_config, with_model

# (case id, overrides, what the message must name)
CASES = [
    ("thresholds-increasing", ["moss.thresholds=[50,60]"], "moss.thresholds=[50, 60]"),
    ("thresholds-not-a-number", ["moss.thresholds=[abc]"], "moss.thresholds[0]='abc'"),
    ("thresholds-negative", ["moss.thresholds=[-5]"], "moss.thresholds[0]=-5"),
    ("thresholds-above-100", ["moss.thresholds=[150]"], "moss.thresholds[0]=150"),
    ("thresholds-empty", ["moss.thresholds=[]"], "moss.thresholds=[]"),
    ("thresholds-k-too-large", ["moss.thresholds=[90,80,70,60,50,40,30]"], "k must be at most 6"),
    ("resolution-333", ["generation.resolution=333"], "generation.resolution=333"),
    ("resolution-4096", ["generation.resolution=4096"], "generation.resolution=4096"),
    ("resolution-abc", ["generation.resolution=abc"], "generation.resolution='abc'"),
    ("resolution-above-the-model", ["generation.resolution=1024"], "above what infinity_tiny supports"),
    ("aspect-ratio-0", ["generation.aspect_ratio=0"], "generation.aspect_ratio=0"),
    ("cfg-negative", ["generation.cfg=-1"], "generation.cfg=-1"),
    ("batch-size-fraction", ["generation.batch_size=1.5"], "generation.batch_size=1.5"),
    ("batch-size-0", ["generation.batch_size=0"], "generation.batch_size=0"),
    ("top-p-2", ["generation.top_p=2"], "generation.top_p=2"),
    ("top-k-negative", ["generation.top_k=-1"], "generation.top_k=-1"),
    ("tau-0", ["generation.tau=0"], "generation.tau=0"),
    ("seeding-bogus", ["generation.seeding=bogus"], "generation.seeding='bogus'"),
    ("dtype-removed", ["generation.dtype=bogus"], "generation.dtype"),
    ("model-dtype-bogus", ["model.dtype=bogus"], "model.dtype='bogus'"),
    ("weights-bogus", ["model.weights=bogus"], "model.weights='bogus'"),
    ("unknown-moss", ["moss=k9"], "moss"),
    (
        "fastvar-ratio-1",
        ["moss=fastvar", "moss.prune=[[-4,1.0]]"],
        "moss=fastvar: a pruning ratio must be in [0, 1)",
    ),
    ("fastvar-no-layer", ["moss=fastvar", "moss.layers=[5,9]"], "prune no block of this 4-block model"),
    (
        "fastervar-alpha",
        ["moss=fastervar", "moss.alpha=0.5"],
        "moss=fastervar: unknown FasterVAR alpha '0.5'",
    ),
    ("fastervar-ranks", ["moss=fastervar", "moss.ranks={{-3:[0.1]}}"], "rank ratios for 1 block groups"),
    ("k3-cfgoff-mixed", ["moss=k3+cfgoff", "moss.parts.0.scales=[-1]"], "guided for some scales and not"),
    ("prompt-file-latin1", ["data=prompts_file", "data.path={latin1}"], "line 3"),
    ("cuda-graphs-not-bool", ["generation.cuda_graphs=maybe"], "generation.cuda_graphs='maybe'"),
    (
        "cuda-graphs-with-a-peer",
        ["moss=fastvar", "generation.cuda_graphs=true"],
        "generation.cuda_graphs=true with moss=fastvar",
    ),
    ("cuda-graphs-flex", ["attn=cssa_flex", "generation.cuda_graphs=true"], "generation.cuda_graphs=true"),
    (
        "classes-for-a-text-model",
        ["data=imagenet_classes"],
        "data=imagenet_classes gives ImageNet class labels",
    ),
    ("class-name-unknown", ["data=imagenet_classes", "data.classes=[dragon]"], "data.classes[0]='dragon'"),
    ("class-name-ambiguous", ["data=imagenet_classes", "data.classes=[CARDIGAN]"], "[264, 474]"),
]
if not __import__("torch").cuda.is_available():
    CASES.append(("cuda-graphs-on-cpu", ["generation.cuda_graphs=true"], "need a CUDA device"))


def _cli(args, timeout=90):
    """``python tools/run.py ARGS logger=none``: the real script and argv, in a child forked from this process.

    The child starts with torch, Hydra and moss already imported, so a case costs the check itself, not the
    seconds of interpreter and torch start-up a fresh process pays (a fresh process gives the same result:
    test_readme and test_run run the script that way).
    """
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        child = ctx.Process(target=_child, args=([*with_model(args), "logger=none"], str(out), str(err)))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            raise TimeoutError(f"tools/run.py {args} ran past {timeout} s")
        return subprocess.CompletedProcess(args, child.exitcode, out.read_text(), err.read_text())


def _child(argv, out, err):
    code = 0
    try:
        os.environ["WANDB_MODE"] = "offline"
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.chdir(ROOT)
        GlobalHydra.instance().clear()
        sys.argv = [str(ROOT / "tools" / "run.py"), *argv]
        runpy.run_path(str(ROOT / "tools" / "run.py"), run_name="__main__")
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


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case in its own (forked) process."""
    tmp = tmp_path_factory.mktemp("bad")
    latin1 = tmp / "prompts.txt"
    latin1.write_bytes(b"a red fox\na blue car\nun caf\xe9 cr\xe8me au lait\n" + b"x" * 5000 + b"\n")
    jobs = {}
    for case, overrides, _ in CASES:
        out = tmp / case / "run"
        args = [o.format(latin1=latin1) for o in overrides] + [f"hydra.run.dir={out}"]
        jobs[case] = (args, out)
    return {case: (_cli(args), out) for case, (args, out) in jobs.items()}


@pytest.mark.parametrize(("case", "overrides", "named"), CASES, ids=[c[0] for c in CASES])
def test_bad_setting_is_one_paragraph_with_exit_code_2(results, case, overrides, named):
    proc, run_dir = results[case]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert named in proc.stderr, proc.stderr[-2000:]
    if case != "dtype-removed" and case != "unknown-moss":  # ours: one line starting "error:"
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error: ")]
        assert len(errors) == 1 and len(errors[0]) < 700, lines
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())  # no folder left behind
    assert "Predicting" not in proc.stdout + proc.stderr  # nothing was built or started


def test_the_non_utf8_prompt_file_is_named_with_line_and_offset_and_not_dumped(results):
    proc, _ = results["prompt-file-latin1"]
    assert "prompts.txt" in proc.stderr and "byte" in proc.stderr
    assert "x" * 100 not in proc.stderr  # a short excerpt, never the whole file


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished k2 run of two prompts (in-process: quicker than a subprocess)."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    cfg = compose_config(["logger=none", "data.prompts=[a red fox,a blue car]", "measure.warmup=0"], folder)
    run(cfg, prepare(cfg))
    return folder


def _snapshot(folder):
    return {
        p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (
            ["moss=off", "data.prompts=[a red fox,a blue car,a green tree]"],
            "method.name: 'k2' in the folder, 'off' now",
        ),
        (["data.prompts=[a cat,a dog]"], "image 00000 was generated for prompt 'a red fox'"),
        (["moss.thresholds=[50,60]", "data.prompts=[a red fox,a blue car]"], "moss.thresholds=[50, 60]"),
        (
            ["generation.cfg=4", "data.prompts=[a red fox,a blue car]"],
            "generation.cfg: 3.0 in the folder, 4.0 now",
        ),
        (
            ["attn=sa", "data.prompts=[a red fox,a blue car]"],
            "method.attention.mode: 'cssa' in the folder, 'sa' now",
        ),
    ],
    ids=[
        "other-method-and-one-more-prompt",
        "other-prompts-same-ids",
        "invalid-thresholds",
        "other-cfg",
        "other-attn",
    ],
)
def test_a_finished_folder_refuses_other_settings_and_stays_untouched(finished, overrides, named):
    before = _snapshot(finished)
    proc = _cli([*overrides, f"hydra.run.dir={finished}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert named in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    after = _snapshot(finished)
    assert {k: v for k, v in after.items() if k.name != "run.log"} == {
        k: v for k, v in before.items() if k.name != "run.log"
    }  # images, records, config.yaml, fingerprint.json and summary.json are as they were
    assert "error:" in (finished / "run.log").read_text()  # the refusal is in the folder's log


def test_a_finished_folder_resumes_with_its_own_settings_and_more_prompts(finished):
    fp = json.loads((finished / "fingerprint.json").read_text())
    assert fp["method"]["thresholds"] == [50.0, 25.0] and fp["generation"]["seeding"] == "per_image"
    cfg = compose_config(
        ["logger=none", "data.prompts=[a red fox,a blue car,a green tree]", "measure.warmup=0"], finished
    )
    summary = run(cfg, prepare(cfg))
    assert summary["num_images"] == 3


def test_other_weights_under_the_same_config_neither_resume_a_folder_nor_reuse_its_reference(tmp_path):
    """Retrained (or replaced) release weights under an unchanged config: the run's fingerprint and the fidelity
    twin's cache key hold the files' digests, so the old folder refuses the new weights instead of mixing two
    models' images, and the new weights get a new moss=off reference."""
    import shutil

    from moss_models.testbed.trained import WEIGHTS_DIR
    from moss_run.evaluation import plan_reference

    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(WEIGHTS_DIR, old)
    shutil.copytree(WEIGHTS_DIR, new)
    tf = new / "transformer.safetensors"
    data = bytearray(tf.read_bytes())
    data[-2] ^= 0x01  # one bit of the last weight: the same shapes and keys, other weights
    tf.write_bytes(bytes(data))

    folder = tmp_path / "run"
    common = ["model=testbed", "data.prompts=[a red circle on a plain background]", "measure.warmup=0"]
    cfg = compose_config(["logger=none", *common, f"model.checkpoints={old}"], folder)
    run(cfg, prepare(cfg))
    before = _snapshot(folder)
    proc = _cli([*common, f"model.checkpoints={new}", f"hydra.run.dir={folder}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "weights.transformer" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    after = _snapshot(folder)
    assert {k: v for k, v in after.items() if k.name != "run.log"} == {
        k: v for k, v in before.items() if k.name != "run.log"
    }
    # the same files elsewhere are the same weights: the folder resumes (the path is not part of the identity)
    again = shutil.copytree(old, tmp_path / "moved")
    cfg = compose_config(["logger=none", *common, f"model.checkpoints={again}"], folder)
    assert run(cfg, prepare(cfg))["num_images"] == 1

    keys = set()
    for w in (old, again, new):
        k2 = compose_config(["logger=none", *common, "moss=k2", f"model.checkpoints={w}"], tmp_path / "k2")
        keys.add(plan_reference(k2, "k2", tmp_path / "k2").path)
    assert len(keys) == 2  # old and its copy share one reference; the changed weights have their own
