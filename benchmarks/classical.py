"""Classical restoration baselines for benchmarks/restoration.py, one function per method.

Every method takes a degraded ``H x W x 3`` float image in [0, 1] and what it legitimately
needs, and returns the restored image (float32, clipped to [0, 1]). In the benchmark they are
given the *true* degradation parameters (an oracle: sigma for BM3D, the exact PSF for Wiener
and Richardson-Lucy, the airlight for the dark channel prior, the tone curve for gamma), which
is generous to them: a real user has to estimate these.

The reference implementations are used wherever one exists (BM3D: the ``bm3d`` package;
non-local means and CLAHE: OpenCV; Wiener and Richardson-Lucy: scikit-image; the guided
filter: OpenCV contrib); the dark channel prior (He et al., 2009) and the directional median
are written here from their papers' recipes. Heavy imports are inside the functions, so
importing this module is cheap.

Hyper-parameters that the true parameters do not fix (NLM strength per sigma, the Wiener
balance, RL iterations, the median length) were set once on a photo of the *training* split
(``lomiri``), never on the held-out photos; the constants below say so.

:data:`METHODS` lists, per taxonomy type, the methods the benchmark runs on that type (the
first is the one used in chains for mixtures); :func:`chain` undoes a mixture step by step in
reverse formation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

# Set on one training-split photo (lomiri), 256 px, never on held-out data.
NLM_H_PER_SIGMA = 0.6      # OpenCV NLM filter strength h = 0.6 sigma (0-255 scale)
JPEG_NLM_H_PER_Q = 0.06    # NLM strength for JPEG: h = 0.06 (100 - quality)
# Wiener regularisation grows with the PSF's spread s (px): 1e-3 s^3 was best at s = 1, 2
# and 3.2 (a wider PSF has more near-zero frequencies for the inverse to amplify).
WIENER_BALANCE_PER_SPREAD3 = 1e-3
RL_ITERATIONS = 10         # Richardson-Lucy iterations (more amplified ringing on this set)
RAIN_MEDIAN_LENGTH = 15    # px: the 1-D median across the streaks (rain here is dense)
DCP_PATCH, DCP_OMEGA, DCP_T0 = 15, 0.95, 0.1  # He et al. (2009)
# Guided filter (He et al. 2010): radius 60 px at 512 px, i.e. 1/8 of the side on smaller
# images (30 px was better than 60 at 256 px).
DCP_GUIDED_RADIUS, DCP_GUIDED_EPS = 60, 1e-3


def _single_thread():
    import cv2
    cv2.setNumThreads(1)
    return cv2


def _to_u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _out(img) -> np.ndarray:
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)


# --- noise ----------------------------------------------------------------------------------

def effective_sigma(sigma: float, shot: float, image: np.ndarray) -> float:
    """One std (0-255) for signal-dependent noise, as the denoisers take a single sigma: the
    taxonomy's model has variance sigma^2 + shot^2 x, so at the image's mean intensity x."""
    mean = float(np.clip(image, 0.0, 1.0).mean())
    return math.sqrt(sigma * sigma + shot * shot * mean)


def bm3d_denoise(img: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (Dabov et al. 2007; Makinen et al. 2020) on RGB, ``sigma`` on the 0-255 scale."""
    import bm3d
    if sigma <= 0:
        return _out(img)
    return _out(bm3d.bm3d_rgb(np.asarray(img, dtype=np.float64), sigma_psd=sigma / 255.0))


def nlm_denoise(img: np.ndarray, sigma: float, h_per_sigma: float = NLM_H_PER_SIGMA
                ) -> np.ndarray:
    """OpenCV's coloured non-local means (7x7 patches, 21x21 search), strength tied to sigma."""
    cv2 = _single_thread()
    if sigma <= 0:
        return _out(img)
    h = float(h_per_sigma * sigma)
    out = cv2.fastNlMeansDenoisingColored(_to_u8(img), None, h, h, 7, 21)
    return _out(out.astype(np.float32) / 255.0)


# --- blur -----------------------------------------------------------------------------------

def psf_of(params: Mapping[str, float]) -> np.ndarray:
    """The synthesiser's own blur kernel for these parameters (the oracle PSF)."""
    from reason_restore.reasoner.synthesis import blur_kernel
    return blur_kernel(params["width"], params["motion_length"], params["motion_angle"])


def _per_channel_padded(img: np.ndarray, psf: np.ndarray, fn) -> np.ndarray:
    """Deconvolve each channel after reflect-padding by the PSF size: the FFT methods assume
    a periodic image, and the synthesiser blurred with reflect padding."""
    pad = max(psf.shape) + 2
    h, w = img.shape[:2]
    x = np.pad(np.asarray(img, dtype=np.float64), ((pad, pad), (pad, pad), (0, 0)),
               mode="reflect")
    out = np.stack([fn(x[:, :, c]) for c in range(3)], 2)
    return _out(out[pad:pad + h, pad:pad + w])


