"""tools/bench.py: MoSs against the baseline, side by side in one process.

``measure`` mode builds one model, then times every configuration in turn, interleaved (A B C … A B C …) after
warm-up rounds, with the same prompts and seeds. Latency is the backbone (everything but the VAE decode, as the
paper measures); the speedup is the median over rounds of the paired ratio baseline/config within a round, which
cancels drifts of a shared machine. FLOPs are counted exactly on the meta device with the same passes
(``count_backbone_flops``), so the FLOP ratio is the compute bound on the speedup. Spreads are quartiles over the
rounds, taken inside the observed values (``statistics.quantiles(method="inclusive")``: with two rounds, q25 and
q75 lie between them, never beyond).

What the machine was doing is recorded with every result: the torch thread count (``bench.threads`` pins it with
``torch.set_num_threads`` before the model is built; ``null`` leaves torch's default), the process CPU seconds
(``time.process_time``) beside the wall seconds of each generation, and the load average before and after. A
config's speedup is flagged (:func:`speedup_flags`) when its interquartile range is wider than its effect, or when
its median beats the FLOP bound by more than that range.

``accounting`` mode needs no GPU and no weights: scales, tokens, KV cache and FLOPs from the meta device, with the
paper's Table 1 numbers beside them.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from moss_eval import StageTimer, atomic_write_text, peak_memory
from moss_models import Method, Moss, dry_run
from moss_models.core.graphs import CAPTURE_MODES, PassGraphs
from moss_run.errors import UserError
from moss_run.machine import cpu_model
from moss_run.models import build
from moss_run.prepare import build_object

log = logging.getLogger("moss.bench")
GIB = 2**30
CONF = Path(__file__).resolve().parents[2] / "conf"

# MoSs paper, Table 1 (1024², RTX 4090, batch 1, backbone latency without the VQVAE), per model. HART's KV column
# is Σpn² tokens in decimal GB (the last scale and the text prefix as one token counted; see the README's HART
# section), so it is not the quantity our KV column counts.
PAPER_TABLE1 = {
    "infinity_2b": {
        "off": {"scales": "13", "latency_s": 1.29, "kv_gb": 3.13, "speedup": 1.0},
        "k2": {"scales": "11+2", "latency_s": 0.63, "kv_gb": 2.01, "speedup": 2.05},
        "k3": {"scales": "10+3", "latency_s": 0.45, "kv_gb": 1.23, "speedup": 2.87},
        "k4": {"scales": "9+4", "latency_s": 0.38, "kv_gb": 0.73, "speedup": 3.39},
        "k5": {"scales": "8+5", "latency_s": 0.26, "kv_gb": 0.45, "speedup": 4.96},
    },
    "hart_0.7b": {
        "off": {"scales": "14", "latency_s": 1.08, "kv_gb": 2.79, "speedup": 1.0},
        "k2": {"scales": "12+2", "latency_s": 0.69, "kv_gb": 0.90, "speedup": 1.56},
    },
}


def method_by_name(name: str, cfg: DictConfig) -> Method:
    """A ``conf/moss/<name>.yaml`` method, composed into this run's config (its interpolations see this model's
    family and the run's ``attn`` and ``dispatch`` groups) and instantiated like the main job's."""
    path = CONF / "moss" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in (CONF / "moss").glob("*.yaml"))
        raise UserError(f"bench.moss entry {name!r} is not a moss config; choose from {choices}")
    scope = copy.deepcopy(cfg)
    with open_dict(scope):
        scope.moss = OmegaConf.load(path)
    return build_object(scope.moss, f"bench.moss entry {name!r}")


def scales_label(grids, method: Method) -> str:
    """``8+5`` (drafter + packed scales), ``11 (skip 2)``, or the scale count; from the method's own plan."""
    plan = method.plan(grids)
    packed = sum(len(s.scales) for s in plan.steps if s.kind == "packed")
    full = sum(1 for s in plan.steps if s.kind == "full")
    label = f"{full}+{packed}" if packed else str(full)
    skipped = len(plan.skipped_scales)
    return f"{label} (skip {skipped})" if skipped else label


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu{os.cpu_count()}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=CONF.parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _spread(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) >= 2 else [values[0]] * 3
    return {
        "median": statistics.median(values),
        "q25": q[0],
        "q75": q[2],
        "min": min(values),
        "max": max(values),
        "values": values,
    }


