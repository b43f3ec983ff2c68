"""benchmarks/lpips_reference.py: LPIPS on the LPIPS repository's example pair, against its printed digits.

The real example images and weights are not here; random ones show that the script measures through moss's
LPIPS, writes what it measured, and fails (exit 1) when the digits are not the official ones."""

import json

import numpy as np
import torch
from PIL import Image

from ..eval.test_quality_models import random_backbone
from .conftest import load_script

reference = load_script("benchmarks/lpips_reference.py", "lpips_reference")


def test_measures_through_moss_lpips_and_fails_on_other_digits(tmp_path, capsys):
    from moss_eval.quality.lpips import load_lpips
    from moss_eval.quality.lpips_jax import state_digest

    weights = tmp_path / "alex.pth"
    torch.save({k: v for k, v in random_backbone("alexnet").items() if k.startswith("features.")}, weights)
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("ex_ref", "ex_p0", "ex_p1"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{name}.png")
    out = tmp_path / "result.json"
    code = reference.main(["--weights", str(weights), "--images", str(images), "--out", str(out)])
    result = json.loads(out.read_text())
    lpips = load_lpips("alex", weights)
    ref, p0 = (reference.load_png(images / f"{n}.png") for n in ("ex_ref", "ex_p0"))
    assert result["distances"]["ex_ref-ex_p0"] == float(lpips(ref, p0))
    assert result["weights_state_digest"] == state_digest(torch.load(weights, weights_only=True))
    assert code == 1 and result["reproduces_official"] is False  # random weights are not LPIPS
    assert reference.main(["--weights", str(weights), "--images", str(tmp_path)]) == 2
    assert "lacks ex_ref.png, ex_p0.png, ex_p1.png" in capsys.readouterr().err