def psf_spread(params: Mapping[str, float]) -> float:
    """Std of the PSF in px (Gaussian width and uniform motion segment), as the taxonomy's
    blur severity measures it."""
    m = params["motion_length"] / math.sqrt(12.0)
    return math.sqrt(params["width"] ** 2 + m * m)


def wiener_balance(params: Mapping[str, float]) -> float:
    return float(np.clip(WIENER_BALANCE_PER_SPREAD3 * psf_spread(params) ** 3, 1e-3, 0.1))


def wiener_deblur(img: np.ndarray, psf: np.ndarray, balance: float = 0.01) -> np.ndarray:
    """scikit-image's Wiener-Hunt deconvolution with the given PSF."""
    from skimage.restoration import wiener
    if psf.size == 1:
        return _out(img)
    return _per_channel_padded(img, psf, lambda c: wiener(c, psf, balance, clip=False))


def richardson_lucy_deblur(img: np.ndarray, psf: np.ndarray,
                           iterations: int = RL_ITERATIONS) -> np.ndarray:
    """scikit-image's Richardson-Lucy deconvolution with the given PSF."""
    from skimage.restoration import richardson_lucy
    if psf.size == 1:
        return _out(img)
    return _per_channel_padded(img, psf, lambda c: richardson_lucy(
        np.clip(c, 1e-4, 1.0), psf, num_iter=iterations, clip=False))


# --- haze -----------------------------------------------------------------------------------

def dark_channel(img: np.ndarray, patch: int = DCP_PATCH) -> np.ndarray:
    """Minimum over the colour channels, then over a ``patch`` x ``patch`` window."""
    cv2 = _single_thread()
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    return cv2.erode(np.asarray(img, np.float32).min(2), kernel)


def estimate_airlight(img: np.ndarray, dark: np.ndarray, fraction: float = 0.001
                      ) -> np.ndarray:
    """He et al.: among the brightest 0.1 % of the dark channel, the brightest input pixel."""
    flat = dark.ravel()
    n = max(1, int(round(flat.size * fraction)))
    idx = np.argpartition(flat, -n)[-n:]
    pixels = np.asarray(img, np.float32).reshape(-1, 3)[idx]
    return pixels[pixels.sum(1).argmax()]


