"""Time the fused Triton q/k preparation against its torch reference, on CUDA, at Infinity-2B's shapes.

One attention layer of one pass prepares q and k of N packed tokens (batch 2 for CFG, 16 heads, head dim 128,
bf16): cosine-normalise both, scale q per head, apply 2D RoPE, and put k into its KV-cache slot.

* ``torch``: :func:`moss_attention.qk.cosine_qk_rope` on ``stack([q, k], 2)`` (q and k are views of the qkv
  projection) with angles gathered once per pass, then a copy of k into the cache slot. The gather is done
  outside the timed region, as a pass shares it between its layers, and is reported on its own;
* ``triton``: :func:`moss_attention.cosine_qk_rope_triton` writing k straight into the cache slot.

Token sets are whole scales of the 1M square schedule (N = 1, 4, ..., 4096 are exactly its grid sizes).
Times are ``triton.testing.do_bench`` medians (ms); GB/s counts the kernel's compulsory traffic (read q and k,
write both). The Triton interpreter says nothing about GPU speed, so there is no CPU mode.

    uv run python packages/moss-attention/benchmarks/bench_qk_rope.py [--tokens 64 1024 ...]
"""

from __future__ import annotations

import argparse
import sys

import torch

SQUARE_1M = [(s, s) for s in (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)]
TOKENS = (1, 4, 16, 64, 144, 256, 400, 576, 1024, 1600, 2304, 4096)
BATCH, HEADS, HEAD_DIM = 2, 16, 128
SLOT_START = 32  # the packed tokens' slot in the KV cache, neither at its start nor at its end
DTYPE = torch.bfloat16


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS), help="packed token counts N")
    parser.add_argument("--block-rows", type=int, default=None, help="(token, head) rows per Triton program")
    parser.add_argument("--num-warps", type=int, default=4)
    return parser.parse_args()


def positions(tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole scale with ``tokens`` tokens in raster order, or random tokens of the last scale."""
    sizes = [h * w for h, w in SQUARE_1M]
    scale = sizes.index(tokens) if tokens in sizes else len(SQUARE_1M) - 1
    h, w = SQUARE_1M[scale]
    flat = torch.arange(tokens) if tokens in sizes else torch.randint(0, h * w, (tokens,))
    scale_ids = torch.full((tokens,), scale)
    return scale_ids.to(device), (flat // w).to(device), (flat % w).to(device)


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "bench_qk_rope.py needs a CUDA GPU: it times compiled Triton kernels, and the CPU interpreter "
            "(TRITON_INTERPRET=1) says nothing about their speed. No CUDA device is visible here."
        )
    import triton.testing

    import moss_attention as ma
    from moss_attention.qk import cosine_multiplier, cosine_qk_rope, gather_rope_angles

    torch.manual_seed(0)
    device = torch.device("cuda")
    tables = ma.precompute_rope_tables(ma.InfinityRope2D(HEAD_DIM), SQUARE_1M, device)
    multiplier = cosine_multiplier(torch.rand(HEADS, device=device, dtype=DTYPE) * 4.0)
    capacity = SLOT_START + max(args.tokens) + 64
    keys = torch.zeros(BATCH, HEADS, capacity, HEAD_DIM, device=device, dtype=DTYPE)

    def bench(fn) -> float:
        return float(triton.testing.do_bench(fn, warmup=25, rep=100))

    print(f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}, Triton {triton.__version__}, "
          f"B{BATCH} H{HEADS} D{HEAD_DIM} {str(DTYPE).removeprefix('torch.')}, times: do_bench median ms")  # fmt: skip
    rows = []
    for tokens in args.tokens:
        scale_ids, pos_rows, pos_cols = positions(tokens, device)
        qkv = torch.randn(BATCH, tokens, 3, HEADS, HEAD_DIM, device=device, dtype=DTYPE)
        q, k = qkv[:, :, 0], qkv[:, :, 1]
        slot = keys[:, :, SLOT_START : SLOT_START + tokens].transpose(1, 2)  # (B, N, H, D) view of the cache

        def gather(s=scale_ids, r=pos_rows, c=pos_cols):
            return gather_rope_angles(tables, s, r, c, batch=BATCH)

        angles = gather()

        def torch_path(q=q, k=k, slot=slot, angles=angles):
            both = cosine_qk_rope(torch.stack([q, k], 2), multiplier, angles)
            slot.copy_(both[:, :, 1])
            return both[:, :, 0]

        def triton_path(q=q, k=k, slot=slot, s=scale_ids, r=pos_rows, c=pos_cols):
            return ma.cosine_qk_rope_triton(
                q, k, multiplier, tables, s, r, c, k_out=slot, check=False,
                block_rows=args.block_rows, num_warps=args.num_warps,
            )[0]  # fmt: skip

        expected_q = torch_path()
        expected_k = slot.clone()
        got_q = triton_path()
        # Not bit-exact (the norm's reduction order differs): an output may round to the neighbouring bf16.
        torch.testing.assert_close(got_q, expected_q, atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(slot, expected_k, atol=2e-2, rtol=2e-2)

        t_gather, t_torch, t_triton = bench(gather), bench(torch_path), bench(triton_path)
        traffic = 4 * q.numel() * q.element_size()  # read q, k; write q, k
        rows.append((tokens, t_gather, t_torch, t_triton, t_torch / t_triton, traffic / t_triton / 1e6))
    print_table(rows)


def print_table(rows: list[tuple[int, float, float, float, float, float]]) -> None:
    header = ("N", "gather (once/pass)", "torch", "triton", "speed-up", "triton GB/s")
    cells = [header] + [
        (str(n), f"{g:.4f}", f"{t:.4f}", f"{f:.4f}", f"{s:.2f}x", f"{bw:.0f}") for n, g, t, f, s, bw in rows
    ]
    widths = [max(len(row[j]) for row in cells) for j in range(len(header))]
    print()
    for i, row in enumerate(cells):
        print("| " + " | ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


if __name__ == "__main__":
    main()
