"""benchmarks/testbed_oracle.py: the first N scales from the ground truth's VAE bits, the rest generated. N = 0 is the
plain generation pixel for pixel, N = S the VAE's reconstruction whatever the seed; bad settings exit 2."""

import json

import numpy as np
import pytest
import torch

import moss_models
from moss_eval.quality.shapes import ShapeDetector, evaluation_prompts, score_image, summarize
from moss_models.testbed import CARD_FILE, TESTBED_SIDES, WEIGHTS_DIR

from .conftest import load_script

pytestmark = pytest.mark.skipif(
    not (WEIGHTS_DIR / CARD_FILE).is_file(), reason="the shipped testbed is not present"
)


oracle = load_script("benchmarks/testbed_oracle.py", "testbed_oracle")
S = len(TESTBED_SIDES)


@pytest.fixture(scope="module")
def model():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield moss_models.load("testbed")
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def prompts():
    return evaluation_prompts(4, seed=1)


def test_no_forced_scale_is_the_plain_generation(model, prompts):
    plain = model([p.prompt for p in prompts], method="off", seed=3).result.images.numpy()
    np.testing.assert_array_equal(oracle.oracle_images(model, prompts, 0, seed=3), plain)


def test_forced_scales_carry_the_ground_truth_bits(model, prompts):
    from moss_models.core import NextScaleGenerator

    family = model.family
    bits = oracle.scene_bits(family, [p.scene_dict for p in prompts], model.default_resolution)
    assert [tuple(b.shape[1:3]) for b in bits] == [(s, s) for s in TESTBED_SIDES]
    gen = NextScaleGenerator(
        oracle.OracleScales(family, bits, 3), default_resolution=model.default_resolution
    )
    forced = gen([p.prompt for p in prompts], method="off", seed=5).result.samples
    free = model([p.prompt for p in prompts], method="off", seed=5).result.samples
    for s in range(3):
        np.testing.assert_array_equal(
            forced[s].numpy(), bits[s].reshape(len(prompts), -1, bits[s].shape[-1]).numpy()
        )
    # the plain generation draws other bits there
    assert not all(torch.equal(forced[s], free[s]) for s in range(3))
    with pytest.raises(ValueError, match="method='off'"):
        gen([p.prompt for p in prompts], method="k2", seed=5)


def test_all_scales_forced_is_the_vae_reconstruction(model, prompts):
    family = model.family
    a = oracle.oracle_images(model, prompts, S, seed=0)
    b = oracle.oracle_images(model, prompts, S, seed=99)
    np.testing.assert_array_equal(a, b)  # nothing is left to chance
    scenes = [p.scene_dict for p in prompts]
    from moss_eval.quality.shapes.scene import render, scene_from_dict

    pixels = np.stack([render(scene_from_dict(s)) for s in scenes])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    grids = [(s, s) for s in TESTBED_SIDES]
    with torch.no_grad():
        codes, _ = family.vae.encode(x, grids)
        recon = family.to_uint8(family.decode(codes, per_image=True)).numpy()
    assert np.abs(a.astype(int) - recon.astype(int)).max() <= 1  # summed in another order: at most one level


def test_cli_writes_scores_and_refuses_bad_settings(model, tmp_path, capsys):
    out = tmp_path / "oracle.json"
    assert oracle.main(["--prompts", "5", "--forced", "0", str(S), "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["forced"] for r in result["rows"]] == [0, S]
    assert result["sides"] == list(TESTBED_SIDES) and result["prompt_seed"] == 1
    # N = S scores what the detector finds on the VAE's reconstructions of the same scenes
    prompts = evaluation_prompts(5, seed=1)
    detector = ShapeDetector()
    images = oracle.oracle_images(model, prompts, S, seed=1000)
    rows = [
        {"tag": p.tag, "correct": score_image(detector.detect(img), p.scene_dict)[0]}
        for p, img in zip(prompts, images, strict=True)
    ]
    assert result["rows"][1]["overall"] == pytest.approx(summarize(rows)["overall"])
    assert f"| {S} (sides up to {TESTBED_SIDES[-1]}) |" in capsys.readouterr().out
    bad = (
        (["--forced", str(S + 1)], "--forced"),
        (["--prompts", "0"], "--prompts"),
        (["--skip", str(S)], "--skip"),
        (["--skip", "1", "--forced", str(S)], "--forced"),
    )
    for argv, what in bad:
        with pytest.raises(SystemExit) as exit_info:
            oracle.main(argv)
        assert exit_info.value.code == 2
        assert what in capsys.readouterr().err


def test_skipped_last_scales_decode_the_running_sum_of_the_truth(model, prompts):
    """--skip K with N = S − K: the ground truth's scales up to S − K and nothing after them, the same image
    whatever the seed, and not the reconstruction (the last scales are missing)."""
    a = oracle.oracle_images(model, prompts, S - 1, seed=0, skip=1)
    b = oracle.oracle_images(model, prompts, S - 1, seed=7, skip=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, oracle.oracle_images(model, prompts, S, seed=0))
