"""tools/bench.py: the paper-table accounting and the interleaved measurement."""

import json

import pytest
import torch

from moss_run.bench import ABOVE_FLOP_BOUND, NOISY, PAPER_TABLE1, markdown, run_bench, speedup_flags
from moss_run.errors import UserError

from .conftest import compose_config

GIB = 2**30


def test_paper_table_kv_column_and_flops(tmp_path, capsys):
    cfg = compose_config(
        ["+preset=paper_table", "bench.moss=[off,k2,k5,skip2]", f"bench.out_dir={tmp_path}"],
        tmp_path,
        "bench",
    )
    out = run_bench(cfg)
    rows = {r["moss"]: r for r in out["rows"]}
    # k2…k5 match Table 1 to two decimals; the baseline's 6,425 cached tokens are 3.137 GiB (the paper prints 3.13)
    for name in ("k2", "k5"):
        assert round(rows[name]["kv_cache_bytes"] / GIB, 2) == PAPER_TABLE1["infinity_2b"][name]["kv_gb"]
    assert rows["off"]["kv_cache_bytes"] == 6425 * 2**19
    assert rows["off"]["tokens_processed"] == 10521 and rows["k5"]["tokens_processed"] == 921 + 988
    assert [r["scales"] for r in out["rows"]] == ["13", "11+2", "8+5", "11 (skip 2)"]
    # skip2 runs the first 11 scales; the 11th reads the cache of the first 10 (2521 tokens) and adds nothing
    assert rows["skip2"]["tokens_processed"] == 10521 - 2304 - 4096
    assert rows["skip2"]["kv_cache_bytes"] == 2521 * 2**19 and rows["skip2"]["forward_passes"] == 11
    assert 110e12 < rows["off"]["flops_backbone"] < 120e12
    assert rows["off"]["flop_ratio"] == 1 < rows["k2"]["flop_ratio"] < rows["k5"]["flop_ratio"]
    assert 6 < rows["k5"]["flop_ratio"] < 8  # the compute floor MoSs k5 leaves
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


def test_threads_cpu_time_and_load_are_recorded(tmp_path, capsys):
    before = torch.get_num_threads()
    cfg = compose_config(
        [
            "bench.moss=[off,k2]",
            "bench.repeats=2",
            "bench.warmup=0",
            "bench.threads=1",
            f"bench.out_dir={tmp_path}",
        ],
        tmp_path,
        "bench",
    )
    out = run_bench(cfg)
    assert torch.get_num_threads() == before  # restored for the rest of this process
    meta = out["meta"]
    assert meta["threads"] == 1 and meta["threads_setting"] == 1 and meta["cpu_count"] >= 1
    assert "cpu" in meta and isinstance(
        meta["cpu_isa"], list
    )  # which kernels oneDNN ran (tools/moss_run/machine.py)
    for key in ("loadavg_before", "loadavg_after"):
        assert len(meta[key]) == 3 and all(x >= 0 for x in meta[key])
    for r in out["rows"]:
        assert len(r["cpu_s"]["values"]) == len(r["wall_s"]["values"]) == 2
        assert r["cpu_s"]["median"] > 0 and r["backbone_s"]["median"] <= r["wall_s"]["median"]
        assert isinstance(r["flag"], list)
    assert out["rows"][0]["flag"] == []  # the reference
    table = capsys.readouterr().out
    assert "torch threads 1 (bench.threads) on" in table and "load average (1/5/15 min)" in table
    assert "| CPU s / wall s |" in table
    saved = json.loads(next(tmp_path.glob("cpu*-infinity_tiny-cssa-*.json")).read_text())
    assert saved["meta"]["threads"] == 1 and "cpu_s" in saved["rows"][1] and "flag" in saved["rows"][1]


def test_default_out_dir_is_git_ignored_outputs():
    cfg = compose_config([], None, "bench")
    assert cfg.bench.out_dir == f"{cfg.paths.log_dir}/bench" and cfg.bench.out_dir.endswith("outputs/bench")
    assert cfg.bench.threads is None
    assert compose_config(["+preset=cpu"], None, "bench").bench.threads == 1


@pytest.mark.parametrize(
    ("median", "q25", "q75", "bound", "flags"),
    [
        (12.3, 11.9, 12.7, 12.67, []),  # one thread: tight, under the bound
        (12.0, 1.2, 35.6, 12.67, [NOISY]),  # two threads on a loaded machine: spread 34.4 > effect 11
        (1.05, 0.95, 1.10, 2.0, [NOISY]),  # within noise of no change
        (0.90, 0.88, 0.91, 2.0, []),  # a clear slowdown is an effect too
        (3.0, 2.9, 3.1, 2.5, [ABOVE_FLOP_BOUND]),  # 0.5 over the bound, spread 0.2
        (2.6, 2.3, 2.9, 2.5, []),  # 0.1 over the bound, within its spread 0.6
        (1.5, 0.5, 2.5, 1.2, [NOISY]),  # over the bound by 0.3, but the spread (2.0) covers it
        (1.0, 1.0, 1.0, 1.0, []),  # the reference
    ],
)
def test_speedup_flags_on_made_up_numbers(median, q25, q75, bound, flags):
    assert speedup_flags(median, q25, q75, bound) == flags


