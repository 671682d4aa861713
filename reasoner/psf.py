"""Evidence of a blur's point-spread function: the signature it leaves in the input's spectrum.

A PSF multiplies the image's power spectrum by its own, ``|K(f)|^2``. The synthesiser's blur
(and a camera's, to first order) is a Gaussian of width ``sigma`` convolved with a straight
motion segment of length ``L`` at angle ``theta``, so

    |K(f)|^2 = exp(-4 pi^2 sigma^2 |f|^2) * sinc^2(L f . u_theta)

The motion factor is what a small network reads worst (on its 128-px crops the angle of a
horizontal blur came out anywhere in 2-160 degrees) and what the spectrum shows best: zero
power along ``u_theta`` at every multiple of ``1/L`` cycles/px, a pattern no scene makes.
The isotropic factors (the scene's own fall-off with frequency, the Gaussian) are the same on
every ring ``|f| = r``, so the fit takes them as one free level per ring and compares each
candidate motion by how well ``log S(f) - log(sinc^2 + EPS)`` is then constant on its ring (the
spectrum is a Welch average of Hann windows, the rings those above ``SNR`` times the floor that
8-bit rounding and the diagnosed noise put under the image: beyond them the zeros are drowned).
The width follows from the ring levels with the motion taken out: a natural scene falls off
as a power of frequency, ``c - a log r``, and a Gaussian bends that line down by
``4 pi^2 sigma^2 r^2``.

``measure_blur`` puts the fitted PSF in place of the analyzer's blur parameters (the analyzer
still decides whether there is a blur), unless the input keeps detail that the fitted PSF
would have removed (``evidence.detail_ratio`` over ``DETAIL_LIMIT``: the scene's own
anisotropy can pass for a long motion), and not beside JPEG or rain.

Beside an upscaling the resampling trace measured (resampling.py), the upscaling's power
transfer ``|T(f)|^2`` (``upscaling_gain``) is divided out of the spectrum first, on the rings
where it passes ``PASSBAND``, and only the width is fitted (the motion's zeros lie past the
small image's Nyquist frequency, where the upscaling has cut everything); a width under
``MIN_WIDTH`` is what is left of the upscaling's softness, and the blur goes. Beside a low
resolution only the analyzer read, whose scale is too rough to take out, the analyzer's blur
stays. On training-source photos (6 per source; every level of blur and low resolution, their
mixtures, blurs of 1-2.5 px beside upscalings by 1.75-3.4, 4 random mixtures each) this
changed 31 of 288 diagnoses, from a rule that had dropped any blur no more severe than the
upscaling: the restorer 28.70 -> 30.18 dB on those (+1.1 to +3.5 dB on every real blur beside
an upscaling, -0.01 and -0.05 dB on two upscalings alone where a 0.6 px blur was kept).
Measuring the transfer costs 0.1 s, once per scale (cached).
On training-source photos with blurs at random angles (``python benchmarks/psf.py --photos 2``,
benchmarks/results/psf.md) the motion angle's error went from 18 to 2 degrees, the length's
from 4.4 to 1.5 px, the width's from 0.41 to 0.33 px, and the restorer from 27.76 to 29.39 dB
(true PSF 34.41); with noise too (where the analyzer found only 3 of 12 blurs) 26.20 -> 26.25.
On the selection photos (benchmarks/results/selection_psf.md) blur/moderate went 27.35 ->
28.34 dB, blur/severe 27.78 -> 28.43, blur + noise 25.38 -> 25.34, no other case moved. The
fit costs 0.03 s per 512 px image (median; at most 0.18).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

from .diagnosis import Diagnosis, Finding, describe_params
from .evidence import DETAIL_LIMIT, MEASURED, _centre_crop, detail_ratio, revised, white_variance
from .images import luma
from .synthesis import low_resolution_size, resize_tensor
from .taxonomy import get_type

__all__ = ["WINDOW", "ANISOTROPIC_TYPES", "PASSBAND", "welch_power", "upscaling_gain", "fit_psf",
           "measure_blur"]

WINDOW = 128        # Welch window: rings 1/128 cycles/px apart resolve the zeros of L = 20
MIN_RING = 4        # below 4/128 cycles/px the scene's layout, not its blur, sets the spectrum
SNR = 4.0           # rings whose median power is under 4x the floor carry no zeros to see
EPS = 0.02          # a sinc zero's depth in the log model: the floor and leakage fill it in
LENGTH_STEP, ANGLE_STEP, WIDTH_STEP = 0.5, 2.5, 0.1
# Damage that writes anisotropic structure of its own into the spectrum: JPEG's 8-px blocks and
# its quantisation of the DCT's axis-aligned basis (on training-source photos with blur + JPEG
# the fit read widths near 0 and motions of 0 or 20 px, and lost 0.05 dB on average), rain's
# oriented streaks. With either diagnosed the analyzer's reading stays.
ANISOTROPIC_TYPES = ("jpeg", "rain")
# An upscaling softens the image isotropically too: fitted as it is, the width took the
# resampling's softness for a Gaussian and the restorer undid it twice (held-out
# low_resolution/mild 39.39 -> 37.33 dB in the first table with the fit). Its transfer is
# taken out first, on the rings where it still passes this much of the power: beyond them,
# dividing by it would only amplify the floor.
PASSBAND = 0.1
# Beside an upscaling a narrower blur is taken for what is left of its softness: the synthesiser
# draws none. On 4 training-source photos per source, upscalings by 1.75, 2.5 and 3.4 alone
# read 0 px on 26 of 36, 0.1-1.1 on the rest; a 1 px blur beside an upscaling 0.5-1.4.
MIN_WIDTH = get_type("blur").sample_ranges["width"][0]
# Luma keeps this much of a per-channel white variance (0.299^2 + 0.587^2 + 0.114^2).
LUMA_SHARE = 0.299 ** 2 + 0.587 ** 2 + 0.114 ** 2


def welch_power(image: torch.Tensor, window: int = WINDOW) -> torch.Tensor | None:
    """Power spectrum ``[window, window]`` (FFT order) of ``image``'s luma ([3, H, W] in
    [0, 1]), averaged over half-overlapping Hann windows of its centre crop: white noise of
    variance v reads about v everywhere. None for an image smaller than one window."""
    crop = _centre_crop(image)  # the detail check's 512 crop: at most 7 x 7 windows
    if min(crop.shape[1:]) < window:
        return None
    lum = luma(crop.double())
    hann = torch.hann_window(window, periodic=True, dtype=lum.dtype)
    taper = hann[:, None] * hann[None]
    tiles = lum.unfold(0, window, window // 2).unfold(1, window, window // 2)
    tiles = tiles.reshape(-1, window, window)
    tiles = tiles - tiles.mean((-2, -1), keepdim=True)
    return (torch.fft.fft2(tiles * taper).abs() ** 2).mean(0) / (taper ** 2).sum()


class _Rings(NamedTuple):
    """The half-plane frequencies of a spectrum on the rings that carry signal."""
    fx: torch.Tensor
    fy: torch.Tensor
    ring: torch.Tensor       # index from MIN_RING
    log_power: torch.Tensor  # floor taken out
    count: int               # rings kept
    size: int                # the spectrum's side (the Welch window)


def upscaling_gain(scale: float, window: int = WINDOW) -> torch.Tensor:
    """``|T(f)|^2`` on the Welch grid of the synthesiser's upscaling by ``scale`` (antialiased
    bicubic down, bicubic up): its power transfer measured on white noise, since the operator
    is periodic rather than shift-invariant (the same Welch average as the image's)."""
    return _upscaling_gain(float(scale), window).clone()


@functools.lru_cache(maxsize=32)  # 0.1 s each, and a batch or a graph meets the same scales
def _upscaling_gain(scale: float, window: int) -> torch.Tensor:
    h, w = 4 * window, 4 * window
    noise = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64) * 0.1 + 0.5
    small = resize_tensor(noise.float(), *low_resolution_size(h, w, scale))
    out = resize_tensor(small, h, w).double()
    return welch_power(out[0], window) / welch_power(noise[0], window)


