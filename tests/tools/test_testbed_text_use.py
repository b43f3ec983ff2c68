"""benchmarks/testbed_text_use.py: teacher-forced bit loss per scale under the true, colour-swapped, another scene's
and the unconditional caption; its captions, its losses against transformer_losses itself, and bad settings exit 2."""

import json

import pytest
import torch

import moss_models
from moss_models.testbed import CARD_FILE, TESTBED_SIDES, WEIGHTS_DIR, transformer_losses

from .conftest import load_script

text_use = load_script("benchmarks/testbed_text_use.py", "testbed_text_use")


def test_colour_swaps_and_other_captions():
    assert (
        text_use.swap_colours("a red circle and a blue square on a plain background")
        == "a blue circle and a red square on a plain background"
    )
    assert text_use.swap_colours("two red circles and a red star on a noisy background") is None  # one colour
    assert text_use.swap_colours("a green star on a striped background") is None
    assert (
        text_use.swap_colours("a red star and a blue circle and a green square on a plain background") is None
    )
    captions = ["a", "a", "b", "c"]
    others = text_use.other_captions(captions)
    assert others == ["b", "b", "c", "a"] and all(o != c for o, c in zip(others, captions, strict=True))
    with pytest.raises(ValueError, match="two different captions"):
        text_use.other_captions(["a", "a"])


@pytest.mark.skipif(not (WEIGHTS_DIR / CARD_FILE).is_file(), reason="the shipped testbed is not present")
def test_losses_are_transformer_losses_of_each_caption(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        model = moss_models.load("testbed")
        scenes = text_use.two_colour_scenes(5, 424242, model.default_resolution)
        assert all(text_use.swap_colours(c) == s for _, c, s in scenes)
        # batches of 2 leave a last batch of one scene: its "other" caption still comes from another scene
        losses = text_use.scale_losses(model, scenes, batch=2)
        assert set(losses) == set(text_use.VARIANTS)
        assert all(len(v) == len(TESTBED_SIDES) for v in losses.values())
        family = model.family
        schedule = family.schedule(model.default_resolution, 1.0)
        images = torch.stack([s[0] for s in scenes])
        with torch.no_grad():
            direct = transformer_losses(family, family.text_encoder, images, [s[2] for s in scenes], schedule)
        for s in range(len(TESTBED_SIDES)):  # the swapped captions' loss, batched differently
            assert losses["swapped"][s] == pytest.approx(float(direct[f"loss_s{s}"]), rel=1e-5)
        # another scene's caption costs more than the scene's own at the scales where the objects show
        assert losses["other"][5] > losses["true"][5]

        out = tmp_path / "text_use.json"
        argv = ["--scenes", "4", "--batch", "4", "--threads", "1", "--out", str(out)]
        assert text_use.main(argv) == 0
        saved = json.loads(out.read_text())
        assert saved["scenes"] == 4 and saved["sides"] == list(TESTBED_SIDES)
        assert "| swapped (rise) |" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)
    for argv in (["--scenes", "1"], ["--batch", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            text_use.main(argv)
        assert exit_info.value.code == 2
