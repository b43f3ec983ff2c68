"""FidelityEvaluator on two tiny run directories: exact PSNR/SSIM, twins, LPIPS on or skipped, missing reference."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from moss_eval.quality.base import EvalInput, EvalResult
from moss_eval.quality.fidelity_eval import FidelityEvaluator

from .conftest import write_run_dir

SIZE = 32  # SSIM needs >= 6 px, SqueezeNet-LPIPS >= 17; MS-SSIM (176 px) is None here


def write_run(path, items, moss):
    """``items``: (prompt, seed, uint8 (H, W, 3) image)."""
    return write_run_dir(path, [{"prompt": p, "seed": s, "image": im} for p, s, im in items], moss=moss)


def constant(value):
    return np.full((SIZE, SIZE, 3), value, dtype=np.uint8)


def pattern(seed):
    """Values in [50, 200], so adding a few levels never clips."""
    return np.random.default_rng(seed).integers(50, 201, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture
def runs(tmp_path):
    """A moss=off reference and a run: an exact offset, two constants, an identical image, and one without twin."""
    ref = write_run(
        tmp_path / "off",
        [
            ("a cat", 0, pattern(1)),
            ("a dog", 1, constant(128)),
            ("a fox", 2, pattern(3)),
            ("only here", 9, pattern(4)),
        ],
        "off",
    )
    run = write_run(
        tmp_path / "k2",
        [
            ("a cat", 0, pattern(1) + 10),  # every pixel off by 10 levels
            ("a dog", 1, constant(64)),
            ("a fox", 2, pattern(3)),  # identical to its twin
            ("a cat", 5, pattern(5)),  # same prompt, other seed: no twin
        ],
        "k2",
    )
    return tmp_path, ref, run


def test_exact_psnr_ssim_and_missing_twin(runs, caplog):
    root, _, records = runs
    with caplog.at_level(logging.WARNING):
        result = FidelityEvaluator(lpips_weights=None).evaluate(
            EvalInput(run_dir=root / "k2", records=records, reference_dir=root / "off")
        )
    offset, constants, same = (result.per_image[i] for i in ("00000", "00001", "00002"))
    assert offset["twin_id"] == "00000" and offset["psnr"] == pytest.approx(
        20 * math.log10(255 / 10), abs=1e-4
    )
    # constant images: MSE = (64/255)², SSIM = (2ab + C1) / (a² + b² + C1) with C1 = (0.01 · 1)²
    a, b, c1 = 64 / 255, 128 / 255, 1e-4
    assert constants["psnr"] == pytest.approx(20 * math.log10(255 / 64), abs=1e-4)
    assert constants["ssim"] == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert all(v["ms_ssim"] is None for v in result.per_image.values())  # 32 px < 176 px

    # the image without a twin is listed and warned about, not dropped silently
    assert "00003" not in result.per_image
    assert result.info["no_twin"] == ["00003"] and result.scores["no_twin"] == 1
    assert result.info["reference_only"] == ["00003"]
    assert "1 image(s)" in caplog.text and "have no twin" in caplog.text and "00003" in caplog.text

    assert result.scores["pairs"] == 3
    assert result.scores["psnr_mean"] == math.inf  # one identical pair
    assert result.scores["psnr_median"] == pytest.approx(20 * math.log10(255 / 10), abs=1e-4)
    assert result.scores["ssim_mean"] == pytest.approx(
        (offset["ssim"] + constants["ssim"] + same["ssim"]) / 3, rel=1e-9
    )
    assert result.scores["ms_ssim_mean"] is None
    assert result.info["identical_pairs"] == 1

    # LPIPS off: skipped, said so in info and in a warning
    assert "lpips_mean" not in result.scores
    assert result.info["lpips"]["skipped"] is True
    assert "MOSS_LPIPS_WEIGHTS" in result.info["lpips"]["reason"]
    assert "LPIPS skipped" in caplog.text

    # what is written is strict JSON (inf as "inf") and reads back
    result.write(root / "k2")
    back = EvalResult.read(root / "k2", "fidelity")
    assert back.scores["psnr_mean"] == "inf" and back.per_image["00001"]["ssim"] == pytest.approx(
        constants["ssim"]
    )


def test_no_reference_is_an_error(runs):
    root, _, records = runs
    with pytest.raises(ValueError, match=r"eval\.fidelity\.reference is null.*reference_dir"):
        FidelityEvaluator().evaluate(EvalInput(run_dir=root / "k2", records=records))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FidelityEvaluator(reference=str(root / "nowhere")).evaluate(
            EvalInput(run_dir=root / "k2", records=records)
        )


def test_reference_argument_overrides_the_input(runs):
    root, _, records = runs
    # reference_dir points at the run itself (every image its own twin); the argument wins.
    result = FidelityEvaluator(reference=str(root / "off")).evaluate(
        EvalInput(run_dir=root / "k2", records=records, reference_dir=root / "k2")
    )
    assert result.info["reference_dir"] == str(root / "off") and result.scores["pairs"] == 3


def test_missing_png_is_reported(runs, caplog):
    root, _, records = runs
    (root / "off" / "images" / "00001.png").unlink()
    with caplog.at_level(logging.WARNING):
        result = FidelityEvaluator().evaluate(
            EvalInput(run_dir=root / "k2", records=records, reference_dir=root / "off")
        )
    assert result.scores["pairs"] == 2 and result.scores["missing_images"] == 1
    assert result.info["missing_images"] == [str(root / "off" / "images" / "00001.png")]
    assert "missing" in caplog.text


def test_lpips_on(runs, tmp_path_factory):
    import torchvision

    from moss_eval.quality.lpips import load_lpips

    root, _, records = runs
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.squeezenet1_1().state_dict().items()}
    g = torch.Generator().manual_seed(0)
    backbone = {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}
    path = tmp_path_factory.mktemp("lpips") / "squeezenet1_1-b8a52dc0.pth"
    torch.save(backbone, path)

    ev = FidelityEvaluator(lpips_net="squeeze", lpips_weights=str(path))
    assert [wf.path for wf in ev.weight_files()] == [str(path)]
    result = ev.evaluate(EvalInput(run_dir=root / "k2", records=records, reference_dir=root / "off"))
    assert result.info["lpips"]["skipped"] is False and result.info["lpips"]["net"] == "squeeze"
    assert result.per_image["00002"]["lpips"] == pytest.approx(0.0, abs=1e-7)  # identical pair
    assert result.per_image["00000"]["lpips"] > 0
    # the same numbers as the LPIPS model on the pair's PNGs
    model = load_lpips("squeeze", path)
    a = torch.from_numpy(pattern(1) + 10).permute(2, 0, 1)[None].float() / 255
    b = torch.from_numpy(pattern(1)).permute(2, 0, 1)[None].float() / 255
    assert result.per_image["00000"]["lpips"] == pytest.approx(float(model(a, b)[0]), rel=1e-5)
    values = [v["lpips"] for v in result.per_image.values()]
    assert result.scores["lpips_mean"] == pytest.approx(sum(values) / 3)
    assert result.scores["lpips_median"] == pytest.approx(sorted(values)[1])


def test_bad_lpips_net():
    with pytest.raises(ValueError, match=r"eval\.fidelity\.lpips_net='resnet'.*alex, vgg, squeeze"):
        FidelityEvaluator(lpips_net="resnet")