def _rings(power: torch.Tensor, floor: float, gain: torch.Tensor | None = None
           ) -> _Rings | None:
    """``power``'s frequencies on the rings above ``SNR`` times ``floor`` (and, with an
    operator's power ``gain`` to take out, where it passes at least ``PASSBAND``); None when
    fewer than four rings are."""
    n = power.shape[-1]
    f = torch.fft.fftfreq(n, dtype=power.dtype)
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    ring = (torch.sqrt(fx * fx + fy * fy) * n).round().long()
    half = (fy > 0) | ((fy == 0) & (fx > 0))  # the other half mirrors it
    top = MIN_RING - 1
    for k in range(MIN_RING, n // 2):
        on_ring = half & (ring == k)
        if float(power[on_ring].median()) <= SNR * floor:
            break
        if gain is not None and float(gain[on_ring].median()) < PASSBAND:
            break
        top = k
    if top < MIN_RING + 3:  # too few rings to tell a zero from the scene
        return None
    keep = half & (ring >= MIN_RING) & (ring <= top)
    # The floor is taken out before the log: it is what fills the zeros in.
    log_power = torch.log((power[keep] - floor).clamp(min=0.1 * floor))
    if gain is not None:
        log_power = log_power - torch.log(gain[keep])
    return _Rings(fx[keep], fy[keep], ring[keep] - MIN_RING, log_power, top - MIN_RING + 1, n)


def _ring_means(values: torch.Tensor, rings: _Rings) -> torch.Tensor:
    """The mean of ``values`` (last dimension: the kept frequencies) over each ring."""
    per_ring = torch.bincount(rings.ring, minlength=rings.count).to(values.dtype)
    sums = torch.zeros(*values.shape[:-1], rings.count, dtype=values.dtype)
    return sums.index_add_(values.dim() - 1, rings.ring, values) / per_ring


def _motion_gain(fx, fy, length: float, angle_deg) -> torch.Tensor:
    """``sinc^2(L f . u)`` for one length and a vector of angles: ``[A, N]``. The angle is
    counter-clockwise from the x axis with image rows pointing down (the synthesiser's)."""
    th = torch.deg2rad(torch.as_tensor(angle_deg, dtype=fx.dtype)).reshape(-1, 1)
    return torch.sinc(length * (fx * torch.cos(th) - fy * torch.sin(th))) ** 2


def _fit_motion(rings: _Rings) -> tuple[float, float, float]:
    """``(length, angle, misfit without motion over misfit with it)`` that best explain the
    anisotropy of the spectrum on ``rings``."""
    fx, fy, ring, log_power = rings.fx, rings.fy, rings.ring, rings.log_power
    spec = get_type("blur")
    lengths = torch.arange(0.0, spec.param("motion_length").high + 1e-9, LENGTH_STEP)
    angles = torch.arange(0.0, 180.0, ANGLE_STEP, dtype=fx.dtype)
    misfit = torch.empty(len(lengths), len(angles), dtype=fx.dtype)
    for i, length in enumerate(lengths.tolist()):
        residual = log_power - torch.log(_motion_gain(fx, fy, length, angles) + EPS)
        misfit[i] = ((residual - _ring_means(residual, rings)[:, ring]) ** 2).sum(1)
    i, j = divmod(int(misfit.argmin()), len(angles))
    gain = float(misfit[0].min() / misfit[i, j].clamp(min=1e-30))
    return float(lengths[i]), float(angles[j]), gain


def _fit_width(rings: _Rings, length: float, angle: float) -> float:
    """The Gaussian width (px) that, with the motion ``(length, angle)`` taken out, bends the
    ring levels off a power law the least-squares best."""
    fx, fy, count, n = rings.fx, rings.fy, rings.count, rings.size
    residual = rings.log_power - torch.log(_motion_gain(fx, fy, length, angle)[0] + EPS)
    level = _ring_means(residual, rings)
    r = (torch.arange(count, dtype=fx.dtype) + MIN_RING) / n
    widths = torch.arange(0.0, get_type("blur").param("width").high + 1e-9, WIDTH_STEP,
                          dtype=fx.dtype)
    # level + 4 pi^2 sigma^2 r^2 should be a line in log r: its least-squares misfit per width.
    target = level[None] + 4 * math.pi ** 2 * widths[:, None] ** 2 * r[None] ** 2
    basis = torch.stack([torch.ones_like(r), torch.log(r)], 1)
    coef = torch.linalg.lstsq(basis[None].expand(len(widths), -1, -1), target[..., None]).solution
    misfit = ((basis @ coef)[..., 0] - target).pow(2).sum(1)
    return float(widths[int(misfit.argmin())])


def fit_psf(image: torch.Tensor, white_variance: float, upscaling: float | None = None
            ) -> dict | None:
    """Blur parameters (``width``, ``motion_length``, ``motion_angle``) fitted to ``image``'s
    spectrum over the floor of a per-channel ``white_variance``, plus ``"gain"`` (the motion's
    misfit improvement); None when the image is too small or too flat to tell. With
    ``upscaling`` (a scale over 1), that upscaling's transfer is taken out of the spectrum
    first, on the rings it passes."""
    power = welch_power(image.float())
    if power is None:
        return None
    transfer = upscaling_gain(upscaling) if upscaling and upscaling > 1.0 else None
    rings = _rings(power, LUMA_SHARE * white_variance, transfer)
    if rings is None:
        return None
    if transfer is None:
        length, angle, gain = _fit_motion(rings)
        length = length if length >= 1.0 else 0.0  # the synthesiser draws no shorter segment
    else:
        length, angle, gain = 0.0, 0.0, 1.0
    width = _fit_width(rings, length, angle)
    return {"width": width, "motion_length": length, "motion_angle": angle, "gain": gain}


def measure_blur(image: torch.Tensor, diagnosis: Diagnosis) -> Diagnosis:
    """``diagnosis`` with its blur finding's parameters measured from ``image``'s spectrum
    (see the module docstring), without it when a measured upscaling accounts for all of it;
    the same object without a blur finding, with one a user set or already measured, beside
    JPEG, rain or an unmeasured low resolution, when the image is too small or flat to fit, or
    when the fitted PSF (with the upscaling) would have removed detail the input keeps."""
    blur = diagnosis.finding("blur")
    low_res = diagnosis.finding("low_resolution")
    if blur is None or blur.source in MEASURED or any(
            f.type in ANISOTROPIC_TYPES for f in diagnosis.findings):
        return diagnosis
    # Only an upscaling whose factor was measured can be taken out: the analyzer's own scale
    # is too rough, and a wrong one leaves its softness in the blur (undone twice).
    if low_res is not None and low_res.source not in MEASURED:
        return diagnosis
    floor = white_variance(diagnosis, image)  # no JPEG here: the floor is white
    scale = low_res.params["scale"] if low_res is not None else None
    fit = fit_psf(image, floor, scale)
    if fit is None:
        return diagnosis
    params = {k: fit[k] for k in get_type("blur").keys}
    measured = Finding.from_params("blur", params, blur.confidence, "evidence")
    ratio = detail_ratio(image, [measured] + ([low_res] if low_res else []), floor)
    if ratio is not None and ratio > DETAIL_LIMIT:
        return diagnosis
    findings = [measured if f is blur else f for f in diagnosis.findings]
    verdict = f"blur measured as {describe_params(measured)}"
    if low_res is not None and fit["width"] < MIN_WIDTH:
        # Nothing left once the upscaling is out: the analyzer read its softness as a blur.
        findings.remove(measured)
        verdict = "no blur beyond the upscaling's softness"
    shape = (f"the zeros of a {fit['motion_length']:.1f} px motion at "
             f"{fit['motion_angle']:.0f} degrees" if fit["motion_length"] > 0
             else "no motion streak")
    return revised(diagnosis, findings, f"The input's spectrum shows {shape} and a fall-off of "
                   f"a {fit['width']:.1f} px Gaussian: {verdict} (the analyzer had read "
                   f"{describe_params(blur)}).")
