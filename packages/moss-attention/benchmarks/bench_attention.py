"""Time moss-attention on the current device: torch vs Triton 2D RoPE, and the attention backends.

Shapes are Infinity-2B's (16 heads, head dim 128, batch 2 for CFG) at two MoSs configurations:

* ``moss5``: cache 921 tokens (the first 8 scales), 988 packed tokens over 5 scales,
  grids 24/32/40/48/64 with 230/358/80/115/205 tokens;
* ``moss2``: cache 4121 tokens (the first 11 scales), 1600 packed tokens, grids 48/64 with 576/1024 tokens.

CUDA: ``triton.testing.do_bench`` (median ms). CPU: median of ``time.perf_counter`` after warm-up. On CPU the
Triton kernels run in the interpreter (``TRITON_INTERPRET=1``), which says nothing about GPU speed, so the
Triton rows use a reduced token count and are labelled. This is a measurement tool, not a test.

    uv run python packages/moss-attention/benchmarks/bench_attention.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch

SQUARE_1M = [(s, s) for s in (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)]
CONFIGS = {
    # name: (cache length, {schedule index: packed token count})
    "moss5": (921, {8: 230, 9: 358, 10: 80, 11: 115, 12: 205}),
    "moss2": (4121, {11: 576, 12: 1024}),
}
HEADS, HEAD_DIM, BATCH = 16, 128, 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="default: bfloat16 on CUDA, float32 on CPU")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="moss5 only, fewer repetitions")
    parser.add_argument("--configs", nargs="+", default=None, choices=sorted(CONFIGS))
    parser.add_argument(
        "--reps", type=int, default=None, help="timed repetitions on CPU (default 3, quick 2)"
    )
    parser.add_argument("--interpreted-tokens", type=int, default=64,
                        help="packed tokens for Triton rows when interpreted on CPU")  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda requested but CUDA is not available")
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined (lazy import below)
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    device = torch.device(args.device)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    configs = args.configs or (["moss5"] if args.quick else list(CONFIGS))
    reps = args.reps or (2 if args.quick else 3)

    from moss_attention.ops.rope_2d import interpreted

    timer = make_timer(device, reps)
    print(f"device {device} ({device_name(device)}), dtype {str(dtype).removeprefix('torch.')}, torch "
          f"{torch.__version__}, Triton {'interpreted' if interpreted() else 'compiled'}, "
          f"timing {'triton.testing.do_bench' if device.type == 'cuda' else f'median of {reps} after warm-up'}")  # fmt: skip
    rows = bench_tables(timer, device)
    for name in configs:
        cache_len, counts = CONFIGS[name]
        scale_ids, pos_rows, pos_cols = packed_positions(counts, BATCH, device)
        packed = scale_ids.numel()
        q, k, v = (torch.randn(BATCH, packed, HEADS, HEAD_DIM, device=device, dtype=dtype) for _ in range(3))
        k_cache, v_cache = (
            torch.randn(BATCH, HEADS, cache_len, HEAD_DIM, device=device, dtype=dtype) for _ in range(2)
        )
        shape = f"B{BATCH} N{packed} H{HEADS} D{HEAD_DIM} L{cache_len}"
        rows += bench_rope(timer, name, shape, q, k, scale_ids, pos_rows, pos_cols, args.interpreted_tokens)
        rows += bench_backends(timer, name, shape, q, k, v, k_cache, v_cache, scale_ids)
    print_table(rows)
    if interpreted():
        print("\nnote: Triton ran in the CPU interpreter (~1.5 ms per program); its rows say nothing about GPU "
              "speed, and the q+k rows use a reduced token count. flex ran eager (unfused) on CPU.")  # fmt: skip


Row = tuple[str, str, str, float | None, str]


def bench_tables(timer, device) -> list[Row]:
    import moss_attention as ma
    from moss_attention.ops.rope_2d import interpreted

    scheme = ma.InfinityRope2D(HEAD_DIM)
    what = "rope tables (13 scales, 10521 rows)"
    base = timer(lambda: ma.precompute_rope_tables(scheme, SQUARE_1M, device))
    t = timer(lambda: ma.precompute_rope_tables_triton(scheme, SQUARE_1M, device))
    triton_label = "triton (interp)" if interpreted() else "triton"
    return [("1M", what, "torch", base, "1.00"), ("1M", what, triton_label, t, ratio(base, t))]


def bench_rope(timer, name, shape, q, k, scale_ids, pos_rows, pos_cols, interpreted_tokens) -> list[Row]:
    """(a) torch reference vs Triton kernel, rotating q and k of the packed set."""
    import moss_attention as ma
    from moss_attention.ops.rope_2d import interpreted

    tables = ma.precompute_rope_tables(ma.InfinityRope2D(HEAD_DIM), SQUARE_1M, q.device)

    def torch_rope(q=q, k=k, s=scale_ids, r=pos_rows, c=pos_cols):
        return ma.apply_rope_2d(q, k, tables, s, r, c, check_bounds=False)

    def triton_rope(q=q, k=k, s=scale_ids, r=pos_rows, c=pos_cols):
        return ma.apply_rope_2d_triton(q, k, tables, s, r, c, check_bounds=False)

    base = timer(torch_rope)
    rows: list[Row] = [(name, f"rope q+k {shape}", "torch", base, "1.00")]
    if not interpreted():
        t = timer(triton_rope)
        return [*rows, (name, f"rope q+k {shape}", "triton", t, ratio(base, t))]
    n = min(interpreted_tokens, q.shape[1])
    sub = (q[:, :n], k[:, :n], scale_ids[:n], pos_rows[:, :n], pos_cols[:, :n])
    sub_base = timer(lambda: torch_rope(*sub))
    sub_t = timer(lambda: triton_rope(*sub))
    label = f"rope q+k reduced to N{n} (interpreted)"
    return [
        *rows,
        (name, label, "torch", sub_base, "1.00"),
        (name, label, "triton (interp)", sub_t, ratio(sub_base, sub_t)),
    ]


def bench_backends(timer, name, shape, q, k, v, k_cache, v_cache, scale_ids) -> list[Row]:
    """(b) every backend and mode, relative to sdpa cssa."""
    import moss_attention as ma

    rows: list[Row] = []
    base = None
    for backend in ("sdpa", "flex", "xformers"):
        if backend not in ma.available_backends():
            rows.append((name, f"attention {shape}", backend, None, "unavailable"))
            continue
        for mode, sa_impl in (("cssa", None), *(("sa", impl) for impl in ma.get_backend(backend).sa_impls)):
            label = f"{backend} {mode}" + (f" ({sa_impl})" if sa_impl else "")

            def attend(backend=backend, mode=mode, sa_impl=sa_impl):
                return ma.mixed_scale_attention(
                    q, k, v, k_cache, v_cache, scale_ids, mode=mode, backend=backend, sa_impl=sa_impl
                )

            t = timer(attend)
            base = base if base is not None else t
            rows.append((name, f"attention {shape}", label, t, ratio(base, t)))
    return rows


def packed_positions(counts: dict[int, int], batch: int, device: torch.device):
    """Distinct random positions per image for each refine scale, packed contiguously in scale order."""
    generator = torch.Generator().manual_seed(0)
    ids, rows, cols = [], [], []
    for scale, count in counts.items():
        h, w = SQUARE_1M[scale]
        flat = torch.stack(
            [torch.randperm(h * w, generator=generator)[:count].sort().values for _ in range(batch)]
        )
        ids.append(torch.full((count,), scale))
        rows.append(flat // w)
        cols.append(flat % w)
    return torch.cat(ids).to(device), torch.cat(rows, 1).to(device), torch.cat(cols, 1).to(device)


def make_timer(device: torch.device, reps: int) -> Callable[[Callable[[], object]], float]:
    if device.type == "cuda":
        import triton.testing

        return lambda fn: float(triton.testing.do_bench(fn, warmup=25, rep=100))

    def cpu_time(fn: Callable[[], object]) -> float:
        fn()  # warm-up (first-call set-up, allocator)
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e3)
        return statistics.median(samples)

    return cpu_time


def ratio(base: float | None, t: float | None) -> str:
    return "-" if base is None or t is None else f"{t / base:.2f}"


def device_name(device: torch.device) -> str:
    return (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    )


def print_table(rows: list[Row]) -> None:
    header = ("config", "what", "impl", "ms", "x base")
    cells = [header] + [(c, w, i, "-" if t is None else f"{t:.3f}", r) for c, w, i, t, r in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(header))]
    print()
    for n, row in enumerate(cells):
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


if __name__ == "__main__":
    main()