def dark_channel_dehaze(img: np.ndarray, airlight: float | None = None,
                        patch: int = DCP_PATCH, omega: float = DCP_OMEGA, t0: float = DCP_T0,
                        radius: int = DCP_GUIDED_RADIUS, eps: float = DCP_GUIDED_EPS
                        ) -> np.ndarray:
    """Dark channel prior dehazing (He, Sun & Tang, CVPR 2009), transmission refined with the
    guided filter (He et al., 2010) instead of soft matting. ``airlight`` (grey, as in the
    synthesiser) is the oracle value when given, else estimated as in the paper."""
    cv2 = _single_thread()
    x = np.asarray(img, np.float32)
    if airlight is None:
        a = estimate_airlight(x, dark_channel(x, patch))
    else:
        a = np.full(3, float(airlight), np.float32)
    a = np.maximum(a, 1e-3)
    t = 1.0 - omega * dark_channel(x / a, patch)
    guide = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
    radius = min(radius, max(1, min(x.shape[:2]) // 8))
    t = cv2.ximgproc.guidedFilter(guide, t.astype(np.float32), radius, eps)
    t = np.maximum(t, t0)[:, :, None]
    return _out((x - a) / t + a)


# --- JPEG -----------------------------------------------------------------------------------

def nlm_dejpeg(img: np.ndarray, quality: float, h_per_q: float = JPEG_NLM_H_PER_Q
               ) -> np.ndarray:
    """Non-local means as a JPEG deblocker, strength tied to the quality factor."""
    cv2 = _single_thread()
    h = float(h_per_q * max(0.0, 100.0 - quality))
    if h <= 0:
        return _out(img)
    out = cv2.fastNlMeansDenoisingColored(_to_u8(img), None, h, h, 7, 21)
    return _out(out.astype(np.float32) / 255.0)


# --- low light ------------------------------------------------------------------------------

def clahe_brighten(img: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """OpenCV CLAHE on the L channel of CIE LAB (colour untouched)."""
    cv2 = _single_thread()
    lab = cv2.cvtColor(_to_u8(img), cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    lab[:, :, 0] = clahe.apply(lab[:, :, 0])
    return _out(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0)


def gamma_brighten(img: np.ndarray, exposure: float, gamma: float) -> np.ndarray:
    """Invert the synthesiser's tone curve y = exposure * x^gamma: x = (y / exposure)^(1/gamma).
    With the true exposure and gamma this is the exact inverse (an oracle), up to noise and
    8-bit rounding of the dark input."""
    y = np.clip(np.asarray(img, np.float64) / max(exposure, 1e-6), 0.0, 1.0)
    return _out(y ** (1.0 / max(gamma, 1e-6)))


# --- low resolution -------------------------------------------------------------------------

def bicubic_identity(img: np.ndarray) -> np.ndarray:
    """Bicubic upscaling of the low-resolution picture *is* the input here: the synthesiser
    (``_low_resolution``) already upsampled it back with bicubic interpolation."""
    return _out(img)


def downsample_like_synthesis(clean: np.ndarray, scale: float) -> np.ndarray:
    """The low-resolution picture the synthesiser made (antialiased bicubic, torch)."""
    import torch
    import torch.nn.functional as F
    h, w = clean.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(clean.transpose(2, 0, 1), np.float32))[None]
    y = F.interpolate(x, size=(max(1, round(h / scale)), max(1, round(w / scale))),
                      mode="bicubic", align_corners=False, antialias=True)
    return _out(y[0].numpy().transpose(1, 2, 0))


def bicubic_upscale(small: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV bicubic interpolation of a low-resolution picture to ``size`` = (h, w)."""
    cv2 = _single_thread()
    h, w = size
    return _out(cv2.resize(np.asarray(small, np.float32), (w, h),
                           interpolation=cv2.INTER_CUBIC))


# --- rain -----------------------------------------------------------------------------------

def line_footprint(length: int, angle_deg: float) -> np.ndarray:
    """Boolean footprint of a 1-px line of ``length`` through the centre, angle from the
    horizontal (image y down)."""
    n = length | 1
    fp = np.zeros((n, n), bool)
    c = n // 2
    theta = math.radians(angle_deg)
    for t in np.linspace(-(n // 2), n // 2, 4 * n):
        fp[int(round(c - t * math.sin(theta))), int(round(c + t * math.cos(theta)))] = True
    return fp


def directional_median_derain(img: np.ndarray, angle: float,
                              length: int = RAIN_MEDIAN_LENGTH) -> np.ndarray:
    """A 1-D median *across* the streaks (perpendicular to them): a streak is a thin bright
    line, so a median over a segment that crosses it takes the background on either side,
    while edges parallel to the streaks survive. The synthesiser's streak angle is measured
    from the vertical, so the perpendicular is ``angle`` from the horizontal."""
    from scipy.ndimage import median_filter
    fp = line_footprint(length, angle)
    x = np.asarray(img, np.float32)
    return _out(np.stack([median_filter(x[:, :, c], footprint=fp, mode="reflect")
                          for c in range(3)], 2))


# --- registry -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    name: str
    type: str
    # (degraded image, true parameters of this type) -> restored image
    run: Callable[[np.ndarray, Mapping[str, float]], np.ndarray]


def _noise_sigma(img, p):
    return effective_sigma(p["sigma"], p.get("shot", 0.0), img)


METHODS: dict[str, tuple[Method, ...]] = {
    "noise": (
        Method("BM3D", "noise", lambda x, p: bm3d_denoise(x, _noise_sigma(x, p))),
        Method("OpenCV NLM", "noise", lambda x, p: nlm_denoise(x, _noise_sigma(x, p))),
    ),
    "blur": (
        Method("Wiener", "blur", lambda x, p: wiener_deblur(x, psf_of(p), wiener_balance(p))),
        Method("Richardson-Lucy", "blur", lambda x, p: richardson_lucy_deblur(x, psf_of(p))),
    ),
    "haze": (
        Method("dark channel prior", "haze",
               lambda x, p: dark_channel_dehaze(x, airlight=p["airlight"])),
    ),
    "jpeg": (
        Method("NLM (JPEG)", "jpeg", lambda x, p: nlm_dejpeg(x, p["quality"])),
    ),
    "low_light": (
        Method("gamma (true curve)", "low_light",
               lambda x, p: gamma_brighten(x, p["exposure"], p["gamma"])),
        Method("CLAHE", "low_light", lambda x, p: clahe_brighten(x)),
    ),
    "low_resolution": (
        Method("bicubic (= input)", "low_resolution", lambda x, p: bicubic_identity(x)),
    ),
    "rain": (
        Method("directional median", "rain",
               lambda x, p: directional_median_derain(x, p["angle"])),
    ),
}


def chain(img: np.ndarray, steps: Sequence, pick: Mapping[str, str] | None = None
          ) -> np.ndarray:
    """Undo a mixture with one classical method per component, in reverse formation order
    (codec -> sensor -> optics -> scene), each with its true parameters. ``steps`` are the
    synthesis steps (``.type``, ``.params``), in formation order; ``pick`` maps a type to a
    method name (default: the type's first method)."""
    from reason_restore.reasoner.taxonomy import get_type
    out = np.asarray(img, np.float32)
    for step in sorted(steps, key=lambda s: -get_type(s.type).formation_order):
        out = method(step.type, (pick or {}).get(step.type)).run(out, step.params)
    return out


def method(type_name: str, name: str | None = None) -> Method:
    """The named classical method for a type (default: its first)."""
    options = METHODS[type_name]
    if name is None:
        return options[0]
    for m in options:
        if m.name == name:
            return m
    raise KeyError(f"no classical method {name!r} for {type_name}; expected one of "
                   f"{[m.name for m in options]}")
