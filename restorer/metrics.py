"""Full-reference image quality: PSNR and SSIM, torch only.

Both take ``[B, 3, H, W]`` (or ``[B, 1, H, W]``) float images in [0, 1] and return one value per
image (a ``[B]`` float64 tensor). Computation is in float64, so a constant offset of 0.1 gives
PSNR 20 dB to within rounding of the inputs.

* :func:`psnr` on all channels, peak 1.0; identical images give ``inf``.
* :func:`ssim` is the standard SSIM of Wang et al. (2004): an 11x11 Gaussian window with
  sigma 1.5, K1 = 0.01, K2 = 0.03, dynamic range 1, "valid" filtering (no padding, as in the
  reference MATLAB code) and the mean of the SSIM map; on the luminance Y of ITU-R BT.601
  YCbCr (``rgb_to_y``), the usual convention in restoration papers. Images smaller than the
  window use the largest odd window that fits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "ssim_luma", "rgb_to_y", "gaussian_window"]

K1, K2 = 0.01, 0.03
WINDOW, SIGMA = 11, 1.5


def _check_pair(x: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str) -> None:
    for t, n in ((x, x_name), (y, y_name)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            got = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{n}: expected [B, C, H, W], got {got}")
    if x.shape != y.shape:
        raise ValueError(f"{x_name} {list(x.shape)} and {y_name} {list(y.shape)} differ in "
                         f"shape; they must match")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0,
         x_name: str = "image", y_name: str = "reference") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``10 log10(range^2 / MSE)``."""
    _check_pair(x, y, x_name, y_name)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    out = 10.0 * torch.log10(data_range ** 2 / mse)
    return torch.where(mse == 0, torch.full_like(out, math.inf), out)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of ``[B, 3, H, W]`` in [0, 1] (as MATLAB ``rgb2ycbcr``, scaled to [0, 1]):
    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255``. One channel passes through."""
    if x.shape[1] == 1:
        return x.double()
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_y: expected 1 or 3 channels, got {x.shape[1]}")
    x = x.double()
    return (16.0 + 65.481 * x[:, :1] + 128.553 * x[:, 1:2] + 24.966 * x[:, 2:3]) / 255.0


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> torch.Tensor:
    """Normalised 2-D Gaussian ``[1, 1, size, size]`` (float64)."""
    r = (size - 1) / 2.0
    g = torch.exp(-(torch.arange(size, dtype=torch.float64) - r) ** 2 / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_luma(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM of single-channel ``[B, 1, H, W]`` images; returns ``[B]`` (float64)."""
    if a.shape[1] != 1 or a.shape != b.shape:
        raise ValueError(f"ssim_luma: expected two [B, 1, H, W] of equal shape, got "
                         f"{list(a.shape)} and {list(b.shape)}")
    a, b = a.double(), b.double()
    size = min(WINDOW, a.shape[-2], a.shape[-1])
    size = size if size % 2 else size - 1
    win = gaussian_window(size, SIGMA).to(a.device)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2

    def blur(t):
        return F.conv2d(t, win)

    mu_a, mu_b = blur(a), blur(b)
    var_a = (blur(a * a) - mu_a * mu_a).clamp_min(0.0)
    var_b = (blur(b * b) - mu_b * mu_b).clamp_min(0.0)
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(1)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0,
         x_name: str = "image", y_name: str = "reference") -> torch.Tensor:
    """SSIM per image on the BT.601 luminance (see the module docstring); ``[B]``."""
    _check_pair(x, y, x_name, y_name)
    return ssim_luma(rgb_to_y(x), rgb_to_y(y), data_range)