NOISY = "noisy"  # the speedup's IQR is wider than its effect
ABOVE_FLOP_BOUND = "above_flop_bound"  # the median beats the compute bound by more than its IQR


def speedup_flags(median: float, q25: float, q75: float, flop_bound: float) -> list[str]:
    """Why a measured speedup should not be quoted as it stands ([] when nothing is wrong).

    The spread is the interquartile range ``q75 - q25`` of the paired speedups over the rounds (the quartiles the
    table prints; robust to one disturbed round, unlike max - min). ``noisy``: the spread is wider than the effect
    ``|median - 1|``, so the rounds do not agree the config is faster (or slower) at all. ``above_flop_bound``:
    ``median - flop_bound`` exceeds the spread; at equal efficiency per FLOP the speedup is at most the FLOP ratio,
    so either the baseline ran slower per FLOP than the config (overheads that shrink with the passes,
    memory-bound attention at the large scales) or the timing is disturbed. Both are checked the same way for every row; the reference row (speedups exactly 1) has none.
    """
    spread = q75 - q25
    flags = []
    if spread > abs(median - 1):
        flags.append(NOISY)
    if median - flop_bound > spread:
        flags.append(ABOVE_FLOP_BOUND)
    return flags


def gemm_rate(device: torch.device, n: int = 8192, repeats: int = 20) -> float | None:
    """The bf16 matmul rate this GPU sustains (FLOP/s of an ``n³`` GEMM), the realistic ceiling beside the
    datasheet peak; None off CUDA."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1e3)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on this platform: recorded as null, shown as "n/a"
        return None


def _threads_setting(cfg: DictConfig) -> int | None:
    threads = cfg.bench.get("threads")
    if threads is None:
        return None
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise UserError(
            f"bench.threads={threads!r}: give the number of torch threads (an integer >= 1, e.g. 1 for a stable "
            "CPU timing), or null to leave torch's default"
        )
    return threads


GRAPHS = "@graphs"  # a bench.moss entry ``k5@graphs``: the method with every pass replayed as a CUDA graph


def _methods(cfg: DictConfig) -> dict[str, Method]:
    methods = {}
    for name in cfg.bench.moss:
        base, at, option = str(name).partition("@")
        if at and at + option != GRAPHS:
            raise UserError(f"bench.moss entry {name!r}: the only option after a config name is {GRAPHS}")
        methods[name] = method_by_name(base, cfg)
    return methods


def _reference(name: str, names: list[str]) -> str:
    """The row a config's speedup is paired with: the first entry run the same way (eager, or with graphs)."""
    same = [n for n in names if n.endswith(GRAPHS) == name.endswith(GRAPHS)]
    return same[0] if same else names[0]


def _thresholds(method: Method) -> list[float] | None:
    return list(method.thresholds) if isinstance(method, Moss) else None


