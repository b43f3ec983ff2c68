"""tools/bench.py: the paper-table accounting and the interleaved measurement."""

import json

import pytest

from moss_run.bench import PAPER_TABLE1, run_bench
from moss_run.errors import UserError

from .conftest import compose_config

GIB = 2**30


def test_paper_table_kv_column_and_flops(tmp_path, capsys):
    cfg = compose_config(
        ["+preset=paper_table", "bench.moss=[off,k2,k5,skip2]", f"bench.out_dir={tmp_path}"], tmp_path, "bench"
    )
    out = run_bench(cfg)
    rows = {r["moss"]: r for r in out["rows"]}
    # k2…k5 match Table 1 to two decimals; the baseline's 6,425 cached tokens are 3.137 GiB (the paper prints 3.13)
    for name in ("k2", "k5"):
        assert round(rows[name]["kv_cache_bytes"] / GIB, 2) == PAPER_TABLE1[name]["kv_gb"]
    assert rows["off"]["kv_cache_bytes"] == 6425 * 2**19
    assert rows["off"]["tokens_processed"] == 10521 and rows["k5"]["tokens_processed"] == 921 + 988
    assert [r["scales"] for r in out["rows"]] == ["13", "11+2", "8+5", "11 (skip 2)"]
    # skip2 runs the first 11 scales; the 11th reads the cache of the first 10 (2521 tokens) and adds nothing
    assert rows["skip2"]["tokens_processed"] == 10521 - 2304 - 4096
    assert rows["skip2"]["kv_cache_bytes"] == 2521 * 2**19 and rows["skip2"]["forward_passes"] == 11
    assert 110e12 < rows["off"]["flops_backbone"] < 120e12
    assert rows["off"]["flop_ratio"] == 1 < rows["k2"]["flop_ratio"] < rows["k5"]["flop_ratio"]
    assert rows["k5"]["kv_reduction"] == pytest.approx(1 - 921 / 6425)
    table = capsys.readouterr().out
    assert "| k5 | 8+5 (8+5) | 1909 | 9 | 0.45 (0.45) | 85.67% (85.62%)" in table
    saved = json.loads(next(tmp_path.glob("meta-infinity_2b-cssa-*.json")).read_text())
    assert saved["meta"]["mode"] == "accounting" and len(saved["rows"]) == 4
    assert next(tmp_path.glob("meta-infinity_2b-cssa-*.md")).read_text() in table


def test_interleaved_measurement_on_the_tiny_model(tmp_path, capsys):
    cfg = compose_config(
        ["bench.moss=[off,k2,k5]", "bench.repeats=2", "bench.warmup=1", f"bench.out_dir={tmp_path}"],
        tmp_path,
        "bench",
    )
    out = run_bench(cfg)
    rows = {r["moss"]: r for r in out["rows"]}
    assert set(rows) == {"off", "k2", "k5"}
    for r in out["rows"]:
        assert len(r["backbone_s"]["values"]) == 2
        assert len(r["speedup"]["values"]) == 2
        assert r["achieved_flops_per_s"] == pytest.approx(r["flops_backbone"] / r["backbone_s"]["median"])
        assert r["stage_s"]["draft"] > 0
    assert rows["off"]["speedup"]["median"] == 1.0
    assert rows["k5"]["flop_ratio"] > rows["k2"]["flop_ratio"] > 1
    assert rows["k5"]["forward_passes"] == 3 and rows["k5"]["kv_cache_bytes"] < rows["off"]["kv_cache_bytes"]
    assert "speedup (paired median)" in capsys.readouterr().out
    assert list(tmp_path.glob("cpu*-infinity_tiny-cssa-*.json"))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["bench.moss=[off,k9]"], r"bench.moss entry 'k9' is not a moss config; choose from \['k2'"),
        (["bench.mode=fast"], r"bench.mode='fast'; choose measure or accounting"),
        (["bench.moss=[]"], r"bench.moss is empty"),
    ],
)
def test_bad_bench_settings(tmp_path, overrides, match):
    cfg = compose_config(
        [*overrides, f"bench.out_dir={tmp_path}", "bench.repeats=1", "bench.warmup=0"], tmp_path, "bench"
    )
    with pytest.raises(UserError, match=match):
        run_bench(cfg)
