"""PSNR / SSIM / MS-SSIM against hand-computed values, and input validation."""

import math

import pytest
import torch

from moss_eval import MS_SSIM_MIN_SIZE, fidelity, ms_ssim, psnr, ssim


def pattern(h=32, w=32, seed=0) -> torch.Tensor:
    """uint8 (H, W, 3) with values in [50, 200], so small offsets never clip."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(50, 201, (h, w, 3), generator=g, dtype=torch.uint8)


def test_identical_images():
    img = pattern(MS_SSIM_MIN_SIZE, MS_SSIM_MIN_SIZE)
    out = fidelity(img, img.clone())
    assert out["psnr"] == math.inf
    assert out["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert out["ms_ssim"] == pytest.approx(1.0, abs=1e-6)


def test_known_mse_gives_known_psnr():
    # float: MSE = 0.1² = 0.01 → 10·log10(1 / 0.01) = 20 dB
    assert psnr(torch.zeros(3, 8, 8), torch.full((3, 8, 8), 0.1)) == pytest.approx(20.0, abs=1e-4)
    # uint8 off by d levels everywhere: MSE = (d/255)² → 20·log10(255 / d)
    img = pattern()
    for d in (1, 10):
        assert psnr(img + d, img) == pytest.approx(20 * math.log10(255 / d), abs=1e-3)


def test_batch_is_mean_of_per_image_values():
    ref = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    img = ref.clone()
    img[0] += 0.1  # 20 dB
    img[1] += 0.01  # 40 dB
    assert psnr(img, ref) == pytest.approx(30.0)  # a pooled MSE would give ~23 dB


def test_ssim_of_constant_images_matches_formula():
    # constant images: variance terms vanish, SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01 · data_range)²
    a, b, c1 = 0.5, 0.25, 1e-4
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b))
    assert got == pytest.approx(expected, rel=1e-5)


def test_uint8_and_float_layouts_agree():
    img, ref = pattern(seed=1), pattern(seed=2)
    as_float = lambda x: x.permute(2, 0, 1).float() / 255  # noqa: E731
    assert psnr(img, ref) == pytest.approx(psnr(as_float(img), as_float(ref)), rel=1e-5)
    assert ssim(img, ref) == pytest.approx(ssim(as_float(img), as_float(ref)), rel=1e-5)
    assert abs(ssim(img, ref)) < 0.1  # independent noise: no structure in common


def test_ms_ssim_size_rule():
    big = pattern(MS_SSIM_MIN_SIZE, MS_SSIM_MIN_SIZE)
    assert 0.0 < ms_ssim(big + 5, big) < 1.0
    small = pattern(MS_SSIM_MIN_SIZE - 1, MS_SSIM_MIN_SIZE)
    with pytest.raises(ValueError, match="176"):
        ms_ssim(small, small)
    out = fidelity(small + 1, small)
    assert out["ms_ssim"] is None and out["ssim"] < 1.0


@pytest.mark.parametrize(
    ("image", "reference", "match"),
    [
        (torch.zeros(3, 8, 8), torch.zeros(3, 8, 9), r"image has shape .* reference has"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), torch.zeros(3, 8, 8), "image is torch.uint8 but reference"),
        (torch.zeros(3, 8, 8), torch.full((3, 8, 8), 1.5), r"reference: float images must lie in \[0, 1\]"),
        (torch.full((3, 8, 8), float("nan")), torch.zeros(3, 8, 8), "image has NaN"),
        (
            torch.zeros(3, 8, 8, dtype=torch.int64),
            torch.zeros(3, 8, 8, dtype=torch.int64),
            "image must be uint8",
        ),
        (torch.zeros(4, 8, 8), torch.zeros(4, 8, 8), "image must have 1 or 3 channels"),
        (torch.zeros(8, 8), torch.zeros(8, 8), r"image: float images must be \(C, H, W\)"),
        ([[0.0]], torch.zeros(3, 8, 8), "image must be a torch.Tensor"),
    ],
)
def test_bad_inputs_name_the_argument(image, reference, match):
    with pytest.raises(ValueError, match=match):
        fidelity(image, reference)


def test_numpy_input():
    np = pytest.importorskip("numpy")
    img = pattern()
    assert psnr(img.numpy(), np.asarray(img) + np.uint8(10)) == pytest.approx(20 * math.log10(25.5), abs=1e-3)


def test_lpips_only_when_a_model_is_given():
    img, ref = pattern(seed=3), pattern(seed=4)
    assert set(fidelity(img, ref)) == {"psnr", "ssim", "ms_ssim"}  # existing callers: unchanged
    seen = []

    def per_image_distance(a, b):  # an LPIPS stand-in: float (B, 3, H, W) in [0, 1] -> (B,)
        seen.append((a, b))
        return (a - b).abs().mean(dim=(1, 2, 3))

    batch, refs = torch.stack([img, img]), torch.stack([ref, img])
    out = fidelity(batch, refs, lpips=per_image_distance)
    a, b = seen[0]
    assert a.shape == (2, 3, 32, 32) and a.dtype == torch.float32 and float(a.max()) <= 1.0
    as_float = img.permute(2, 0, 1).float() / 255
    torch.testing.assert_close(a[0], as_float)
    assert torch.equal(b[1], a[1])  # the second reference is the image itself
    # the mean of per-image distances: the second pair is identical
    expected = (as_float - ref.permute(2, 0, 1).float() / 255).abs().mean().item() / 2
    assert out["lpips"] == pytest.approx(expected, rel=1e-6)
