"""Every scorer against a naive per-position reference written with numpy loops."""

import numpy as np
import pytest
import torch

from moss_dispatch import (
    SCORERS,
    fft_score,
    frequency_score,
    get_scorer,
    gradient_score,
    laplacian_score,
    random_score,
    register_scorer,
    variance_score,
)

SHAPES = [(1, 1, 5, 5), (2, 3, 7, 9), (2, 4, 12, 10)]


def _latent(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


def _window_slices(i, j, h, w, window):
    r = window // 2
    return slice(max(0, i - r), min(h, i + r + 1)), slice(max(0, j - r), min(w, j + r + 1))


def naive_variance(x: np.ndarray, window: int) -> np.ndarray:
    b, c, h, w = x.shape
    out = np.zeros((b, h, w))
    for n in range(b):
        for i in range(h):
            for j in range(w):
                rs, cs = _window_slices(i, j, h, w, window)
                patch = x[n, :, rs, cs].reshape(c, -1)
                out[n, i, j] = patch.var(axis=1).mean()  # population variance, mean over channels
    return out


def naive_local_mean(m: np.ndarray, window: int) -> np.ndarray:
    b, h, w = m.shape
    out = np.zeros_like(m)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                rs, cs = _window_slices(i, j, h, w, window)
                out[n, i, j] = m[n, rs, cs].mean()
    return out


def _stencil(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    h, w = x.shape[-2:]
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = (p[:, :, i : i + 3, j : j + 3] * kernel).sum(axis=(-2, -1))
    return out


def naive_laplacian(x: np.ndarray, window: int) -> np.ndarray:
    lap = _stencil(x, np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float))
    per_channel = np.stack([naive_local_mean(lap[:, ch] ** 2, window) for ch in range(x.shape[1])], axis=1)
    return per_channel.mean(axis=1)


def naive_gradient(x: np.ndarray, window: int) -> np.ndarray:
    sx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)
    mag = np.sqrt(_stencil(x, sx) ** 2 + _stencil(x, sx.T) ** 2)
    per_channel = np.stack([naive_local_mean(mag[:, ch], window) for ch in range(x.shape[1])], axis=1)
    return per_channel.mean(axis=1)


def naive_fft(x: np.ndarray, window: int, cutoff: float) -> np.ndarray:
    b, c, h, w = x.shape
    r = window // 2
    f = np.fft.fftfreq(window)
    keep = np.hypot(f[:, None], f[None, :]) / 0.5 >= cutoff - 1e-12
    p = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode="reflect")
    out = np.zeros((b, h, w))
    for n in range(b):
        for i in range(h):
            for j in range(w):
                energies = []
                for ch in range(c):
                    spec = np.abs(np.fft.fft2(p[n, ch, i : i + window, j : j + window])) ** 2
                    energies.append(spec[keep].sum() / window**2)
                out[n, i, j] = np.mean(energies)
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("window", [1, 3, 5])
def test_variance_matches_naive(shape, window):
    x = _latent(shape)
    got = variance_score(x, window=window)
    assert got.shape == (shape[0], shape[2], shape[3])
    np.testing.assert_allclose(got.numpy(), naive_variance(x.numpy(), window), rtol=1e-10, atol=1e-12)


def test_variance_float32_and_bf16_inputs_are_scored_in_float32():
    x64 = _latent((2, 8, 9, 9))
    ref = naive_variance(x64.numpy(), 3)
    got32 = variance_score(x64.float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), ref, rtol=1e-4, atol=1e-5)
    xb = x64.bfloat16()
    gotb = variance_score(xb)
    assert gotb.dtype == torch.float32
    np.testing.assert_allclose(gotb.numpy(), naive_variance(xb.double().numpy(), 3), rtol=1e-4, atol=1e-5)


def test_variance_of_constant_map_is_zero_and_never_negative():
    x = torch.full((1, 4, 8, 8), 3.7)
    assert torch.equal(variance_score(x), torch.zeros(1, 8, 8))
    x = 1e4 + 1e-3 * _latent((1, 4, 8, 8), dtype=torch.float32)  # catastrophic cancellation regime
    assert bool((variance_score(x) >= 0).all())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("window", [1, 3])
def test_laplacian_matches_naive(shape, window):
    x = _latent(shape, seed=1)
    np.testing.assert_allclose(
        laplacian_score(x, window=window).numpy(), naive_laplacian(x.numpy(), window), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("window", [1, 3])
def test_gradient_matches_naive(shape, window):
    x = _latent(shape, seed=2)
    np.testing.assert_allclose(
        gradient_score(x, window=window).numpy(), naive_gradient(x.numpy(), window), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("window", "cutoff"), [(3, 0.5), (5, 0.5), (5, 0.9)])
def test_fft_matches_naive(shape, window, cutoff):
    x = _latent(shape, seed=3)
    np.testing.assert_allclose(
        fft_score(x, window=window, cutoff=cutoff).numpy(),
        naive_fft(x.numpy(), window, cutoff),
        rtol=1e-9,
        atol=1e-12,
    )


def test_fft_with_all_but_dc_is_scaled_patch_variance():
    # Parseval: dropping only the DC bin leaves area × population variance of the (reflect-padded) patch.
    x = _latent((1, 2, 9, 9), seed=4)
    tiny = 1e-6
    got = fft_score(x, window=3, cutoff=tiny)
    p = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    ref = np.zeros((1, 9, 9))
    for i in range(9):
        for j in range(9):
            ref[0, i, j] = np.mean([9 * p[0, ch, i : i + 3, j : j + 3].var() for ch in range(2)])
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-12)


def test_scorers_rank_an_edge_above_a_flat_region():
    x = torch.zeros(1, 3, 16, 16)
    x[:, :, :, 8:] = 1.0  # a vertical edge between columns 7 and 8
    for name in ("variance", "fft", "laplacian", "gradient"):
        s = frequency_score(x, name)
        assert s[0, 8, 7] > s[0, 8, 2], name
        assert s[0, 8, 8] > s[0, 8, 13], name


def test_random_score_is_seeded_and_device_independent():
    x = _latent((2, 3, 6, 7), dtype=torch.float32)
    a, b = random_score(x, seed=5), random_score(x, seed=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, random_score(x, seed=6))
    assert a.shape == (2, 6, 7)
    assert not torch.equal(a[0], a[1])  # images get different scores
    assert bool(((a >= 0) & (a < 1)).all())
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(random_score(x, seed=5), a)


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_every_scorer_is_deterministic(name):
    x = _latent((2, 4, 10, 10), dtype=torch.float32)
    assert torch.equal(frequency_score(x, name), frequency_score(x.clone(), name))


def test_get_scorer_binds_parameters():
    x = _latent((1, 2, 9, 9))
    assert torch.equal(get_scorer("variance", window=5)(x), variance_score(x, window=5))


def test_register_scorer():
    def dc_deviation(latent):
        return (latent - latent.mean(dim=(2, 3), keepdim=True)).square().sum(1)

    register_scorer("test_dc", dc_deviation)
    try:
        x = _latent((1, 2, 4, 4))
        assert torch.equal(frequency_score(x, "test_dc"), dc_deviation(x))
        with pytest.raises(ValueError, match="already registered"):
            register_scorer("test_dc", dc_deviation)
    finally:
        SCORERS.pop("test_dc")