def accounting_rows(cfg: DictConfig) -> list[dict]:
    generation = build_object(cfg.generation, "generation")
    res, ratio = generation.resolution, generation.aspect_ratio
    meta = build(instantiate(cfg.model), "meta")  # the real modules on the meta device: no memory, no weights
    grids = meta.family.schedule(res, ratio).grids
    rows = []
    for name, method in _methods(cfg).items():
        try:
            run = dry_run(
                meta, method, resolution=res, aspect_ratio=ratio, batch_size=1, sampling=generation.sampling,
                text_tokens=int(cfg.bench.text_tokens),
            )  # fmt: skip
        except ValueError as err:  # a method this model cannot run (e.g. FasterVAR without rank tables)
            raise UserError(f"bench.moss entry {name!r} with model={cfg.model.name}: {err}") from None
        rows.append(
            {
                "moss": name,
                "thresholds": _thresholds(method),
                "scales": scales_label(grids, method),
                "tokens_processed": run.tokens_processed,
                "forward_passes": run.forward_passes,
                "kv_cache_bytes": run.kv_cache_bytes,
                "flops_backbone": run.flops,
                "flops_per_pass": run.flops_per_pass,
            }
        )
    base = rows[0]
    for r in rows:
        r["kv_reduction"] = 1 - r["kv_cache_bytes"] / base["kv_cache_bytes"]
        r["flop_ratio"] = base["flops_backbone"] / r["flops_backbone"]
    return rows


def measure_rows(cfg: DictConfig, device: torch.device) -> list[dict]:
    names = list(cfg.bench.moss)
    configs = _methods(cfg)
    generation = build_object(cfg.generation, "generation")
    sampling = generation.sampling
    generator = build(instantiate(cfg.model), device)
    prompts = list(cfg.bench.prompts) * int(generation.batch_size)
    seeds = list(range(cfg.seed, cfg.seed + len(prompts)))
    # encode once: the text encoder is not part of the backbone
    text = generator.family.condition(prompts, per_image=sampling.per_image)
    res, ratio = generation.resolution, generation.aspect_ratio
    grids = generator.family.schedule(res, ratio).grids

    # one set of captured passes for the run: a config's warm-up round captures, its timed rounds replay
    graphs = PassGraphs(str(cfg.bench.get("graph_capture", "cuda")))

    def one(name: str) -> dict:
        timer = StageTimer(device)
        with peak_memory(device) as peak:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            result = generator.generate(
                text, seeds, resolution=res, aspect_ratio=ratio, sampling=sampling, method=configs[name],
                decode=bool(cfg.bench.decode), clock=timer, graphs=graphs if name.endswith(GRAPHS) else False,
            )  # fmt: skip
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        seconds = dict(timer.seconds)
        seconds["backbone"] = sum(v for k, v in seconds.items() if k != "decode")
        return {"seconds": seconds, "stats": result.stats, "peak": peak.bytes, "wall": wall, "cpu": cpu}

    for r in range(int(cfg.bench.warmup)):
        for name in names:
            one(name)
        log.info("warm-up round %d done", r + 1)
    rounds: list[dict[str, dict]] = []
    for r in range(int(cfg.bench.repeats)):
        rounds.append({name: one(name) for name in names})  # interleaved: every config once per round
        log.info(
            "round %d/%d: %s",
            r + 1,
            cfg.bench.repeats,
            {n: round(x["seconds"]["backbone"], 4) for n, x in rounds[-1].items()},
        )
    rows = []
    for name in names:
        runs = [rd[name] for rd in rounds]
        backbone = [x["seconds"]["backbone"] for x in runs]
        stages = sorted({s for x in runs for s in x["seconds"]})
        flops = dry_run(
            generator, configs[name], resolution=res, aspect_ratio=ratio, batch_size=len(prompts),
            sampling=sampling, text_tokens=max(text.lens),
        ).flops  # fmt: skip
        stats = runs[-1]["stats"]
        peak = [x["peak"] for x in runs if x["peak"] is not None]
        rows.append(
            {
                "moss": name,
                "thresholds": _thresholds(configs[name]),
                "scales": scales_label(grids, configs[name]),
                "backbone_s": _spread(backbone),
                "stage_s": {s: statistics.median(x["seconds"].get(s, 0.0) for x in runs) for s in stages},
                "speedup_reference": _reference(name, names),
                "speedup": _spread(
                    [
                        rd[_reference(name, names)]["seconds"]["backbone"] / rd[name]["seconds"]["backbone"]
                        for rd in rounds
                    ]
                ),
                # the whole generate() call (the backbone, plus the decode when bench.decode is on)
                "wall_s": _spread([x["wall"] for x in runs]),
                "cpu_s": _spread([x["cpu"] for x in runs]),
                "tokens_processed": stats.tokens_processed,
                "forward_passes": stats.forward_passes,
                "kv_cache_bytes": stats.kv_cache_bytes,
                "peak_memory_bytes": max(peak) if peak else None,
                "flops_backbone": flops,
                "achieved_flops_per_s": flops / statistics.median(backbone),
            }
        )
    by_name = {r["moss"]: r for r in rows}
    for r in rows:
        ref = by_name[r["speedup_reference"]]
        r["flop_ratio"] = ref["flops_backbone"] / r["flops_backbone"]
        r["kv_reduction"] = 1 - r["kv_cache_bytes"] / ref["kv_cache_bytes"]
        s = r["speedup"]
        r["flag"] = [] if r is ref else speedup_flags(s["median"], s["q25"], s["q75"], r["flop_ratio"])
        if cfg.bench.peak_flops:
            r["fraction_of_peak"] = r["achieved_flops_per_s"] / float(cfg.bench.peak_flops)
    return rows


