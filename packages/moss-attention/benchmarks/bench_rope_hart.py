"""Time HART's RoPE of q and k: the torch reference against the two Triton paths, at HART's sizes.

Variants, each producing rotated q and k of shape (B, N, H, D) from q, k and the image-token positions:

* ``torch``         — hart_rope_cos_sin + apply_rope_rotate_half on q and on k (what HART's eager code does);
* ``triton-table``  — the same cos/sin tables (built by torch, included in the time) read by the Triton kernel,
                      one launch per tensor;
* ``triton-fly``    — hart_rope_qk_triton: q and k in one launch, angles computed in the kernel.

Not a test and not run by the suite. On a GPU it times with CUDA events after a warm-up and prints a Markdown
table (median time per call and the effective bandwidth of reading and writing q and k); ``--out FILE.json``
also saves every number. Without CUDA it times only the torch reference: the Triton interpreter's timings say
nothing about the kernels (``--interpreted`` with ``TRITON_INTERPRET=1`` runs them anyway, to check the script and
the results).

    uv run python packages/moss-attention/benchmarks/bench_rope_hart.py                       # B=2 (CFG), H=24, D=64, fp16
    uv run python packages/moss-attention/benchmarks/bench_rope_hart.py --tokens 4096 9450 --block-tokens 64 --heads-per-program 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from moss_attention import apply_rope_rotate_half, hart_rope_cos_sin, hart_scale_positions, rotate_half

HART_PATCH_NUMS = (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def hart_image_positions(tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``tokens`` image tokens of HART's sequence: scales 2..64 concatenated, then repeated."""
    positions = [hart_scale_positions(pn) for pn in HART_PATCH_NUMS[1:]]
    rows = torch.cat([r for r, _ in positions])
    cols = torch.cat([c for _, c in positions])
    repeats = -(-tokens // rows.numel())
    return rows.repeat(repeats)[:tokens], cols.repeat(repeats)[:tokens]


def time_call(fn, repeats: int, warmup: int, cuda: bool) -> list[float]:
    """Seconds per call, one entry per repeat."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def measure(tokens: int, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """Check the Triton variants against the reference, then time every variant at ``tokens`` image tokens."""
    cuda = device.type == "cuda"
    with_triton = cuda or args.interpreted
    if with_triton:
        from moss_attention.ops.rope_half import hart_rope_qk_triton

    results = []
    shape = (args.batch, tokens, args.heads, args.head_dim)
    q = torch.randn(shape, device=device).to(dtype)
    k = torch.randn(shape, device=device).to(dtype)
    rows, cols = (t.to(device) for t in hart_image_positions(tokens))
    offset = torch.tensor([36.0, 0.0], device=device).repeat((args.batch + 1) // 2)[: args.batch]

    def torch_ref():
        cos, sin = hart_rope_cos_sin(rows, cols, offset, args.head_dim)
        return apply_rope_rotate_half(q, cos, sin), apply_rope_rotate_half(k, cos, sin)

    variants = {"torch": torch_ref}
    if with_triton:
        blocks = {"block_tokens": args.block_tokens}

        def triton_table():
            cos, sin = hart_rope_cos_sin(rows, cols, offset, args.head_dim)
            return (
                apply_rope_rotate_half(q, cos, sin, impl="triton", **blocks),
                apply_rope_rotate_half(k, cos, sin, impl="triton", **blocks),
            )

        def triton_fly():
            return hart_rope_qk_triton(
                q,
                k,
                rows,
                cols,
                offset,
                block_tokens=args.block_tokens,
                heads_per_program=args.heads_per_program,
            )

        variants |= {"triton-table": triton_table, "triton-fly": triton_fly}
        # A wrong fast kernel is not a result: the tests' criteria (bit-identical; the stated bound).
        reference = torch_ref()
        if not all(torch.equal(a, b) for a, b in zip(reference, triton_table(), strict=True)):
            raise SystemExit(f"triton-table is not bit-identical to the torch reference at N={tokens}")
        eps = torch.finfo(dtype).eps
        for x, ref, got in zip((q, k), reference, triton_fly(), strict=True):
            bound = 2 * eps * (x.float().abs() + rotate_half(x.float()).abs())
            if not bool(((ref.float() - got.float()).abs() <= bound).all()):
                raise SystemExit(
                    f"triton-fly exceeds its tolerance against the torch reference at N={tokens}"
                )

    bytes_moved = 2 * 2 * q.numel() * q.element_size()  # read and write q and k
    for name, fn in variants.items():
        times = time_call(fn, args.repeats, args.warmup, cuda)
        median = statistics.median(times)
        results.append(
            {
                "variant": name,
                "tokens": tokens,
                "median_us": median * 1e6,
                "min_us": min(times) * 1e6,
                "effective_GBps": bytes_moved / median / 1e9,
            }
        )

    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2, help="images x CFG halves (HART: 2 per prompt)")
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 9450], help="image tokens per pass")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--block-tokens", type=int, default=None)
    parser.add_argument("--heads-per-program", type=int, default=None)
    parser.add_argument(
        "--interpreted",
        action="store_true",
        help="without CUDA, also run the Triton variants in the interpreter (set TRITON_INTERPRET=1): checks the "
        "script and the kernels' results; the timings mean nothing",
    )
    parser.add_argument("--out", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if args.interpreted and (cuda or os.environ.get("TRITON_INTERPRET", "0") in ("", "0")):
        raise SystemExit("--interpreted needs TRITON_INTERPRET=1 and no CUDA")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = DTYPES[args.dtype]
    results = [r for tokens in args.tokens for r in measure(tokens, args, device, dtype)]
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    print(
        f"HART RoPE of q and k, B={args.batch} H={args.heads} D={args.head_dim} {args.dtype} on {device_name}"
    )
    if args.interpreted:
        print("(Triton interpreted on CPU: results checked, timings meaningless)")
    elif not cuda:
        print(
            "(no CUDA: torch reference only; the Triton interpreter's timings say nothing about the kernels)"
        )
    print("\n| tokens | variant | median µs | min µs | effective GB/s |\n|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['tokens']} | {r['variant']} | {r['median_us']:.1f} | {r['min_us']:.1f} | "
            f"{r['effective_GBps']:.1f} |"
        )
    if args.out:
        meta = {"device": device_name, "torch": torch.__version__, "args": vars(args)}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