def test_flagged_rows_are_marked_in_the_table(tmp_path):
    cfg = compose_config([f"bench.out_dir={tmp_path}"], tmp_path, "bench")

    def row(name, speedup, bound):
        med, q25, q75 = speedup
        s = {"median": med, "q25": q25, "q75": q75}
        return {
            "moss": name, "scales": "x", "backbone_s": s, "speedup": s, "flop_ratio": bound, "stage_s": {},
            "cpu_s": {"median": 1.0}, "wall_s": {"median": 1.0}, "tokens_processed": 1, "forward_passes": 1,
            "kv_cache_bytes": 0, "peak_memory_bytes": None, "flops_backbone": 1e9, "achieved_flops_per_s": 1e9,
            "flag": speedup_flags(med, q25, q75, bound) if name != "off" else [],
        }  # fmt: skip

    rows = [row("off", (1, 1, 1), 1), row("k2", (3.0, 2.9, 3.1), 2.5), row("k5", (12.0, 1.2, 35.6), 12.67)]
    meta = {
        "model": "m", "resolution": 64, "device": "cpu2", "mode": "measure", "batch_size": 1, "cfg": 3,
        "dtype": "fp32", "attn": "cssa", "torch": "2", "date": "d", "repeats": 5, "warmup": 1, "threads": 8,
        "threads_setting": None, "cpu_count": 8, "loadavg_before": None, "loadavg_after": None,
    }  # fmt: skip
    table = markdown(cfg, rows, meta)
    assert (
        "| 3.00× [2.90, 3.10] ⚠ above_flop_bound |" in table and "| 12.00× [1.20, 35.60] ⚠ noisy |" in table
    )
    assert "| 1.00× [1.00, 1.00] |" in table
    assert (
        "⚠ k5: noisy. The speedup's spread (q75 − q25 = 34.40) is wider than its effect (|median − 1| = 11.00)"
        in table
    )
    assert "⚠ k2: above its FLOP bound. The median speedup 3.00× exceeds the FLOP bound 2.50×" in table
    assert (
        "torch threads 8 (torch default, bench.threads=null) on 8 CPUs (unknown CPU); load average (1/5/15 min) n/a"
        in table
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["bench.moss=[off,k9]"],
            r"bench.moss entry 'k9' is not a moss config; choose from \['cfgoff', 'fastervar'",
        ),
        (["bench.mode=fast"], r"bench.mode='fast'; choose measure or accounting"),
        (["bench.moss=[]"], r"bench.moss is empty"),
        (["bench.threads=0"], r"bench.threads=0: give the number of torch threads \(an integer >= 1"),
        (["bench.threads=two"], r"bench.threads='two': .* or null to leave torch's default"),
    ],
)
def test_bad_bench_settings(tmp_path, overrides, match):
    cfg = compose_config(
        [*overrides, f"bench.out_dir={tmp_path}", "bench.repeats=1", "bench.warmup=0"], tmp_path, "bench"
    )
    with pytest.raises(UserError, match=match):
        run_bench(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_graph_entries_need_cuda_and_name_a_known_option(tmp_path):
    cfg = compose_config(["bench.moss=[off,k5,k5@graphs]", f"bench.out_dir={tmp_path}"], tmp_path, "bench")
    with pytest.raises(UserError, match=r"replay CUDA graphs, which need a CUDA GPU"):
        run_bench(cfg)
    cfg = compose_config(["bench.moss=[off,k5@fast]", f"bench.out_dir={tmp_path}"], tmp_path, "bench")
    with pytest.raises(UserError, match="the only option after a config name is @graphs"):
        run_bench(cfg)


def test_a_graphed_row_is_paired_with_the_first_graphed_row():
    from moss_run.bench import _reference

    names = ["off", "k5", "off@graphs", "k5@graphs"]
    assert [_reference(n, names) for n in names] == ["off", "off", "off@graphs", "off@graphs"]
    assert _reference("k5@graphs", ["off", "k5@graphs"]) == "k5@graphs"


def test_graphed_entries_run_beside_the_eager_ones(tmp_path):
    # The bench plumbing of name@graphs on the CPU, with emulated capture (its timings mean nothing here).
    cfg = compose_config(
        ["bench.moss=[off,k5,off@graphs,k5@graphs]", "bench.repeats=1", "bench.warmup=1",
         "bench.graph_capture=emulate", f"bench.out_dir={tmp_path}"],
        tmp_path, "bench",
    )  # fmt: skip
    rows = {r["moss"]: r for r in run_bench(cfg)["rows"]}
    assert rows["k5@graphs"]["speedup_reference"] == "off@graphs" and rows["k5"]["speedup_reference"] == "off"
    assert rows["off@graphs"]["speedup"]["median"] == 1.0 and rows["off@graphs"]["flag"] == []
    assert rows["k5@graphs"]["flops_backbone"] == rows["k5"]["flops_backbone"]
    assert rows["k5@graphs"]["flop_ratio"] == rows["k5"]["flop_ratio"] > 1
