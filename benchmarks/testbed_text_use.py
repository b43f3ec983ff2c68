"""How much each scale of the testbed uses the caption: teacher-forced bit loss per scale under altered captions.

The oracle (benchmarks/testbed_oracle.py) shows where the score is lost. This script shows whether the model reads
the text at those scales. It uses held-out scenes whose caption names exactly two different colours (two or more
objects). Each scene's own VAE bits are the teacher-forced inputs and labels, with no self-correction flips. The
script measures the mean bit cross-entropy of every scale under four captions:

- ``true``: the scene's own caption;
- ``swapped``: the same caption with its two colour words exchanged ("a red circle and a blue square" → "a blue
  circle and a red square"). The rise over ``true`` is what binding each colour to its object is worth at that scale;
- ``other``: another scene's caption (the next different one). The rise is what the text as a whole is worth;
- ``unconditional``: the unconditional features that CFG uses.

    uv run python benchmarks/testbed_text_use.py                      # shipped weights, 192 scenes
    uv run python benchmarks/testbed_text_use.py --checkpoints outputs/testbed --scenes 64

Writes ``--out`` (JSON: settings, and per caption variant the loss of every scale) and prints a Markdown table
with the rises over ``true``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

from moss_eval.quality.shapes import ShapesDataset
from moss_eval.quality.shapes.scene import COLORS
from moss_eval.records import atomic_write_text
from moss_models.testbed import transformer_losses

VARIANTS = ("true", "swapped", "other", "unconditional")
_COLOR = re.compile(r"\b(" + "|".join(COLORS) + r")\b")


def swap_colours(caption: str) -> str | None:
    """``caption`` with its two colour words exchanged; None unless it names exactly two different colours."""
    found = _COLOR.findall(caption)
    if len(found) != 2 or found[0] == found[1]:
        return None
    a, b = found
    return _COLOR.sub(lambda m: b if m.group(0) == a else a, caption)


def two_colour_scenes(n: int, data_seed: int, size: int) -> list[tuple[torch.Tensor, str, str]]:
    """The first ``n`` scenes of ``ShapesDataset(data_seed)`` whose caption names two colours: (image, caption,
    swapped caption)."""
    data = ShapesDataset(data_seed, size, 100 * n)
    picked = []
    for i in range(len(data)):
        image, caption, _ = data[i]
        swapped = swap_colours(caption)
        if swapped is not None:
            picked.append((image, caption, swapped))
            if len(picked) == n:
                return picked
    raise ValueError(f"only {len(picked)} two-colour scenes in the first {len(data)} of seed {data_seed}")


def other_captions(captions: list[str]) -> list[str]:
    """For each caption, the next one in the list that differs from it (cyclically)."""
    if len(set(captions)) < 2:
        raise ValueError("the scenes need at least two different captions")
    n = len(captions)
    return [
        next(captions[(i + k) % n] for k in range(1, n) if captions[(i + k) % n] != c)
        for i, c in enumerate(captions)
    ]


def scale_losses(
    model: Any, scenes: list[tuple[torch.Tensor, str, str]], batch: int
) -> dict[str, list[float]]:
    """Per caption variant, the mean bit cross-entropy of every scale over ``scenes``."""
    family = model.family
    others = other_captions([s[1] for s in scenes])
    schedule = family.schedule(model.default_resolution, 1.0)
    scales = len(schedule.grids)
    sums = {v: torch.zeros(scales, dtype=torch.float64) for v in VARIANTS}
    with torch.no_grad():
        for start in range(0, len(scenes), batch):
            chunk = scenes[start : start + batch]
            images = torch.stack([s[0] for s in chunk]).to(family.device)
            captions = [s[1] for s in chunk]
            variants = {
                "true": (captions, None),
                "swapped": ([s[2] for s in chunk], None),
                "other": (others[start : start + batch], None),
                "unconditional": (captions, [True] * len(chunk)),
            }
            for name, (prompts, drop) in variants.items():
                out = transformer_losses(family, family.text_encoder, images, prompts, schedule, drop)
                losses = torch.stack([out[f"loss_s{s}"] for s in range(scales)]).double().cpu()
                sums[name] += losses * len(chunk)
    return {v: (sums[v] / len(scenes)).tolist() for v in VARIANTS}


def run(checkpoints: str | None, n_scenes: int, data_seed: int, batch: int) -> dict[str, Any]:
    import moss_models

    model = moss_models.load("testbed", checkpoints=checkpoints)
    scenes = two_colour_scenes(n_scenes, data_seed, model.default_resolution)
    losses = scale_losses(model, scenes, batch)
    sides = [g[0] for g in model.family.schedule(model.default_resolution, 1.0).grids]
    return {
        "checkpoints": checkpoints or "shipped",
        "scenes": n_scenes,
        "data_seed": data_seed,
        "sides": sides,
        "threads": torch.get_num_threads(),
        "losses": losses,
        "example": {"true": scenes[0][1], "swapped": scenes[0][2]},
    }


def markdown(result: dict[str, Any]) -> str:
    sides, losses = result["sides"], result["losses"]
    lines = ["| caption | " + " | ".join(f"{s}²" for s in sides) + " |", "|" + "---|" * (1 + len(sides))]
    lines.append("| true (bit loss) | " + " | ".join(f"{x:.4f}" for x in losses["true"]) + " |")
    for v in VARIANTS[1:]:
        rise = [a - b for a, b in zip(losses[v], losses["true"], strict=True)]
        lines.append(f"| {v} (rise) | " + " | ".join(f"{x:+.4f}" for x in rise) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoints", default=None, help="an export folder of tools/train_testbed.py (default: shipped)"
    )
    parser.add_argument("--scenes", type=int, default=192, help="held-out two-colour scenes")
    parser.add_argument(
        "--data-seed", type=int, default=424242, help="ShapesDataset seed (no run trains on it)"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (atomically)")
    args = parser.parse_args(argv)
    if args.scenes < 2 or args.batch < 1:
        parser.error(
            f"--scenes {args.scenes} must be at least 2 (other: the next caption), --batch {args.batch} 1"
        )
    torch.set_num_threads(args.threads)
    result = run(args.checkpoints, args.scenes, args.data_seed, args.batch)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
