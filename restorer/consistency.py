"""Data consistency: pull a restoration back to what the input says, through the physics the
diagnosis names.

A diagnosis is a forward model. Blur (a known PSF) and low resolution (antialiased bicubic
down and up) are linear operators ``A``; sensor noise, 8-bit rounding and JPEG act as an
additive error of known size ``sigma^2``. Given the network's restoration ``x_hat`` and the
input ``y``, the refined image is the MAP estimate with the network output as the prior mean:

    z = argmin  ||A z - y||^2 / sigma^2  +  ||z - x_hat||^2 / tau^2

(the data step of half-quadratic splitting in plug-and-play restoration: DPIR, USRNet), solved
by conjugate gradients with ``A``'s adjoint from autograd (a lone blur under one weight
exactly, by one FFT of the input's mirror extension: ``_solve_fourier``). What ``A`` passes
is taken from the input as far as the noise allows (deconvolution with an oracle-free
prior); what ``A`` removes stays as the network painted it. Without a linear step ``A`` is
the identity and ``z`` is the variance-weighted blend of input and restoration, so a network
that makes a mild JPEG worse than its input is pulled back towards the input.

Why it is needed: the all-in-one network alone cannot return a near-clean image unchanged (it
cost 3-6 dB on mild blur, JPEG and low resolution in the restoration benchmark of commit
2fc9d20, before this step), and the diagnosis already knows the physics that would stop it.

The operator is the diagnosis as it stands. Re-fitting its parameters on the taxonomy grid so
that ``A(x_hat)`` best explains ``y`` was tried and dropped: the network's output is too far
from the truth for that misfit to pick the right operator (on training-source photos it chose
"no blur" and lost 1-6 dB against the diagnosed one). So was an operator-uncertainty term
(extra variance from the analyzer's presence and parameter confidences, what a one-grid-step
error in the operator would change): on the same photos it moved single cases by -0.35 to
+0.23 dB and the mean by 0.00 dB. Nor can the misfit serve as a guard that skips a wrong
operator (Morozov's discrepancy principle): on training-source photos without noise
``||A(x_hat) - y||^2`` came out 7-800 times ``sigma^2``, and 0.9-5.5 (true operator) vs
0.9-7.1 (predicted) times the identity's misfit, with no threshold between them; the step
itself lost more than 0.3 dB in only 5 of 76 cases with a linear operator.

The prior mean under a blur or a low resolution (without a pointwise map) is the input, not
the network output (``INPUT_PRIOR_FOR_OPTICS``): the network is kept as the noise filter's pilot
and for ``tau^2``, but the frequencies the operator removes stay as faint as the input holds
them instead of taking the network's painting. The shipped network paints them worse than
nothing: alone it lands below its input on mild blur (training-source photos, true diagnosis:
33.4 dB against the input's 36.6). Measured with the step as it was and with the input as the
prior mean (training-source photos, 2 per source: the three blur and low-resolution levels,
blur + noise, low resolution + noise + JPEG): true / predicted diagnosis 32.38 / 29.44 ->
32.53 / 29.46 dB (blur + noise +0.50 dB true, lone low resolution within 0.02); scikit-image's
natural photos 30.68 / 26.75 -> 30.74 / 26.77 (lone low resolution -0.02 to -0.04, the noisy
mixtures +0.2). Held out (4 photos, same cases): 36.96 / 36.57 -> 37.44 / 36.99; low
resolution mild 41.65 -> 42.51, blur mild 42.37 -> 43.20 (predicted).

Sensor noise is taken out of ``y`` before the step, not only weighed: a Wiener filter in a
sliding block-DCT (restorer/wiener.py, BM3D's second step without block matching) shrinks the
input's noise using the restoration, degraded again by ``A`` and the scene maps, as its pilot;
the step then sees the denoised input with the filter's residual variance, and a prior
variance no smaller than the two estimates' misfit (the network errs most where there is
noise). On training-source photos this lifted the noisy cases by 1.1 dB (predicted diagnosis)
and 1.4 dB (true), Gaussian noise at sigma 25 from 30.1 to 32.0 dB with the true diagnosis,
for 0.09 s per 512 x 512 image. Two more passes, each piloted by the one before
(``wiener_passes``), add about 0.6 dB (restorer/wiener.py says how they were chosen).
Running the whole step twice more (a 16 x 16 pass each time, piloted by the step's result, the
network output kept as the prior mean; commit e7f7524, reverted) was tried: on training-source
photos (42 noisy images) +0.15 dB with no image lower, sigma 25 31.30 -> 31.52 dB; on the
held-out photos (natural scenes: less of the wallpapers' large smooth areas) the eight noisy
rows moved by -0.16 to +0.04 dB (sigma 25 32.26 -> 32.24), 20 of 32 images lower; on
scikit-image's natural photos (benchmarks/heldout.py ``NATURAL``) +0.03 dB, 10 of 28 lower.

Haze and low light act on the scene before the optics and are pointwise: the synthesiser's
veil ``H(x) = t x + airlight (1 - t)`` (transmission ``t`` from an unknown depth map), then its
tone curve ``L(x) = exposure * x ** gamma``, so ``y = A(L(H(x))) + e``. With ``P = L o H`` the
step runs in ``u = P(x)``: the prior becomes ``u ~ P(x_hat)`` with the linearised variance
``tau^2 * P'(x_hat)^2`` per pixel, the same solve finds ``u`` (with per-pixel weights), and
``z = P^-1(u)``. The tone curve is the diagnosis's; the transmission is fitted locally: in each
window, the ``t`` that best maps the network output onto the (curve-inverted) input at the
diagnosed airlight, held above the floor under which a small window's darkest pixel would
come out negative (``VEIL_FLOOR_WINDOW``). So the network supplies the veil's depth, the input
supplies the scene detail behind it. Where the input is clean enough (8-bit rounding only) this
is close to the exact inverse; under heavy noise, where ``P^-1`` amplifies it (in the shadows,
behind a thick veil), it stays with the network. Rain (unknown streak layout) skips the step.

On training-source photos (``python benchmarks/consistency.py``) the low-light step lifts the
true-diagnosis PSNR from 28-30 dB to 49-58 dB, and the veil fit lifts haze by 1-3 dB; it
loses 2 dB on severe haze when the diagnosed airlight is 0.1 off. Two remedies were tried
there and not kept: an airlight-uncertainty variance (it traded that loss against the other
cases) and an airlight re-estimated from local affine fits of the input on the network output
(right for thick veils, biased low for thin ones: haze mean 24.23 vs 24.53 dB as shipped).

Two later changes to the veil (``python benchmarks/veil.py``, training-source photos, 2 per
source, the three haze levels and haze + JPEG; the natural photos as the check). The fitted
optical depth reaches only 0.59-0.71 of the true one (the shipped network leaves part of the
veil, and the fit explains only what it took away), so ``t`` is raised to a power calibrated for
the shipped weights (``depth_stretch``; restorer/engine.py). And the airlight is re-read from
the windows where the veil is thick (``thick_airlight``): the analyzer's airlight regresses to
the middle of its range (0.78-0.80 on severe haze of airlight 0.70), and the inverse magnifies
its error by (1 - t) / t. Together, mean PSNR with the predicted / true diagnosis: training
photos 22.65 / 24.50 -> 23.27 / 25.65 dB (11 / 5 of 24 images lower, down to -3.7 / -3.9 dB),
natural photos 19.96 / 21.60 -> 21.93 / 24.02 (1 / 1 of 16 lower). A clean photo given a false
haze finding loses 1.4 dB more on average, up to 2.2 (training photos; natural: 1.3, up to 1.6).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..reasoner.diagnosis import Diagnosis, Finding
from ..reasoner.synthesis import (QUANTISATION_VARIANCE, blur_kernel, convolve_tensor,
                                  jpeg_roundtrip, low_resolution_size, noise_variance, quantise,
                                  resize_tensor, tone_curve)
from ..reasoner.taxonomy import TYPE_NAMES, get_type
from .wiener import wiener_passes

__all__ = ["SCENE_TYPES", "POINTWISE_TYPES", "LINEAR_TYPES", "ADDITIVE_TYPES",
           "PRIOR_VARIANCE", "fft_convolve", "linear_operator", "ToneCurve", "Veil",
           "SceneMap", "scene_veil", "veil_radius", "error_variance", "denoise_observation",
           "has_data_step", "ignores_restoration", "refine"]

SCENE_TYPES = ("rain",)                           # unknown streak layout: no data step
POINTWISE_TYPES = ("haze", "low_light")           # before the optics, invertible per pixel: P
LINEAR_TYPES = ("blur", "low_resolution")         # optics and resampling: A
ADDITIVE_TYPES = ("noise", "jpeg")                # after A: part of sigma^2
assert set(SCENE_TYPES + POINTWISE_TYPES + LINEAR_TYPES + ADDITIVE_TYPES) == set(TYPE_NAMES), \
    "every taxonomy type needs a role in the data-consistency model"

# tau^2, the expected squared error of the network output per pixel (3e-4 = 35 dB). Chosen on
# training-source photos, never the held-out ones (benchmarks/consistency.py prints the sweep).
PRIOR_VARIANCE = 3e-4
CG_ITERATIONS = 20
# With a blur or a low resolution and no pointwise map, the prior mean is the (denoised) input,
# not the network output: the network stays the denoising pilot and sets tau^2, but the
# frequencies the operator removes come out as the input holds them rather than as the
# network painted them (see the module docstring).
INPUT_PRIOR_FOR_OPTICS = True
# Where L is nearly flat (deep shadows under a strong gamma) the prior weight 1 / L'^2 explodes;
# above this ratio to the data weight the pixel simply keeps the network's value.
MAX_PRIOR_WEIGHT = 1e6
# Half-width of the window the veil's transmission is fitted in, as a fraction of the image's
# shorter side (the whole image's, also when it is restored in tiles): 48 px at 512. The depth
# a veil follows is smooth, the scene detail the fit must not absorb is not (16 vs 48 px
# compared on training photos: 48 by 0.2-0.6 dB).
VEIL_WINDOW = 48 / 512
# Where the network output sits at the airlight the window says nothing about t: the fit then
# leans on the transmission at mid depth, exp(-beta / 2), with this weight.
VEIL_RIDGE = 1e-3
MIN_TRANSMISSION = 0.05  # exp(-3): the taxonomy's thickest veil at the farthest depth
# The veil's floor: no pixel may come out negative, so t >= 1 - y / airlight at every pixel, and
# over a window this small, where the transmission is about constant, t is at least that bound
# at the window's darkest pixel. Training-source photos (2 per source, the three haze levels,
# predicted / true diagnosis): the fit alone 22.34 / 24.80 dB, with the floor over 15 px 22.54 /
# 24.89 and no image lower by more than 0.002 dB; 31 px 22.68 / 24.94 with one image -0.18; 61 px
# 22.81 / 24.85 with 8 of 36 lower, down to -1.3 (there t is no longer constant).
VEIL_FLOOR_WINDOW = 15
# The airlight, re-read from the windows where the veil is thick: there veiled ~ s x_hat + c is
# affine in the network output with a small slope s (about t, whatever veil the network left
# with the same airlight) and c = a (1 - s). Where it is thin, an error in the fitted slope
# biases the read low (by t (1 - error) (a - x)), so it takes only windows with s under
# THICK_SLOPE, and only when they cover THICK_FRACTION of the image; else the diagnosis's stays.
# The analyzer's airlight regresses to the middle of its range (0.78-0.80 on severe haze whose
# airlight is 0.70), and the veil's inverse magnifies that error by (1 - t) / t.
THICK_SLOPE = 0.15
THICK_FRACTION = 0.05
# The Wiener filter's error estimate (mean gain x noise variance) is scaled by this before it
# weighs the denoised input against the restoration: 0.3 beat 0 and 1 on training-source
# photos (mean over the noisy cases, predicted and true diagnosis).
WIENER_RESIDUAL = 0.3
# With JPEG diagnosed and no noise, the same filter takes JPEG's error out, its mean variance
# (measured by re-encoding the pilot) scaled by this as a white-noise stand-in: the error is
# not white but sits in each 8x8 block's higher frequencies, where the filter shrinks. On
# training-source photos (2 per source, the three JPEG levels, mean PSNR) the scale 1 / 4 / 8 /
# 16 gave +0.20 / +0.33 / +0.36 / +0.30 dB over no filter with the predicted diagnosis, and 4 /
# 8 / 16 gave +0.38 / +0.44 / +0.43 dB with the true one.
JPEG_AS_NOISE = 8.0
# A lone blur is solved exactly in the Fourier domain of the input's mirror extension, where
# the mirrored copies stand for a scene blurred by the mirrored PSF: a Gaussian or an
# axis-aligned motion is its own mirror image, an oblique motion is not, and there the solve
# contradicts the data near the borders. On training-source photos, against 60 CG iterations:
# kernels up to this L1 distance from their mirror images (the kernel sums to 1) came within
# 0.03 dB; of six motions of 12-19 px at 12-106 degrees (distances 1.03-1.74), four lost
# 0.2-0.7 dB. Conjugate gradients keep those.
MIRROR_ASYMMETRY = 0.5


def fft_convolve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``reasoner.synthesis.convolve_tensor`` (same size, reflect padding) through the FFT: a
    motion PSF reaches 45 x 45 taps, where direct convolution costs seconds per call."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    if ph >= x.shape[-2] or pw >= x.shape[-1]:  # reflect padding needs a larger image
        return convolve_tensor(x, kernel)
    xp = torch.nn.functional.pad(x, (pw, pw, ph, ph), mode="reflect")
    size = xp.shape[-2:]
    spectrum = torch.fft.rfft2(torch.flip(kernel.to(xp), (0, 1)), s=size)
    full = torch.fft.irfft2(torch.fft.rfft2(xp) * spectrum, s=size)
    # Circular convolution of the padded image: the valid part starts at the kernel's end.
    return full[..., kh - 1:kh - 1 + x.shape[-2], kw - 1:kw - 1 + x.shape[-1]]


def linear_operator(findings: Sequence[Finding], shape) -> Callable[[torch.Tensor], torch.Tensor]:
    """``A`` for the linear findings, applied in image-formation order (the synthesiser's)."""
    h, w = shape
    ops, kernels = [], []
    for f in sorted(findings, key=lambda f: get_type(f.type).formation_order):
        p = f.params
        if f.type == "blur":
            k = blur_kernel(p["width"], p["motion_length"], p["motion_angle"])
            if k.size > 1:
                kernel = torch.from_numpy(np.ascontiguousarray(k))
                ops.append(lambda x, kernel=kernel: fft_convolve(x, kernel))
                kernels.append(kernel)
        elif f.type == "low_resolution" and p["scale"] > 1.0:
            small = low_resolution_size(h, w, p["scale"])
            ops.append(lambda x, small=small: resize_tensor(resize_tensor(x, *small), h, w))
        elif f.type not in LINEAR_TYPES:
            raise ValueError(f"findings: {f.type!r} is not a linear degradation; expected one "
                             f"of {list(LINEAR_TYPES)}")

    def apply(x: torch.Tensor) -> torch.Tensor:
        for op in ops:
            x = op(x)
        return x

    apply.identity = not ops
    # A lone blur is a convolution, which the Fourier transform diagonalises (``_solve_fourier``).
    apply.kernel = kernels[0] if len(ops) == 1 and kernels else None
    return apply


class ToneCurve:
    """``L`` of a low-light finding (identity without one): forward, slope, inverse."""

    def __init__(self, finding: Finding | None = None):
        p = finding.params if finding is not None else {"exposure": 1.0, "gamma": 1.0}
        self.exposure, self.gamma = float(p["exposure"]), float(p["gamma"])
        self.identity = finding is None or (self.exposure == 1.0 and self.gamma == 1.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return tone_curve(x, self.exposure, self.gamma)

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        # dL/dx, from half an 8-bit step up: x ** (gamma - 1) is 0 (or infinite) at black.
        return self.exposure * self.gamma * x.clamp(0.5 / 255.0, 1.0) ** (self.gamma - 1.0)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        return (u.clamp(min=0.0) / self.exposure) ** (1.0 / self.gamma)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2 radius + 1)^2 window, reflect-padded, in two 1-D passes of running sums
    (float64, so the differences keep float32's precision): the cost does not grow with the
    window, which follows the image's size (``VEIL_WINDOW``: 192 px at 2048, where a pooling
    pass took 5.3 s against 0.35 s)."""
    radius = max(0, min(radius, x.shape[-2] - 1, x.shape[-1] - 1))
    k = 2 * radius + 1

    def along(v: torch.Tensor, dim: int) -> torch.Tensor:
        pad = (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius)
        sums = torch.cumsum(F.pad(v, pad, mode="reflect").double(), dim)
        sums = F.pad(sums, (1, 0, 0, 0) if dim == -1 else (0, 0, 1, 0))
        n = v.shape[dim]
        return ((sums.narrow(dim, k, n) - sums.narrow(dim, 0, n)) / k).to(v.dtype)

    return along(along(x, -1), -2)


def thick_airlight(veiled: torch.Tensor, x_hat: torch.Tensor, radius: int) -> float | None:
    """The airlight read off the windows of half-width ``radius`` where ``veiled`` is an affine
    function of ``x_hat`` with a slope under ``THICK_SLOPE`` (least squares of the intercepts
    ``c = a (1 - s)``), or None when those windows cover less than ``THICK_FRACTION``."""
    def mean(v):
        return box_mean(v.sum(1, keepdim=True), radius) / v.shape[1]
    my, mx = mean(veiled), mean(x_hat)
    var = mean(x_hat * x_hat) - mx * mx
    s = (mean(veiled * x_hat) - my * mx) / var.clamp(min=1e-6)
    thick = (s >= 0) & (s < THICK_SLOPE) & (var > 1e-4)  # a flat window has no slope to read
    if thick.float().mean() < THICK_FRACTION:
        return None
    s, c = s[thick], (my - s * mx)[thick]
    return float((c * (1 - s)).sum() / ((1 - s) ** 2).sum())


class Veil:
    """``H(x) = t x + a (1 - t)`` of a haze finding, with airlight ``a`` and a per-pixel
    transmission ``t``: fitted by :meth:`fit`, or handed over, as a tile's crop of the veil
    the whole image was fitted with (``scene_veil``)."""

    def __init__(self, airlight: float, t: torch.Tensor, floor: torch.Tensor | None = None):
        self.airlight, self.t, self.floor = airlight, t, floor

    @classmethod
    def fit(cls, finding: Finding, veiled: torch.Tensor, x_hat: torch.Tensor,
            radius: int | None = None, depth_stretch: float = 1.0) -> "Veil":
        """Airlight from the diagnosis, or re-read from the input where the veil is thick
        (``thick_airlight``); ``t`` fitted so that ``H(x_hat)`` best explains ``veiled``, the
        input with everything after the veil undone as far as it is pointwise, its optical
        depth scaled by ``depth_stretch`` (a network that leaves part of the veil pushes the
        fit up: the shipped restorer's calibration is in restorer/engine.py), and held above
        the floor under which the inverse would turn the darkest pixels negative
        (``VEIL_FLOOR_WINDOW``: a fit that dips under it crushes those pixels to black)."""
        if radius is None:
            radius = veil_radius(veiled.shape[-2:])
        a = float(finding.params["airlight"])
        if finding.source != "user":  # a user's airlight is an instruction, not a guess
            read = thick_airlight(veiled, x_hat, radius)
            a = a if read is None else float(get_type("haze").param("airlight").clip(read))
        t_mid = math.exp(-float(finding.params["beta"]) / 2)
        # Ridge least squares per window, over its pixels and colours:
        # (veiled - a) ~ t (x_hat - a), t pulled towards t_mid where x_hat - a is flat.
        dy, dx = veiled - a, x_hat - a
        num = box_mean((dy * dx).sum(1, keepdim=True), radius)
        den = box_mean((dx * dx).sum(1, keepdim=True), radius)
        t = (num + VEIL_RIDGE * t_mid) / (den + VEIL_RIDGE)
        k = VEIL_FLOOR_WINDOW
        darkest = -F.max_pool2d(-veiled.amin(1, keepdim=True), k, stride=1, padding=k // 2)
        floor = 1.0 - darkest / max(a, 1e-3)
        t = t.clamp(MIN_TRANSMISSION, 1.0) ** depth_stretch
        return cls(a, torch.maximum(t, floor).clamp(MIN_TRANSMISSION, 1.0), floor)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.t * x + self.airlight * (1.0 - self.t)

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        return self.t.expand_as(x)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        return (u - self.airlight * (1.0 - self.t)) / self.t


def veil_radius(size: Sequence[int]) -> int:
    """The veil fit's window half-width for an image of ``size`` (H, W)."""
    return max(2, round(VEIL_WINDOW * min(size)))


def scene_veil(diagnosis: Diagnosis, y: torch.Tensor, x_hat: torch.Tensor,
               depth_stretch: float = 1.0) -> Veil | None:
    """The diagnosis's veil fitted to the input ``y`` and the restoration ``x_hat`` (None
    without haze). Fitted on the whole image and cropped per tile (``refine``'s ``veil``), it
    makes the tiles undo one veil: fitted per tile, each re-read its own airlight and fitted
    windows a fraction of the *tile*'s side, and a 768-px image lost 0.35 dB to 512-px tiles
    (training-source photos, true diagnosis; 0.21 dB on the natural photos in 256-px tiles)."""
    haze = diagnosis.finding("haze")
    if haze is None:
        return None
    curve = ToneCurve(diagnosis.finding("low_light"))
    veiled = y if curve.identity else curve.inverse(y).clamp(0, 1)
    return Veil.fit(haze, veiled, x_hat.clamp(0, 1), depth_stretch=depth_stretch)


class SceneMap:
    """``P``: the pointwise findings composed in formation order (veil, then tone curve).
    ``veil``: the haze finding's, fitted already (``scene_veil``); None fits it here."""

    def __init__(self, diagnosis: Diagnosis, y: torch.Tensor, x_hat: torch.Tensor,
                 depth_stretch: float = 1.0, veil: Veil | None = None):
        curve = ToneCurve(diagnosis.finding("low_light"))
        self.maps = [] if curve.identity else [curve]
        if veil is None:
            veil = scene_veil(diagnosis, y, x_hat, depth_stretch)
        if veil is not None:
            self.maps.insert(0, veil)
        self.identity = not self.maps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.maps:
            x = m(x)
        return x

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.ones_like(x)
        for m in self.maps:  # chain rule along the formation order
            d, x = d * m.slope(x), m(x)
        return d

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        for m in reversed(self.maps):
            u = m.inverse(u)
        return u


def _jpeg_variance(x: torch.Tensor, quality: float) -> float:
    """Mean squared JPEG error at ``quality``, measured by re-encoding ``x`` itself (the error
    depends on content as much as on quality)."""
    errs = []
    for img in x.detach().float().clamp(0, 1).cpu():
        a = quantise(img.permute(1, 2, 0).numpy())
        errs.append(float(np.mean((jpeg_roundtrip(a, quality) - a) ** 2)))
    return float(np.mean(errs))


def error_variance(diagnosis: Diagnosis, y: torch.Tensor, x_hat: torch.Tensor,
                   noise: bool = True) -> float:
    """``sigma^2``: per-pixel variance of what ``A`` does not explain (8-bit rounding, the
    diagnosed noise at the image's mean level unless ``noise`` is False, and the diagnosed
    JPEG, measured on ``x_hat``: pass the network output through the scene's pointwise maps
    first, JPEG saw the veiled, darkened image)."""
    var = QUANTISATION_VARIANCE
    finding = diagnosis.finding("noise")
    if finding is not None and noise:
        var += float(noise_variance(finding.params, y.mean()))
    jpeg = diagnosis.finding("jpeg")
    if jpeg is not None:
        var += _jpeg_variance(x_hat, jpeg.params["quality"])
    return var


def denoise_observation(diagnosis: Diagnosis, y: torch.Tensor, pilot: torch.Tensor
                        ) -> tuple[torch.Tensor, float | None]:
    """The input without its diagnosed sensor noise (or, without noise, its JPEG error: see
    ``JPEG_AS_NOISE``), and the variance left of it: a Wiener filter (restorer/wiener.py)
    guided by ``pilot``, the restoration degraded again by everything the diagnosis places
    before the noise (what the camera recorded before its noise, as far as the network
    knows). ``(y, None)`` with neither finding."""
    noise, jpeg = diagnosis.finding("noise"), diagnosis.finding("jpeg")
    if noise is not None:
        variance = noise_variance(noise.params, pilot.mean(1, keepdim=True))
    elif jpeg is not None:
        variance = JPEG_AS_NOISE * _jpeg_variance(pilot, jpeg.params["quality"])
    else:
        return y, None
    variance = variance + QUANTISATION_VARIANCE
    denoised, residual = wiener_passes(y, pilot, variance)
    return denoised, residual * WIENER_RESIDUAL


def has_data_step(diagnosis: Diagnosis | None) -> bool:
    """Whether ``refine`` changes anything under ``diagnosis``: not without one, with an empty
    one, or with rain in it (its streak layout is unknown)."""
    return (diagnosis is not None and bool(diagnosis.findings)
            and not any(f.type in SCENE_TYPES for f in diagnosis.findings))


def ignores_restoration(diagnosis: Diagnosis | None, shape: Sequence[int]) -> bool:
    """Whether ``refine``'s result under ``diagnosis`` for an H x W (``shape``) image does not
    depend on ``x_hat`` at all: a blur or a low resolution alone, where the prior mean is the
    input (``INPUT_PRIOR_FOR_OPTICS``) and there is no noise or JPEG for the network output to
    pilot the filter of. A restorer need not run its network then."""
    return (INPUT_PRIOR_FOR_OPTICS and has_data_step(diagnosis)
            and all(f.type in LINEAR_TYPES for f in diagnosis.findings)
            and not linear_operator(diagnosis.findings, shape).identity)


def refine(x_hat: torch.Tensor, y: torch.Tensor, diagnosis: Diagnosis | None,
           prior_variance: float = PRIOR_VARIANCE,
           iterations: int = CG_ITERATIONS, denoise: bool = True,
           depth_stretch: float = 1.0, veil: Veil | None = None) -> torch.Tensor:
    """The data-consistent version of the restoration ``x_hat`` of the input ``y`` (both
    ``[B, 3, H, W]``, same size, values in [0, 1]), clamped to [0, 1]. Returns ``x_hat``
    unchanged without a diagnosis, with an empty one, or with rain in it. ``iterations``: of
    conjugate gradients, where the solve needs them (not for a lone blur that
    ``_fits_fourier`` admits, under one weight). ``denoise``: with a noise (or JPEG) finding,
    first take it out of ``y`` by the pilot-guided Wiener filter. ``depth_stretch``: the power
    the veil's fitted transmission is raised to, the calibration of the network that made
    ``x_hat`` (1: it leaves no veil). ``veil``: with a haze finding, the veil already fitted on
    the whole image (``scene_veil``), its ``t`` cropped to this tile; None fits it here."""
    if x_hat.shape != y.shape:
        raise ValueError(f"y: expected the shape of the restoration {tuple(x_hat.shape)}, "
                         f"got {tuple(y.shape)}")
    if not has_data_step(diagnosis):
        return x_hat
    dtype = x_hat.dtype
    x_hat, y = x_hat.float(), y.float()
    linear = [f for f in diagnosis.findings if f.type in LINEAR_TYPES]
    with torch.no_grad():
        # Work in u = P(x): the prior mean is P(x_hat), its variance tau^2 P'(x_hat)^2.
        scene = SceneMap(diagnosis, y, x_hat, depth_stretch, veil)
        u_hat = x_hat
        if not scene.identity:
            clamped = x_hat.clamp(0, 1)
            u_hat, slope = scene(clamped), scene.slope(clamped)
    A = linear_operator(linear, y.shape[-2:])
    with torch.no_grad():
        left = None
        if denoise and any(diagnosis.finding(t) is not None for t in ("noise", "jpeg")):
            pilot = A(u_hat)  # only here: with blur or resolution it is a full convolution
            y, left = denoise_observation(diagnosis, y, pilot)
            # Noise is where the network errs most (28-30 dB against the 35 dB tau^2 assumes):
            # the misfit of the two estimates of the noise-free input bounds its error.
            prior_variance = max(prior_variance, float(((y - pilot) ** 2).mean()))
        lam = error_variance(diagnosis, y, u_hat, noise=left is None) + (left or 0.0)
        lam = lam / prior_variance
        if not scene.identity:  # per-pixel weights; without P one number does
            lam = (lam / slope ** 2).clamp(max=MAX_PRIOR_WEIGHT)
        if INPUT_PRIOR_FOR_OPTICS and not A.identity and scene.identity:
            u_hat = y  # what the operator removes stays removed (see INPUT_PRIOR_FOR_OPTICS)
    if A.identity:
        u = (y + lam * u_hat) / (1.0 + lam)
    elif A.kernel is not None and not torch.is_tensor(lam) and _fits_fourier(A.kernel, y):
        u = _solve_fourier(A.kernel, u_hat, y, lam)
    else:
        # A^T comes from autograd. ComfyUI runs every node under torch.inference_mode(), where
        # autograd records nothing and inference tensors cannot be saved for backward: leave
        # that mode here and work on ordinary copies.
        with torch.inference_mode(False), torch.enable_grad():
            lam = lam.clone() if torch.is_tensor(lam) else lam
            u = _solve(A, u_hat.clone(), y.clone(), lam, iterations)
    return scene.inverse(u).clamp(0, 1).to(dtype)  # the identity without P


def _fits_fourier(kernel: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether the Fourier solve suits this blur of ``y``: the kernel fits in one period of the
    mirror extension (``_mirror``), and is near enough to its own mirror images, which is what
    the extension's mirrored copies of ``y`` were blurred by (see ``MIRROR_ASYMMETRY``)."""
    if any(k > 2 * n - 2 for k, n in zip(kernel.shape, y.shape[-2:])):
        return False
    asymmetry = max(float((kernel - kernel.flip(d)).abs().sum()) for d in (0, 1))
    return asymmetry <= MIRROR_ASYMMETRY * float(kernel.abs().sum())


def _mirror(x: torch.Tensor) -> torch.Tensor:
    """``x`` ([..., H, W]) extended to the period 2H-2 x 2W-2 that reflect padding implies: a
    circular convolution of this is ``fft_convolve`` of ``x`` (for kernels under H and W)."""
    x = torch.cat([x, x.flip(-1)[..., 1:-1]], -1)
    return torch.cat([x, x.flip(-2)[..., 1:-1, :]], -2)


def _solve_fourier(kernel: torch.Tensor, x_hat: torch.Tensor, y: torch.Tensor, lam: float
                   ) -> torch.Tensor:
    """The exact solution of (A^T A + lam) z = A^T y + lam x_hat for a lone blur ``A``, in one
    FFT: on the mirror extension A is circulant, so per frequency

        Z = (conj(K) Y + lam X_hat) / (|K|^2 + lam).

    CG needs many iterations for the frequencies a blur nearly removes: 20 took 2-3 s of a
    512 x 512 restoration and fell 0.1-0.2 dB short of 60. The extension also settles the
    border, where the reflect-padded operator's adjoint folds back (see ``MIRROR_ASYMMETRY``
    for the PSFs it does not suit). On training-source photos (2 per source: the three blur
    levels, blur + noise, blur + JPEG and three random PSFs, predicted and true diagnosis; 77
    restorations) it came within 0.03 dB of 60 iterations wherever it applied (blur/moderate
    33.77 -> 33.92 dB predicted, 34.29 -> 34.44 true), the mean rose 32.16 -> 32.19 dB over
    20 iterations, and the data step took 0.8 s instead of 2.6 (mean over all 77)."""
    h, w = y.shape[-2:]
    size = (2 * h - 2, 2 * w - 2)
    kh, kw = kernel.shape
    # fft_convolve correlates with the kernel: convolve with it flipped, centred on the origin.
    padded = torch.zeros(size, dtype=y.dtype, device=y.device)
    padded[:kh, :kw] = torch.flip(kernel.to(y), (0, 1))
    k = torch.fft.rfft2(torch.roll(padded, (-(kh // 2), -(kw // 2)), (0, 1)))
    num = k.conj() * torch.fft.rfft2(_mirror(y)) + lam * torch.fft.rfft2(_mirror(x_hat))
    z = torch.fft.irfft2(num / (k.abs() ** 2 + lam), s=size)
    return z[..., :h, :w]


def _solve(A, x_hat: torch.Tensor, y: torch.Tensor, lam, iterations: int) -> torch.Tensor:
    """Conjugate gradients on (A^T A + diag(lam)) z = A^T y + lam x_hat, from z = x_hat; ``lam``
    a number or a per-pixel tensor. Preconditioned by 1 / (1 + lam) (A's blur and resampling
    keep the diagonal of A^T A near 1): with a number that is plain CG, with the pointwise maps'
    per-pixel weights spanning six decades it keeps 20 iterations enough."""

    def adjoint(v):
        probe = torch.zeros_like(v, requires_grad=True)
        (out,) = torch.autograd.grad(A(probe), probe, v)
        return out

    def normal(z):  # (A^T A + lam I) z
        return adjoint(A(z.detach()).detach()) + lam * z.detach()

    precondition = 1.0 / (1.0 + lam)
    b = adjoint(y) + lam * x_hat
    z = x_hat
    r = b - normal(z)
    s = precondition * r
    p, rs = s.clone(), (r * s).sum()
    for _ in range(iterations):
        mp = normal(p)
        curvature = (p * mp).sum()
        if not torch.isfinite(curvature) or curvature <= 1e-20 or rs <= 1e-20:
            break
        alpha = rs / curvature
        z = z + alpha * p
        r = r - alpha * mp
        s = precondition * r
        rs_new = (r * s).sum()
        p = s + (rs_new / rs) * p
        rs = rs_new
    return z.detach()
