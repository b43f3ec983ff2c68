"""Fidelity of an image to a reference image (a MoSs image against its baseline twin): PSNR, SSIM, MS-SSIM, LPIPS.

Input layouts — the dtype decides, so a layout is never guessed from the shape:

* ``uint8``: channels-last ``(H, W, C)`` or ``(B, H, W, C)``, values 0…255 (what PIL / PNG files give);
* floating point: channels-first ``(C, H, W)`` or ``(B, C, H, W)``, values in ``[0, 1]`` (what a generator's
  decoder gives after clamping).

``C`` is 1 or 3. ``image`` and ``reference`` must have the same kind (both uint8 or both float) and, once in
``(B, C, H, W)``, the same shape. Tensors and NumPy arrays are accepted. Both are compared as float in ``[0, 1]``
(``data_range=1``); uint8 in float32, floats in their own precision (at least float32).

Every metric is computed **per image** and averaged over the batch (so a batch's PSNR is the mean of per-image
PSNRs, not the PSNR of the pooled MSE). Identical images give PSNR ``inf`` and SSIM / MS-SSIM ``1.0``.

MS-SSIM uses torchmetrics' defaults — 5 scales (betas ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``), an 11-px
Gaussian window, σ = 1.5. torchmetrics requires ``side // 16 > 10`` at the coarsest scale, i.e. **both sides
>= 176 px** (its message says "larger than 160", but 161…175 fail too). :func:`ms_ssim` raises ValueError below
that; :func:`fidelity` returns ``ms_ssim=None`` instead, because small debug runs (e.g. 64² or 128²) are routine
and their PSNR/SSIM are still meaningful. No reduced-scale variant is used: its numbers would not be comparable
with the usual 5-scale MS-SSIM.

LPIPS needs network weights, so it is optional: :func:`fidelity` adds ``"lpips"`` only when given an LPIPS
model (:func:`moss_eval.quality.lpips.load_lpips`, from local weight files); without one its output is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# torchmetrics is imported where it is used: it takes seconds to import, and every ``import moss_eval`` (the run
# records, the timers) would pay for it.

MS_SSIM_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_KERNEL_SIZE = 11
# torchmetrics' rule: side // (len(betas) - 1) ** 2 > kernel_size - 1  ->  side >= kernel_size · (len(betas) - 1)²
MS_SSIM_MIN_SIZE = SSIM_KERNEL_SIZE * (len(MS_SSIM_BETAS) - 1) ** 2  # 176
# SSIM reflect-pads by (kernel - 1) // 2 = 5 on each side, which needs each side to be larger than the padding.
SSIM_MIN_SIZE = (SSIM_KERNEL_SIZE - 1) // 2 + 1


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if hasattr(x, "__array__"):
        return torch.as_tensor(x)
    raise ValueError(f"{name} must be a torch.Tensor or a NumPy array, got {type(x).__name__}")


def to_float_bchw(x: Any, name: str = "image") -> torch.Tensor:
    """Validate one input (see the module docstring) and return it as float ``(B, C, H, W)`` in ``[0, 1]``."""
    t = _as_tensor(x, name).detach()
    if t.dtype == torch.uint8:
        if t.ndim not in (3, 4):
            raise ValueError(
                f"{name}: uint8 images must be (H, W, C) or (B, H, W, C), got shape {tuple(t.shape)}"
            )
        t = t.unsqueeze(0) if t.ndim == 3 else t
        t = t.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    elif t.is_floating_point():
        if t.ndim not in (3, 4):
            raise ValueError(
                f"{name}: float images must be (C, H, W) or (B, C, H, W), got shape {tuple(t.shape)}"
            )
        t = t.unsqueeze(0) if t.ndim == 3 else t
        t = t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} has NaN or infinite values")
        if t.numel() and (t.min() < 0 or t.max() > 1):
            raise ValueError(
                f"{name}: float images must lie in [0, 1], got [{t.min().item():.4g}, {t.max().item():.4g}]"
            )
    else:
        raise ValueError(
            f"{name} must be uint8 (H, W, C) or floating point (C, H, W) in [0, 1], got {t.dtype}"
        )
    b, c, h, w = t.shape
    if c not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels, got {c} (layout is decided by dtype; see docs)")
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)} as (B, C, H, W)")
    return t


def _pair(image: Any, reference: Any) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_tensor(image, "image"), _as_tensor(reference, "reference")
    if (a.dtype == torch.uint8) != (b.dtype == torch.uint8):
        raise ValueError(
            f"image is {a.dtype} but reference is {b.dtype}: give both as uint8 (H, W, C) or both as float "
            "(C, H, W) in [0, 1]"
        )
    a, b = to_float_bchw(a, "image"), to_float_bchw(b, "reference")
    if a.shape != b.shape:
        raise ValueError(
            f"image has shape {tuple(a.shape)} but reference has {tuple(b.shape)} (as B, C, H, W); they must match"
        )
    if a.dtype != b.dtype:  # float32 vs float64: compare in the finer one
        a, b = a.to(torch.float64), b.to(torch.float64)
    return a, b


def _check_min_size(x: torch.Tensor, minimum: int, metric: str) -> None:
    h, w = x.shape[-2:]
    if h < minimum or w < minimum:
        raise ValueError(f"{metric} needs images of at least {minimum}×{minimum} px, got {h}×{w} (image)")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    per_image = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return float(per_image.mean())


def _ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_min_size(a, SSIM_MIN_SIZE, "ssim")
    per_image = structural_similarity_index_measure(
        a, b, data_range=1.0, kernel_size=SSIM_KERNEL_SIZE, reduction="none"
    )
    return float(per_image.mean())


def _ms_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    h, w = a.shape[-2:]
    if h < MS_SSIM_MIN_SIZE or w < MS_SSIM_MIN_SIZE:
        raise ValueError(
            f"ms_ssim needs images of at least {MS_SSIM_MIN_SIZE}×{MS_SSIM_MIN_SIZE} px with 5 scales and an "
            f"{SSIM_KERNEL_SIZE}-px window, got {h}×{w} (image); fidelity() reports ms_ssim=None for such images"
        )
    per_image = multiscale_structural_similarity_index_measure(
        a, b, data_range=1.0, kernel_size=SSIM_KERNEL_SIZE, betas=MS_SSIM_BETAS, reduction="none"
    )
    return float(per_image.mean())


def psnr(image: Any, reference: Any) -> float:
    """Peak signal-to-noise ratio in dB (``data_range=1``), per image, averaged; ``inf`` for identical images."""
    return _psnr(*_pair(image, reference))


def ssim(image: Any, reference: Any) -> float:
    """Structural similarity (Gaussian 11-px window, σ = 1.5), per image, averaged; 1.0 for identical images."""
    return _ssim(*_pair(image, reference))


def ms_ssim(image: Any, reference: Any) -> float:
    """Multi-scale SSIM (5 scales); raises ValueError for images smaller than 176 px on a side."""
    return _ms_ssim(*_pair(image, reference))


def fidelity(image: Any, reference: Any, lpips: Callable | None = None) -> dict[str, float | None]:
    """``{"psnr", "ssim", "ms_ssim"}`` of ``image`` against ``reference``; ``ms_ssim`` is None below 176 px.

    With ``lpips`` (a :class:`moss_eval.quality.lpips.LPIPS`: float ``(B, 3, H, W)`` pairs in ``[0, 1]`` →
    per-image distances) the result also has ``"lpips"``, the per-image distances averaged like the others.
    """
    a, b = _pair(image, reference)
    small = min(a.shape[-2:]) < MS_SSIM_MIN_SIZE
    out = {"psnr": _psnr(a, b), "ssim": _ssim(a, b), "ms_ssim": None if small else _ms_ssim(a, b)}
    if lpips is not None:
        out["lpips"] = float(lpips(a, b).double().mean())
    return out
