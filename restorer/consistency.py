"""Data consistency: pull a restoration back to what the input says, through the physics the
diagnosis names.

A diagnosis is a forward model. Blur (a known PSF) and low resolution (antialiased bicubic
down and up) are linear operators ``A``; sensor noise, 8-bit rounding and JPEG act as an
additive error of known size ``sigma^2``. Given the network's restoration ``x_hat`` and the
input ``y``, the refined image is the MAP estimate with the network output as the prior mean:

    z = argmin  ||A z - y||^2 / sigma^2  +  ||z - x_hat||^2 / tau^2

(the data step of half-quadratic splitting in plug-and-play restoration: DPIR, USRNet), solved
by conjugate gradients with ``A``'s adjoint from autograd. What ``A`` passes is taken from the
input as far as the noise allows (deconvolution with an oracle-free prior); what ``A`` removes
stays as the network painted it. Without a linear step ``A`` is the identity and ``z`` is the
variance-weighted blend of input and restoration, so a network that makes a mild JPEG worse
than its input is pulled back towards the input.

Why it is needed: the all-in-one network alone cannot return a near-clean image unchanged (it
cost 3-6 dB on mild blur, JPEG and low resolution in the restoration benchmark of commit
2fc9d20, before this step), and the diagnosis already knows the physics that would stop it.

The operator is the diagnosis as it stands. Re-fitting its parameters on the taxonomy grid so
that ``A(x_hat)`` best explains ``y`` was tried and dropped: the network's output is too far
from the truth for that misfit to pick the right operator (on training-source photos it chose
"no blur" and lost 1-6 dB against the diagnosed one). So was an operator-uncertainty term
(extra variance from the analyzer's presence and parameter confidences, what a one-grid-step
error in the operator would change): on the same photos it moved single cases by -0.35 to
+0.23 dB and the mean by 0.00 dB. Haze, rain and low light act on the scene before the camera
and are not linear in it: with any of them diagnosed the restoration is left alone.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..reasoner.diagnosis import Diagnosis, Finding
from ..reasoner.synthesis import (blur_kernel, convolve_tensor, jpeg_roundtrip,
                                  low_resolution_size, quantise, resize_tensor)
from ..reasoner.taxonomy import TYPE_NAMES, get_type

__all__ = ["SCENE_TYPES", "LINEAR_TYPES", "ADDITIVE_TYPES", "PRIOR_VARIANCE", "fft_convolve",
           "linear_operator", "error_variance", "refine"]

SCENE_TYPES = ("haze", "rain", "low_light")       # before the camera, not linear: no data step
LINEAR_TYPES = ("blur", "low_resolution")         # optics and resampling: A
ADDITIVE_TYPES = ("noise", "jpeg")                # after A: part of sigma^2
assert set(SCENE_TYPES + LINEAR_TYPES + ADDITIVE_TYPES) == set(TYPE_NAMES), \
    "every taxonomy type needs a role in the data-consistency model"

QUANTISATION_VARIANCE = (1.0 / 255.0) ** 2 / 12.0  # 8-bit rounding of the input
# tau^2, the expected squared error of the network output per pixel (3e-4 = 35 dB). Chosen on
# training-source photos, never the held-out ones (benchmarks/consistency.py prints the sweep).
PRIOR_VARIANCE = 3e-4
CG_ITERATIONS = 20


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
    ops = []
    for f in sorted(findings, key=lambda f: get_type(f.type).formation_order):
        p = f.params
        if f.type == "blur":
            k = blur_kernel(p["width"], p["motion_length"], p["motion_angle"])
            if k.size > 1:
                kernel = torch.from_numpy(np.ascontiguousarray(k))
                ops.append(lambda x, kernel=kernel: fft_convolve(x, kernel))
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
    return apply


def _jpeg_variance(x: torch.Tensor, quality: float) -> float:
    """Mean squared JPEG error at ``quality``, measured by re-encoding ``x`` itself (the error
    depends on content as much as on quality)."""
    errs = []
    for img in x.detach().float().clamp(0, 1).cpu():
        a = quantise(img.permute(1, 2, 0).numpy())
        errs.append(float(np.mean((jpeg_roundtrip(a, quality) - a) ** 2)))
    return float(np.mean(errs))


def error_variance(diagnosis: Diagnosis, y: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``sigma^2``: per-pixel variance of what ``A`` does not explain (8-bit rounding, the
    diagnosed noise at the image's mean level, and the diagnosed JPEG)."""
    var = QUANTISATION_VARIANCE
    noise = diagnosis.finding("noise")
    if noise is not None:
        sigma, shot = noise.params["sigma"] / 255.0, noise.params["shot"] / 255.0
        var += sigma * sigma + shot * shot * float(y.clamp(0, 1).mean())
    jpeg = diagnosis.finding("jpeg")
    if jpeg is not None:
        var += _jpeg_variance(x_hat, jpeg.params["quality"])
    return var


def refine(x_hat: torch.Tensor, y: torch.Tensor, diagnosis: Diagnosis | None,
           prior_variance: float = PRIOR_VARIANCE,
           iterations: int = CG_ITERATIONS) -> torch.Tensor:
    """The data-consistent version of the restoration ``x_hat`` of the input ``y`` (both
    ``[B, 3, H, W]``, same size, values in [0, 1]), clamped to [0, 1]. Returns ``x_hat``
    unchanged without a diagnosis, with an empty one, or with a scene-level type in it."""
    if x_hat.shape != y.shape:
        raise ValueError(f"y: expected the shape of the restoration {tuple(x_hat.shape)}, "
                         f"got {tuple(y.shape)}")
    if diagnosis is None or not diagnosis.findings:
        return x_hat
    if any(f.type in SCENE_TYPES for f in diagnosis.findings):
        return x_hat
    dtype = x_hat.dtype
    x_hat, y = x_hat.float(), y.float()
    linear = [f for f in diagnosis.findings if f.type in LINEAR_TYPES]
    with torch.no_grad():
        lam = error_variance(diagnosis, y, x_hat) / prior_variance
    A = linear_operator(linear, y.shape[-2:])
    if A.identity:
        return ((y + lam * x_hat) / (1.0 + lam)).clamp(0, 1).to(dtype)

    # A^T comes from autograd. ComfyUI runs every node under torch.inference_mode(), where
    # autograd records nothing and inference tensors cannot be saved for backward: leave that
    # mode here and work on ordinary copies.
    with torch.inference_mode(False), torch.enable_grad():
        z = _solve(A, x_hat.clone(), y.clone(), lam, iterations)
    return z.clamp(0, 1).to(dtype)


def _solve(A, x_hat: torch.Tensor, y: torch.Tensor, lam: float, iterations: int) -> torch.Tensor:
    """Conjugate gradients on (A^T A + lam I) z = A^T y + lam x_hat, from z = x_hat."""

    def adjoint(v):
        probe = torch.zeros_like(v, requires_grad=True)
        (out,) = torch.autograd.grad(A(probe), probe, v)
        return out

    def normal(z):  # (A^T A + lam I) z
        return adjoint(A(z.detach()).detach()) + lam * z.detach()

    b = adjoint(y) + lam * x_hat
    z = x_hat
    r = b - normal(z)
    p, rs = r.clone(), (r * r).sum()
    for _ in range(iterations):
        mp = normal(p)
        curvature = (p * mp).sum()
        if not torch.isfinite(curvature) or curvature <= 1e-20 or rs <= 1e-20:
            break
        alpha = rs / curvature
        z = z + alpha * p
        r = r - alpha * mp
        rs_new = (r * r).sum()
        p = r + (rs_new / rs) * p
        rs = rs_new
    return z.detach()