def _fmt_flops(f: float) -> str:
    return f"{f / 1e12:.2f} T" if f >= 1e11 else f"{f / 1e9:.1f} G"


def markdown(cfg: DictConfig, rows: list[dict], meta: dict) -> str:
    table1 = PAPER_TABLE1.get(cfg.model.name) if cfg.generation.resolution == 1024 else None
    paper = table1 is not None and not cfg.model.get("arch")
    head = [
        f"# MoSs benchmark: {meta['model']} at {meta['resolution']}², {meta['device']}, {meta['mode']}",
        "",
    ]
    head.append(
        f"batch {meta['batch_size']}, CFG {meta['cfg']}, blocks {meta['dtype']}, attn {meta['attn']}, "
        f"torch {meta['torch']}, {meta['date']}"
        + (
            f", {meta['repeats']} interleaved rounds after {meta['warmup']} warm-up"
            if meta["mode"] == "measure"
            else ""
        )
    )
    if meta["mode"] == "measure":
        setting = meta["threads_setting"]
        load = [meta["loadavg_before"], meta["loadavg_after"]]
        load_text = " → ".join("/".join(f"{x:.2f}" for x in avg) for avg in load) if all(load) else "n/a"
        cpu_text = "; ".join(
            [meta.get("cpu") or "unknown CPU", *([", ".join(meta["cpu_isa"])] if meta.get("cpu_isa") else [])]
        )
        head += [
            "",
            f"torch threads {meta['threads']} "
            f"({'bench.threads' if setting is not None else 'torch default, bench.threads=null'}) on "
            f"{meta['cpu_count']} CPUs ({cpu_text}); load average (1/5/15 min) {load_text} (before → after)",
        ]
    if meta.get("gemm_flops_per_s"):
        head += ["", f"{meta['gpu']}, CUDA {meta['cuda']}: a bf16 8192³ GEMM runs at "
                 f"{meta['gemm_flops_per_s'] / 1e12:.0f} TFLOP/s here (% of GEMM below is against it)"]  # fmt: skip
    head.append("")

    def with_paper(value: str, key: str, name: str, fmt: str) -> str:
        if not paper or name not in table1:
            return value
        return f"{value} ({fmt.format(table1[name][key])})"

    if meta["mode"] == "accounting":
        if paper:
            head.append("Ours, with the paper's Table 1 number in parentheses where it gives one.")
            head.append("")
        cols = ["config", "scales", "tokens", "passes", "KV GiB", "KV reduction", "FLOPs", "FLOP ratio"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            kv = f"{r['kv_cache_bytes'] / GIB:.2f}"
            red = f"{100 * r['kv_reduction']:.2f}%"
            if paper and r["moss"] == "k5" and cfg.model.name == "infinity_2b":
                red += " (85.62%)"
            lines.append(
                f"| {r['moss']} | {with_paper(r['scales'], 'scales', r['moss'], '{}')} | {r['tokens_processed']} | "
                f"{r['forward_passes']} | {with_paper(kv, 'kv_gb', r['moss'], '{:.2f}')} | "
                f"{red} | {_fmt_flops(r['flops_backbone'])} | {r['flop_ratio']:.2f}× |"
            )
        return "\n".join(head + lines) + "\n"
    cols = ["config", "scales", "backbone s (median [q25, q75])", "speedup (paired median)", "FLOP bound",
            "stage s (draft / dispatch / moss)", "CPU s / wall s", "tokens", "passes", "KV GiB", "peak GiB",
            "FLOPs", "FLOP/s"]  # fmt: skip
    if any("fraction_of_peak" in r for r in rows):
        cols.append("% of peak")
    if any("fraction_of_gemm" in r for r in rows):
        cols.append("% of GEMM")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        b, s = r["backbone_s"], r["speedup"]
        st = r["stage_s"]
        stages = " / ".join(f"{st.get(k, 0.0):.4f}" for k in ("draft", "dispatch", "moss"))
        peak = f"{r['peak_memory_bytes'] / GIB:.2f}" if r["peak_memory_bytes"] else "—"
        mark = f" ⚠ {', '.join(r['flag'])}" if r["flag"] else ""
        cells = [
            r["moss"], r["scales"], f"{b['median']:.4f} [{b['q25']:.4f}, {b['q75']:.4f}]",
            f"{s['median']:.2f}× [{s['q25']:.2f}, {s['q75']:.2f}]{mark}", f"{r['flop_ratio']:.2f}×", stages,
            f"{r['cpu_s']['median']:.4f} / {r['wall_s']['median']:.4f}", str(r["tokens_processed"]),
            str(r["forward_passes"]), f"{r['kv_cache_bytes'] / GIB:.3f}", peak,
            _fmt_flops(r["flops_backbone"]), f"{r['achieved_flops_per_s'] / 1e12:.2f} T/s",
        ]  # fmt: skip
        if "fraction_of_peak" in r:
            cells.append(f"{100 * r['fraction_of_peak']:.1f}%")
        if "fraction_of_gemm" in r:
            cells.append(f"{100 * r['fraction_of_gemm']:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "Speedup: median over rounds of the paired ratio (baseline / config) within a round; the baseline "
             f"of a `{GRAPHS}` row (its passes replayed as CUDA graphs) is the first `{GRAPHS}` row. FLOP bound: "
             "baseline FLOPs / config FLOPs (meta-device count of the same passes), the most a FLOP-bound run could gain. "
             "CPU s / wall s: medians of the process CPU seconds and wall seconds of each generate() call; on a CPU "
             "run with one thread, CPU s well below wall s means the process waited for a core (on a GPU, CPU s is "
             "the host side: launches and waiting)."]  # fmt: skip
    for r in rows:
        s = r["speedup"]
        if NOISY in r["flag"]:
            notes.append(
                f"⚠ {r['moss']}: noisy. The speedup's spread (q75 − q25 = {s['q75'] - s['q25']:.2f}) is wider "
                f"than its effect (|median − 1| = {abs(s['median'] - 1):.2f}); do not quote it."
            )
        if ABOVE_FLOP_BOUND in r["flag"]:
            notes.append(
                f"⚠ {r['moss']}: above its FLOP bound. The median speedup {s['median']:.2f}× exceeds the FLOP bound "
                f"{r['flop_ratio']:.2f}× by more than its spread ({s['q75'] - s['q25']:.2f}): the baseline ran "
                "slower per FLOP than this config, or the timing was disturbed; check before quoting."
            )
    if paper and cfg.model.name == "infinity_2b":
        notes.append(
            "Paper (RTX 4090): 1.29 s → 0.63 / 0.45 / 0.38 / 0.26 s, i.e. 2.05× / 2.87× / 3.39× / 4.96× for k2…k5; "
            "1.64–2.50× on an A800; FastVAR 2.87×."
        )
    elif paper:
        notes.append("Paper (RTX 4090): HART-0.7B 1.08 s → 0.69 s with MoSs k2 (1.56×).")
    return "\n".join(head + lines + notes) + "\n"


def run_bench(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig

    attn_name = HydraConfig.get().runtime.choices.get("attn")
    mode = cfg.bench.mode
    if mode not in ("measure", "accounting"):
        raise UserError(f"bench.mode={mode!r}; choose measure or accounting")
    if not cfg.bench.moss:
        raise UserError("bench.moss is empty; give e.g. bench.moss=[off,k2,k5]")
    if mode == "measure" and int(cfg.bench.repeats) < 1:
        raise UserError(f"bench.repeats must be >= 1, got {cfg.bench.repeats}")
    threads_setting = _threads_setting(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if (
        mode == "measure"
        and cfg.attn.rope_impl == "triton"
        and device.type != "cuda"
        and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
    ):
        raise UserError(f"attn={attn_name} needs CUDA for the Triton RoPE; on CPU benchmark attn=cssa")
    graphed = [n for n in cfg.bench.moss if str(n).endswith(GRAPHS)]
    capture = cfg.bench.get("graph_capture", "cuda")
    if capture not in CAPTURE_MODES:
        raise UserError(f"bench.graph_capture={capture!r}; choose one of {list(CAPTURE_MODES)}")
    if graphed and mode == "measure" and device.type != "cuda" and capture == "cuda":
        raise UserError(
            f"bench.moss entries {graphed} replay CUDA graphs, which need a CUDA GPU; drop {GRAPHS} on this machine"
        )
    if mode == "measure" and cfg.bench.moss[0] != "off":
        log.warning("the first bench.moss entry (%s) is the reference for speedups", cfg.bench.moss[0])
    default_threads = torch.get_num_threads()
    if threads_setting is not None:
        torch.set_num_threads(threads_setting)  # before the model is built
    try:
        threads = torch.get_num_threads()
        loadavg_before = _loadavg()
        rows = accounting_rows(cfg) if mode == "accounting" else measure_rows(cfg, device)
        loadavg_after = _loadavg()
        gemm = gemm_rate(device) if mode == "measure" else None
    finally:
        torch.set_num_threads(default_threads)  # for callers in the same process (tests)
    meta = {
        "mode": mode,
        "model": cfg.model.name + ("+arch" if cfg.model.get("arch") else ""),
        "arch": OmegaConf.to_container(cfg.model.arch) if cfg.model.get("arch") else {},
        "weights": cfg.model.weights,
        "resolution": cfg.generation.resolution,
        "batch_size": int(cfg.generation.batch_size),
        "cfg": cfg.generation.cfg,
        "dtype": cfg.model.dtype,
        "attn": attn_name,
        "device": "meta (exact accounting)" if mode == "accounting" else device_slug(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "date": dt.date.today().isoformat(),
        "repeats": int(cfg.bench.repeats),
        "warmup": int(cfg.bench.warmup),
        "threads": threads,
        "threads_setting": threads_setting,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model()[0],
        "cpu_isa": list(cpu_model()[1]),
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg_after,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gemm_flops_per_s": gemm,
    }
    if gemm:
        for r in rows:
            r["fraction_of_gemm"] = r["achieved_flops_per_s"] / gemm
    table = markdown(cfg, rows, meta)
    print(table)
    out = Path(cfg.bench.out_dir)
    device_name = "meta" if mode == "accounting" else meta["device"]
    stem = f"{device_name}-{meta['model'].replace('+', '-')}-{attn_name}-{meta['date']}"
    atomic_write_text(out / f"{stem}.json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    atomic_write_text(out / f"{stem}.md", table)
    print(f"wrote {out / stem}.json and .md")
    return {"meta": meta, "rows": rows}
