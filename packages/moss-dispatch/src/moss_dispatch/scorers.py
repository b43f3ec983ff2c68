"""Training-free frequency scorers for drafted latents.

Every scorer maps a latent ``(B, C, H, W)`` to a score map ``(B, H, W)``: higher means "more high-frequency
content here", which the dispatcher sends to finer scales. All are vectorised (pooling, convolutions, batched
FFTs), run on whatever device the latent is on, and compute in float32 (float64 if the latent is float64) so a
bf16 draft does not lose the small variances of flat regions.

Border handling, per scorer:

* ``variance`` — the window is clipped at the border: a border token's statistics are over the part of its
  k×k window that lies inside the map (``avg_pool2d(count_include_pad=False)``). No values are invented.
* ``laplacian`` / ``gradient`` — the 3×3 stencil sees replicate-padded borders (a constant map scores 0
  everywhere); the optional local averaging window is clipped like ``variance``.
* ``fft`` — patches at the border are reflect-padded, which keeps a constant or linear map free of the
  artificial edge a zero pad would add.
* ``random`` — no spatial structure; a seeded ablation baseline.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from moss_dispatch._checks import check_finite_tensor, check_window

Scorer = Callable[..., torch.Tensor]

_LATENT_LAYOUT = "(B, C, H, W)"


def _prepare(latent: torch.Tensor) -> torch.Tensor:
    check_finite_tensor(latent, 4, "latent", _LATENT_LAYOUT)
    return latent.to(torch.float64 if latent.dtype == torch.float64 else torch.float32)


def _box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a centred window, clipped at the border (padding is excluded from the count)."""
    if window == 1:
        return x
    return F.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)


def variance_score(latent: torch.Tensor, window: int = 3) -> torch.Tensor:
    """The paper's Eq. 3: local variance over a ``window``×``window`` neighbourhood, averaged over channels.

    ``F(p) = 1/C Σ_c (E[I(q,c)²] − E[I(q,c)]²), q ∈ N(p)``, with the expectations computed by box filters.
    Each channel is first centred on its map mean (variance is shift-invariant) so ``E[x²] − E[x]²`` does not
    cancel catastrophically when a channel has a large offset; what cancellation remains is clamped at 0.
    """
    x = _prepare(latent)
    window = check_window(window, x.shape[-2], x.shape[-1])
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    mean = _box_mean(x, window)
    mean_sq = _box_mean(x * x, window)
    return (mean_sq - mean * mean).clamp_min_(0).mean(dim=1)


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    weight = kernel.to(dtype=x.dtype, device=x.device).expand(c, 1, *kernel.shape)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=c)


_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def laplacian_score(latent: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Energy of the 5-point Laplacian, averaged over channels and a local ``window`` (1 = pointwise)."""
    x = _prepare(latent)
    window = check_window(window, x.shape[-2], x.shape[-1])
    lap = _depthwise(x, _LAPLACIAN)
    return _box_mean(lap * lap, window).mean(dim=1)


def gradient_score(latent: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Sobel gradient magnitude, averaged over channels and a local ``window`` (1 = pointwise)."""
    x = _prepare(latent)
    window = check_window(window, x.shape[-2], x.shape[-1])
    gx = _depthwise(x, _SOBEL_X)
    gy = _depthwise(x, _SOBEL_X.t())
    return _box_mean(torch.sqrt(gx * gx + gy * gy), window).mean(dim=1)


def highpass_mask(window: int, cutoff: float) -> torch.Tensor:
    """Boolean ``(window, window)`` mask of the FFT bins whose radius is at least ``cutoff`` × Nyquist."""
    freqs = torch.fft.fftfreq(window, dtype=torch.float64)
    radius = torch.sqrt(freqs[:, None] ** 2 + freqs[None, :] ** 2) / 0.5
    return radius >= cutoff - 1e-12


def fft_score(latent: torch.Tensor, window: int = 5, cutoff: float = 0.5) -> torch.Tensor:
    """High-pass spectral energy of the ``window``×``window`` patch centred on each token.

    Each channel's patch is transformed with a 2D FFT; the energy of the bins at or beyond ``cutoff`` (a
    fraction of the Nyquist radius, in (0, √2]) is summed, divided by the patch size, and averaged over
    channels. With a cutoff that keeps every bin except DC this is, by Parseval, the patch variance times the
    patch area, so useful cutoffs are those that also drop the lowest non-DC bins (the default keeps bins whose
    radius is at least half of Nyquist).
    """
    x = _prepare(latent)
    window = check_window(window, x.shape[-2], x.shape[-1])
    if not isinstance(cutoff, int | float) or isinstance(cutoff, bool) or not 0.0 < cutoff <= math.sqrt(2):
        raise ValueError(f"cutoff must be a number in (0, sqrt(2)] (a fraction of Nyquist), got {cutoff!r}")
    mask = highpass_mask(window, float(cutoff))
    if not bool(mask.any()):
        raise ValueError(f"cutoff={cutoff} keeps no FFT bin of a {window}x{window} patch; lower it")
    b, c, h, w = x.shape
    r = window // 2
    patches = F.unfold(F.pad(x, (r, r, r, r), mode="reflect"), window)  # (B, C·p·p, H·W)
    patches = patches.view(b, c, window, window, h * w).permute(0, 1, 4, 2, 3)
    power = torch.fft.fft2(patches).abs().square()
    energy = (power * mask.to(device=x.device, dtype=power.dtype)).sum(dim=(-2, -1)) / (window * window)
    return energy.mean(dim=1).view(b, h, w)


def random_score(latent: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Seeded uniform scores: the ablation baseline with no frequency information.

    The draw happens on the CPU with its own generator, so the scores depend only on ``seed`` and the shape,
    never on the device or on the global RNG.
    """
    x = _prepare(latent)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    b, _, h, w = x.shape
    return torch.rand((b, h, w), generator=gen, dtype=torch.float64).to(device=x.device, dtype=x.dtype)


SCORERS: dict[str, Scorer] = {
    "variance": variance_score,
    "fft": fft_score,
    "laplacian": laplacian_score,
    "gradient": gradient_score,
    "random": random_score,
}


def register_scorer(name: str, fn: Scorer, *, overwrite: bool = False) -> None:
    """Add a scorer ``fn(latent, **params) -> (B, H, W)`` to the registry under ``name``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in SCORERS and not overwrite:
        raise ValueError(f"a scorer named {name!r} is already registered; pass overwrite=True to replace it")
    SCORERS[name] = fn


def get_scorer(name: str, **params) -> Callable[[torch.Tensor], torch.Tensor]:
    """Look a scorer up by name and bind its parameters, validating both eagerly.

    >>> score = get_scorer("variance", window=5)
    >>> score(torch.randn(2, 32, 16, 16)).shape
    torch.Size([2, 16, 16])
    """
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; choose one of {sorted(SCORERS)}")
    fn = SCORERS[name]
    allowed = [p for p in inspect.signature(fn).parameters if p != "latent"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for scorer {name!r}; allowed: {allowed}")

    def bound(latent: torch.Tensor) -> torch.Tensor:
        return fn(latent, **params)

    bound.__name__ = f"{name}_score"
    bound.__doc__ = fn.__doc__
    return bound


def frequency_score(latent: torch.Tensor, name: str = "variance", **params) -> torch.Tensor:
    """Score a drafted latent with the named scorer: ``(B, C, H, W) -> (B, H, W)``."""
    return get_scorer(name, **params)(latent)
