"""tools/search_thresholds.py: the paper's top-down threshold search against the full model, to a preset file."""

import json

import pytest

from moss_run.errors import UserError
from moss_run.search import run_search

from .conftest import compose_config


def test_search_writes_a_preset_with_how_it_was_found(tmp_path, capsys):
    out = tmp_path / "preset.json"
    cfg = compose_config(
        ["search.step=50", "search.budget=100", "generation.resolution=256", f"search.out={out}",
         "search.conditions=[a red fox]"],
        tmp_path, "search",
    )  # fmt: skip
    preset = run_search(cfg)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(preset))
    # a budget wider than any drop accepts every move: the finest boundary goes down to the grid's only value (50);
    # the coarser one then has no value between 50 and 100 left to try
    assert saved["thresholds"] == [100.0, 50.0] and saved["empty_bands"] == []
    assert saved["tuned"] is False and saved["weights"] == "random" and saved["family"] == "infinity"
    assert saved["how"]["evaluations"] == len(saved["trace"]) == 2 and saved["trace"][0]["boundary"] == -1
    assert saved["how"]["conditions"] == ["a red fox"] and saved["how"]["seeds"] == [0]
    assert "UNTUNED" in capsys.readouterr().out


def test_shapes_objective_scores_the_testbed_against_its_prompts_ground_truth(tmp_path):
    from moss_eval.quality.shapes import evaluation_prompts

    out = tmp_path / "preset.json"
    cfg = compose_config(
        ["model=testbed", "search.objective=shapes", "search.shapes_prompts=5", "search.step=50",
         "search.budget=1", f"search.out={out}"],
        tmp_path, "search",
    )  # fmt: skip
    saved = json.loads(json.dumps(run_search(cfg)))
    assert "Shapes-GenEval" in saved["how"]["objective"] and saved["tuned"] is True
    # the conditions are the first five prompts of seed 1, one per task, never the seed-0 evaluation set
    assert saved["how"]["conditions"] == [p.prompt for p in evaluation_prompts(5, 1)]
    assert saved["how"]["conditions"] != [p.prompt for p in evaluation_prompts(5, 0)]
    # one prompt per task: the overall accuracy is a count of correct images over 5
    for score in [saved["how"]["reference_score"], *(t["score"] for t in saved["trace"])]:
        assert 0.0 <= score <= 1.0 and abs(score * 5 - round(score * 5)) < 1e-9, score
    # a budget of 1 accepts every move, as for psnr
    assert saved["thresholds"] == [100.0, 50.0]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("search.k=0", r"search.k=0 is not allowed: an int in \[1, 6\]"),
        ("search.objective=lpips", "search.objective='lpips'"),
        ("search.budget=-1", "search.budget=-1"),
        ("search.strategy=random", "grid or binary"),
        ("search.objective=shapes", r"search.objective=shapes needs .* model=testbed \(got infinity_tiny"),
        ("search.shapes_prompts=0", "search.shapes_prompts=0 is not allowed: an int >= 1"),
    ],
)
def test_bad_search_settings(tmp_path, override, match):
    cfg = compose_config([override, f"search.out={tmp_path / 'p.json'}"], tmp_path, "search")
    with pytest.raises(UserError, match=match):
        run_search(cfg)
    assert not (tmp_path / "p.json").exists()
