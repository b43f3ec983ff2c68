"""Where the testbed fails: Shapes-GenEval when the first N scales are the ground truth's (an oracle drafter).

Each prompt of the Shapes-GenEval set comes with the scene it describes. The scene is rendered and encoded by the
testbed's own VAE into the bits of every scale. The first ``N`` scales then take those bits instead of the sampled
ones, and the transformer draws the rest as usual, at ``moss=off``. With ``N = 0`` this is the plain generation,
pixel for pixel: the sampler still draws every scale, and only its output is replaced, so the random streams stay
the same. With ``N = S`` it is the VAE's reconstruction of the scene.

How the score grows with ``N`` tells which scales lose it: the coarse ones, which place and count the objects, or
the fine ones, which draw their outlines. This is the paper's drafter/refiner split from another side.

    uv run python benchmarks/testbed_oracle.py                        # shipped weights, 100 prompts of seed 1
    uv run python benchmarks/testbed_oracle.py --checkpoints outputs/testbed --forced 0 3 5 --prompts 50
    uv run python benchmarks/testbed_oracle.py --forced 9 --skip 1    # the truth up to 13², the last scale skipped

``--skip K`` stops the generation K scales early and decodes the running sum (the ``skipK`` method): with ``N = S − K``
it tells what the model's last K scales add to a perfect draft.

Writes ``--out`` (JSON: settings, and per N the overall and per-task scores) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moss_eval.quality.shapes import TASKS, ShapeDetector, evaluation_prompts, score_image, summarize
from moss_eval.quality.shapes.scene import render, scene_from_dict
from moss_eval.records import atomic_write_text
from moss_models.testbed import TESTBED_SIDES


class OracleScales:
    """A family that hands the generator the ground truth's bits for the scales below ``forced``.

    Everything else is the wrapped family's. Its ``sample`` still runs first, so the random generators advance
    exactly as in an unforced generation and the scales after ``forced`` see the same draws they would see there.
    """

    def __init__(self, family: Any, bits: list[torch.Tensor], forced: int):
        self._family = family
        self._bits = bits  # one (B, h, w, d) tensor per scale
        self._forced = forced

    def sample(self, raw, tokens, sampling, schedule, generators, batch):
        samples = self._family.sample(raw, tokens, sampling, schedule, generators, batch)
        if not tokens.is_full_scale:
            raise ValueError("OracleScales replaces whole scales; use it with method='off'")
        scale = tokens.parts[0].scale_index
        if scale >= self._forced:
            return samples
        truth = self._bits[scale]
        return truth.reshape(truth.shape[0], -1, truth.shape[-1]).to(
            device=samples.device, dtype=samples.dtype
        )

    def __getattr__(self, item: str) -> Any:
        return getattr(self._family, item)


def scene_bits(family: Any, scenes: list[dict[str, Any]], resolution: int) -> list[torch.Tensor]:
    """The VAE's bits of every scale of the rendered ``scenes``, on the family's schedule at ``resolution``."""
    images = np.stack([render(scene_from_dict(s), size=resolution) for s in scenes])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(family.device)
    grids = [tuple(g) for g in family.schedule(resolution, 1.0).grids]
    with torch.no_grad():
        _, bits = family.vae.encode(pixels, grids)
    return bits


def oracle_images(
    model: Any,
    prompts: list[Any],
    forced: int,
    seed: int,
    sampling: dict[str, Any] | None = None,
    skip: int = 0,
) -> np.ndarray:
    """``(B, H, W, 3)`` uint8 images of ``prompts`` with their first ``forced`` scales from the ground truth (and
    the last ``skip`` scales not drawn: method ``skip{skip}``)."""
    from moss_models.core import NextScaleGenerator

    family = model.family
    resolution = model.default_resolution
    bits = scene_bits(family, [p.scene_dict for p in prompts], resolution)
    oracle = NextScaleGenerator(OracleScales(family, bits, forced), default_resolution=resolution)
    method = f"skip{skip}" if skip else "off"
    out = oracle([p.prompt for p in prompts], method=method, seed=seed, **(sampling or {}))
    return out.result.images.cpu().numpy()


def run(
    checkpoints: str | None,
    n_prompts: int,
    prompt_seed: int,
    forced: list[int],
    batch: int,
    seed: int,
    skip: int = 0,
) -> dict[str, Any]:
    import moss_models

    model = moss_models.load("testbed", checkpoints=checkpoints)
    prompts = evaluation_prompts(n_prompts, prompt_seed)
    detector = ShapeDetector()
    rows = []
    for n in forced:
        start_time = time.perf_counter()
        per_image = []
        for start in range(0, len(prompts), batch):
            chunk = prompts[start : start + batch]
            images = oracle_images(model, chunk, n, seed + start, skip=skip)
            for p, img in zip(chunk, images, strict=True):
                per_image.append(
                    {"tag": p.tag, "correct": score_image(detector.detect(img), p.scene_dict)[0]}
                )
        summary = summarize(per_image)
        rows.append({
            "forced": n,
            "overall": summary["overall"],
            "tasks": {t: summary["tasks"][t]["score"] for t in TASKS if t in summary["tasks"]},
            "seconds": round(time.perf_counter() - start_time, 1),
        })  # fmt: skip
        print(f"N={n}: {summary['overall']:.3f}", file=sys.stderr, flush=True)
    sides = [g[0] for g in model.family.schedule(model.default_resolution, 1.0).grids]
    return {
        "checkpoints": checkpoints or "shipped",
        "prompts": n_prompts,
        "prompt_seed": prompt_seed,
        "seed": seed,
        "skip": skip,
        "sides": sides,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    sides = result["sides"]
    head = "| scales from the ground truth | overall | " + " | ".join(TASKS) + " |"
    lines = [head, "|" + "---|" * (2 + len(TASKS))]
    for row in result["rows"]:
        n = row["forced"]
        what = "none (plain generation)" if n == 0 else f"{n} (sides up to {sides[n - 1]})"
        if result.get("skip"):
            what += f", last {result['skip']} skipped"
        tasks = " | ".join(f"{row['tasks'].get(t, float('nan')):.2f}" for t in TASKS)
        lines.append(f"| {what} | {row['overall']:.3f} | {tasks} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoints", default=None, help="an export folder of tools/train_testbed.py (default: shipped)"
    )
    parser.add_argument("--prompts", type=int, default=100, help="Shapes-GenEval prompts")
    parser.add_argument("--prompt-seed", type=int, default=1, help="1: apart from the test set (seed 0)")
    parser.add_argument("--forced", type=int, nargs="+", default=list(range(len(TESTBED_SIDES) + 1)))
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1000, help="image i of batch b gets seed + b·batch + i")
    parser.add_argument("--skip", type=int, default=0, help="scales left undrawn at the end (method skipK)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (atomically)")
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.batch < 1:
        parser.error(f"--prompts {args.prompts} and --batch {args.batch} must be at least 1")
    # model=testbed loads only exports of the shipped schedule, so its scale count is known before loading
    if not 0 <= args.skip < len(TESTBED_SIDES):
        parser.error(f"--skip {args.skip} must be between 0 and {len(TESTBED_SIDES) - 1}")
    drawn = len(TESTBED_SIDES) - args.skip
    bad = [n for n in args.forced if not 0 <= n <= drawn]
    if bad:
        parser.error(
            f"--forced {bad}: each N must be between 0 and the {drawn} scales drawn "
            f"(the testbed's {len(TESTBED_SIDES)}, less --skip {args.skip})"
        )
    torch.set_num_threads(args.threads)
    result = run(
        args.checkpoints, args.prompts, args.prompt_seed, args.forced, args.batch, args.seed, args.skip
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
