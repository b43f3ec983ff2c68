"""Where a GPU training step of the testbed spends its time (tools/device/train_testbed_gpu.sh ran at 0.27-0.56 s
per step of batch 256 on an H200, about 100 times what its arithmetic needs): the scene loader alone at several
worker counts, and the transformer step alone (tools/moss_run/train.py's losses, bf16 autocast, backward, AdamW)
on one fixed batch, with the profiler's top operators and the launches per step. Prints; writes nothing. What it
printed on an H200, before and after moss-models 0.7.6 (0.247 → 0.190 s per step of 256):
benchmarks/results/testbed/gpu-h200-2026-12-04.

    device: python3 tools/device/profile_testbed_step.py      (after `source tools/device/env.sh`)
    here:   uv run python tools/device/profile_testbed_step.py --device cpu --batch 8 --steps 2
"""

from __future__ import annotations

import argparse
import time

import torch
from safetensors.torch import load_file

from moss_eval.quality.shapes import ShapesDataset, collate_shapes, vocabulary
from moss_models.testbed import VAE_FILE, WEIGHTS_DIR, make_spec, transformer_losses
from moss_run.train import ShapesStream, TransformerStage, step_generator


def time_loader(batch: int, workers: int, batches: int) -> float:
    # the training run's own loader (tools/moss_run/train.py), from the start of the stream
    stream = ShapesStream(8, 128, 10**6, batch, workers, pin=torch.cuda.is_available())
    it = iter(stream.train_dataloader())
    next(it)  # the workers' start
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=256, help="the batch the profiler reads")
    ap.add_argument(
        "--more-batches", type=int, nargs="*", default=[], help="batches timed after it (no profile)"
    )
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 6, 14])
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.set_num_threads(2)
    for w in args.workers:
        print(f"loader: {w} workers, batch {args.batch}: {time_loader(args.batch, w, max(2, args.steps)):.3f} s/batch",
              flush=True)  # fmt: skip

    spec = make_spec(None, None)
    settings = {"lr": 2e-3, "warmup": 0, "steps": 100, "weight_decay": 0.01, "cond_drop": 0.1}
    vae = load_file(str(WEIGHTS_DIR / VAE_FILE))
    module = TransformerStage(spec, settings, 0, vae, vocabulary()).to(dev)
    opt = torch.optim.AdamW(module.trainable(), lr=2e-3)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    scenes = ShapesDataset(8, 128, 10**6)

    def make_step(batch: int):
        images, prompts, _ = collate_shapes([scenes[i] for i in range(batch)])
        images = images.to(dev)

        def step(i: int) -> None:
            gen = step_generator(0, i)
            drop = (torch.rand(len(prompts), generator=gen) < 0.1).tolist()
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                out = transformer_losses(module.family, module.text, images, prompts, module.schedule, drop,
                                         self_correction=0.3, reweight_by_scale=True, generator=gen)  # fmt: skip
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    for k, batch in enumerate([args.batch, *args.more_batches]):
        step = make_step(batch)
        step(0)
        sync()
        start = time.perf_counter()
        for i in range(args.steps):
            step(i + 1)
        sync()
        seconds = (time.perf_counter() - start) / args.steps
        print(f"step alone (batch {batch}, fixed batch on {dev.type}): {seconds:.3f} s, {batch / seconds:.0f} scenes/s",
              flush=True)  # fmt: skip
        if k:
            continue
        acts = [torch.profiler.ProfilerActivity.CPU]
        acts += [torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else []
        with torch.profiler.profile(activities=acts) as prof:
            for i in range(2):
                step(100 + i)
            sync()
        print(
            prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=48)
        )
        if dev.type == "cuda":
            print(
                prof.key_averages().table(
                    sort_by="self_cuda_time_total", row_limit=8, max_name_column_width=48
                )
            )


if __name__ == "__main__":
    main()
