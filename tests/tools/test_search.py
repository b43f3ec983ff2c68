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


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("search.k=0", r"search.k=0 is not allowed: an int in \[1, 6\]"),
        ("search.objective=lpips", "search.objective='lpips'"),
        ("search.budget=-1", "search.budget=-1"),
        ("search.strategy=random", "grid or binary"),
    ],
)
def test_bad_search_settings(tmp_path, override, match):
    cfg = compose_config([override, f"search.out={tmp_path / 'p.json'}"], tmp_path, "search")
    with pytest.raises(UserError, match=match):
        run_search(cfg)
    assert not (tmp_path / "p.json").exists()
