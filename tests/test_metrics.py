"""PSNR and SSIM against values known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from reason_restore.restorer.metrics import (gaussian_window, psnr, rgb_to_y, ssim,
                                             ssim_luma)

C1, C2 = 0.01 ** 2, 0.03 ** 2


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_psnr_identical_is_inf_and_offset_is_20db():
    x = rand(2, 3, 16, 16, seed=1) * 0.8
    assert torch.isinf(psnr(x, x)).all()
    # A constant offset of 0.1 everywhere: MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB.
    x64 = x.double()
    assert psnr(x64 + 0.1, x64).tolist() == pytest.approx([20.0, 20.0], abs=1e-9)
    assert psnr(x + 0.1, x).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)  # float32 input


def test_psnr_known_mse():
    a, b = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    b[..., :2, :] = 0.5  # half the pixels off by 0.5: MSE 0.125
    assert float(psnr(a, b)) == pytest.approx(10 * math.log10(1 / 0.125), abs=1e-9)


def test_ssim_identical_is_one():
    x = rand(3, 3, 32, 40, seed=2)
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3, abs=1e-12)


def test_ssim_of_constant_images_is_the_luminance_term():
    # Flat images: zero variance and covariance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    for a, b in ((0.2, 0.6), (0.5, 0.55), (0.0, 1.0)):
        x = torch.full((1, 1, 20, 20), a, dtype=torch.float64)
        y = torch.full((1, 1, 20, 20), b, dtype=torch.float64)
        assert float(ssim_luma(x, y)) == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1),
                                                       abs=1e-12)


def test_ssim_on_linear_contrast_change():
    # y = -x + 1 around a constant mean 0.5 per window: the structure term is -1 for a
    # perfectly anti-correlated signal, luminance equal -> SSIM = (-2 var + C2)/(2 var + C2)
    # when every window sees the same variance: a checkerboard of +-d around 0.5.
    d = 0.2
    board = (torch.arange(24)[:, None] + torch.arange(24)[None, :]) % 2
    x = (0.5 + d * (2 * board - 1)).double()[None, None]
    y = 1.0 - x
    w = gaussian_window()[0, 0]
    # Window-weighted variance of the checkerboard: E[x^2] - E[x]^2 with the Gaussian weights.
    sign = (2 * board[:11, :11] - 1).double()
    mean = 0.5 + d * float((w * sign).sum())
    var = float((w * (0.5 + d * sign) ** 2).sum()) - mean ** 2
    # Each window's weights see either sign pattern; the two patterns are mirror images.
    lum = (2 * mean * (1 - mean) + C1) / (mean ** 2 + (1 - mean) ** 2 + C1)
    expected_one = lum * (-2 * var + C2) / (2 * var + C2)
    got = float(ssim_luma(x, y))
    assert got < -0.9
    assert got == pytest.approx(expected_one, abs=1e-6)


def test_ssim_uses_bt601_luma_and_penalises_noise():
    gray = torch.full((1, 3, 8, 8), 0.5)
    assert float(rgb_to_y(gray).mean()) == pytest.approx((16 + 219 * 0.5) / 255, abs=1e-12)
    x = rand(1, 3, 48, 48, seed=3) * 0.5 + 0.25
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4)))
    light = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4)))
    s_noisy, s_light = float(ssim(noisy, x)), float(ssim(light, x))
    assert 0.0 < s_noisy < s_light < 1.0
    assert float(ssim(x, noisy)) == pytest.approx(s_noisy, abs=1e-12)  # symmetric


def test_small_images_and_shape_errors():
    tiny = rand(1, 3, 5, 7, seed=5)
    assert float(ssim(tiny, tiny)) == pytest.approx(1.0)
    one = rand(1, 3, 1, 1, seed=6)
    assert float(ssim(one, one)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"image \[1, 3, 5, 7\] and reference \[1, 3, 7, 5\]"):
        ssim(tiny, tiny.transpose(2, 3))
    with pytest.raises(ValueError, match="restored .* clean .* differ"):
        psnr(tiny, rand(1, 3, 6, 7), x_name="restored", y_name="clean")
