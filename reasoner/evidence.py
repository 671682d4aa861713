"""Evidence from the input itself that bounds the analyzer's blur and low-resolution findings.

Blur and low resolution remove detail. Past the frequencies where the diagnosed operator's
power transfer ``|H|^2`` falls below ``STOPBAND``, an image that really went through it holds
almost nothing but what 8-bit rounding adds back. If the input holds more there, the
diagnosis is stronger than the image allows: its detail could not have survived that
operator. The check then pulls the blur and low-resolution parameters towards "none" (one
factor for all of them, by bisection) until the input fits. It cannot see a Gaussian blur
under 0.84 px or a scale near 1 (their transfer never falls that low below Nyquist): when only
such an operator fits, the findings are dropped, as is one left below ``DROP_BELOW``.

Why: an overestimated blur is the costliest analyzer error after the scene-wide ones. The
data step deconvolves with the diagnosed PSF, and the network is conditioned on it: on two
held-out photos a mild blur read as 0.63 / 0.89 turned 33-43 dB inputs into 22-28 dB
restorations (2026-11-23, ``Restorer.restore`` with the data step).

The statistic, ``detail_ratio``: the input luma's power spectrum (Hann-windowed centre crop)
averaged over the stopband, over what the diagnosed additive errors put there: the variance
of the white ones (8-bit rounding, the diagnosed noise) plus, with JPEG diagnosed, the
stopband power of the error that JPEG at that quality adds to the image once filtered by the
operator (simulated on the input). On training-source photos (the benchmark's cases on 2
photos per training source) the true operator gave 0.35-2.9 without noise, 0.37-0.48 with it
(0.47-0.63 over the analyzer's noise estimate) and 0.20-0.32 with noise and JPEG; the
analyzer's overestimates gave 5.7 to 860 (44-136 for a false severe blur on a JPEG), so
``DETAIL_LIMIT`` is 4. Rain streaks add detail of an unknown layout, so the check leaves
diagnoses with rain alone; it never changes a user's finding, nor a scale the resampling trace
measured (``MEASURED``): with one, only the other findings are pulled.

The Severity Score applies the same revision to its soft per-type scores
(``bound_severities``), so Diagnose and Severity Score never disagree about how blurred an
image is. On the analyzer benchmark's held-out images this lifted the Spearman correlation of
the overall score with the true severity from 0.826 to 0.841 (``benchmarks/analyzer.py``,
2026-11-23). Also checking the blur and low-resolution estimates that stay below the presence
threshold scored 0.845-0.848 against 0.855 on training-source photos, so the check stays on
what Diagnose reports. Since the resampling trace (reasoner/resampling.py) it takes that
revision too (a low resolution the trace added reads its severity times its confidence):
0.855 -> 0.862 on the same training-source photos, 0.841 -> 0.840 on the held-out ones
(chosen for the two nodes' agreement; as a ranker it is a wash).
"""

from __future__ import annotations

import torch

from .diagnosis import Diagnosis, Finding, ReasoningStep, describe_params
from .images import luma
from .synthesis import (QUANTISATION_VARIANCE, blur_kernel, jpeg_roundtrip, low_resolution_size,
                        noise_variance, resize_tensor)
from .taxonomy import TYPE_NAMES, get_type

__all__ = ["BOUNDED_TYPES", "DETAIL_LIMIT", "white_variance", "error_floor", "detail_ratio",
           "bound_by_detail", "bound_severities", "revised_reasoning"]

BOUNDED_TYPES = ("blur", "low_resolution")
MEASURED = ("user", "evidence")  # findings the check never changes: set by a user or measured
ADDS_DETAIL = ("rain",)  # streaks add detail of an unknown spectrum: no check
STOPBAND = 1e-3       # |H|^2 below this: the operator passes 0.1 % of the power
DETAIL_LIMIT = 4.0    # training-source photos: true operators 0.20-2.9, overestimates >= 5.7
DROP_BELOW = 0.05     # severity left after bounding under which the finding goes
CROP = 512            # the spectrum of a centre crop: the operators are shift-invariant
BISECTIONS = 8


def _luma_power(image: torch.Tensor) -> torch.Tensor:
    """Power spectrum of the Hann-windowed luma of ``image`` ([3, H, W]): white noise of
    variance v comes out near v at every frequency."""
    lum = luma(image).double()
    h, w = lum.shape
    win = (torch.hann_window(h, periodic=False, dtype=lum.dtype)[:, None]
           * torch.hann_window(w, periodic=False, dtype=lum.dtype)[None])
    spectrum = torch.fft.rfft2((lum - lum.mean()) * win)
    return spectrum.abs() ** 2 / (win ** 2).sum()


def _transfer(findings, h: int, w: int) -> torch.Tensor:
    """``|H|`` on the rfft2 grid of an h x w image for the blur and low-resolution findings
    (the synthesiser's operators: its PSF, its antialiased bicubic down and up). The PSFs are
    symmetric about their centre, so ``|H|`` is the same filter without its shift."""
    gain = torch.ones(h, w // 2 + 1, dtype=torch.float64)
    for f in findings:
        p = f.params
        if f.type == "blur":
            k = torch.from_numpy(blur_kernel(p["width"], p["motion_length"],
                                             p["motion_angle"])).double()
            gain = gain * torch.fft.rfft2(k, s=(h, w)).abs()
        elif f.type == "low_resolution" and p["scale"] > 1.0:
            impulse = torch.zeros(1, 1, h, w)
            impulse[..., h // 2, w // 2] = 1.0
            response = resize_tensor(resize_tensor(impulse, *low_resolution_size(h, w, p["scale"])),
                                     h, w)[0, 0].double()
            gain = gain * torch.fft.rfft2(response).abs()
    return gain


def _jpeg_power(crop: torch.Tensor, gain: torch.Tensor, quality: float) -> torch.Tensor:
    """Luma power spectrum of the error JPEG at ``quality`` adds to ``crop`` once it has gone
    through the operator: blocking and ringing land in the stopband too, so a blurred JPEG
    holds more there than rounding alone."""
    filtered = torch.fft.irfft2(torch.fft.rfft2(crop.double()) * gain, s=crop.shape[-2:])
    clean = filtered.clamp(0, 1).float().permute(1, 2, 0).numpy()
    error = torch.from_numpy(jpeg_roundtrip(clean, quality) - clean).permute(2, 0, 1)
    return _luma_power(error)


def error_floor(diagnosis: Diagnosis, image: torch.Tensor) -> tuple[float, float | None]:
    """What the diagnosis says lies under the image's detail: the white variance and the
    diagnosed JPEG quality (None without JPEG), as :func:`detail_ratio` takes them."""
    jpeg = diagnosis.finding("jpeg")
    return white_variance(diagnosis, image), (jpeg.params["quality"] if jpeg is not None else None)


def white_variance(diagnosis: Diagnosis | None, image: torch.Tensor) -> float:
    """Per-channel variance of the white additive error: 8-bit rounding plus the diagnosed
    sensor noise at the image's mean level (the noise model of reasoner/synthesis.py)."""
    var = QUANTISATION_VARIANCE
    noise = diagnosis.finding("noise") if diagnosis is not None else None
    if noise is not None:
        var += float(noise_variance(noise.params, image.clamp(0, 1).mean().double()))
    return var


def _centre_crop(image: torch.Tensor) -> torch.Tensor:
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected [3, H, W], got {list(image.shape)}")
    _, h, w = image.shape
    top, left = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
    return image[:, top:top + CROP, left:left + CROP].float()


def _ratio(crop: torch.Tensor, power: torch.Tensor, findings, floor: float,
           jpeg_quality: float | None) -> float | None:
    """:func:`detail_ratio` of ``crop`` whose luma power spectrum ``power`` is already known
    (the bisection asks about one image many times)."""
    gain = _transfer(findings, *crop.shape[1:])
    stop = gain ** 2 < STOPBAND
    stop[0, 0] = False
    if not bool(stop.any()):
        return None
    if jpeg_quality is not None:
        floor = floor + float(_jpeg_power(crop, gain, jpeg_quality)[stop].mean())
    return float(power[stop].mean() / floor)


def detail_ratio(image: torch.Tensor, findings, floor: float = QUANTISATION_VARIANCE,
                 jpeg_quality: float | None = None) -> float | None:
    """Mean power of ``image``'s luma where the findings' operator passes less than
    ``STOPBAND``, over ``floor`` (the white error's per-channel variance: luma keeps 0.45 of
    it, so a perfect fit reads about 0.45) plus, with ``jpeg_quality``, the mean power there of
    the error that JPEG adds to the filtered image; None where the operator passes more
    everywhere below Nyquist (a Gaussian blur under 0.84 px, a scale near 1): untestable."""
    crop = _centre_crop(image)
    return _ratio(crop, _luma_power(crop), findings, floor, jpeg_quality)


def _scaled(f: Finding, a: float) -> Finding:
    """``f`` with its parameters moved a fraction ``a`` of the way from "none" (a = 1: as is);
    the motion direction stays."""
    identity = get_type(f.type).identity_params()
    params = {k: v if k == "motion_angle" else identity[k] + a * (v - identity[k])
              for k, v in f.params.items()}
    return Finding.from_params(f.type, params, f.confidence, f.source, f.param_confidence)


def revised_reasoning(before: list, rebuilt: list, revision: ReasoningStep) -> list:
    """The chain of thought as it was (the observation, what was detected, a VLM's causes),
    the revision right after what was detected, and severity and plan as they now stand."""
    if not before:
        before = rebuilt
    fresh = {step.stage: step for step in rebuilt if step.stage in ("severity", "plan")}
    steps, placed = [], False
    for step in before:
        if step.stage in fresh:
            step = fresh.pop(step.stage)
        steps.append(step)
        if step.stage == "degradations" and not placed:
            steps.append(revision)
            placed = True
    return steps + ([] if placed else [revision]) + list(fresh.values())


def revised(diagnosis: Diagnosis, findings: list[Finding], text: str) -> Diagnosis:
    """``diagnosis`` with ``findings`` in place of its own and ``text`` as the revision step of
    its chain of thought (what evidence changed, and why); everything else carried over."""
    result = Diagnosis.from_findings(
        findings, presence=diagnosis.presence, scene=diagnosis.scene, objects=diagnosis.objects,
        sources=diagnosis.sources, notes=diagnosis.notes)
    result.reasoning = revised_reasoning(diagnosis.reasoning, result.reasoning,
                                         ReasoningStep("degradations", text))
    return result


def bound_by_detail(image: torch.Tensor, diagnosis: Diagnosis,
                    limit: float = DETAIL_LIMIT) -> Diagnosis:
    """``diagnosis`` with its non-user blur and low-resolution findings weakened (or dropped)
    until ``image`` ([3, H, W] in [0, 1]) fits them; the same object when it already does or
    when the check does not apply (see the module docstring)."""
    bounded = [f for f in diagnosis.findings
               if f.type in BOUNDED_TYPES and f.source not in MEASURED]
    if not bounded or any(f.type in ADDS_DETAIL for f in diagnosis.findings):
        return diagnosis
    fixed = [f for f in diagnosis.findings if f.type in BOUNDED_TYPES and f not in bounded]
    floor, quality = error_floor(diagnosis, image)
    crop = _centre_crop(image)
    power = _luma_power(crop)
    ratio = _ratio(crop, power, bounded + fixed, floor, quality)
    if ratio is None or ratio <= limit:
        return diagnosis

    def ratio_at(a):
        return _ratio(crop, power, [_scaled(f, a) for f in bounded] + fixed, floor, quality)

    lo, hi = 0.0, 1.0  # the largest fraction whose operator the input still fits
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        r = ratio_at(mid)
        if r is None or r <= limit:
            lo = mid
        else:
            hi = mid
    # Fitting only where the check cannot see means even the weakest operator it can test
    # is ruled out: the findings go rather than stay at an untested strength.
    keep = lo > 0.0 and ratio_at(lo) is not None
    kept = {f.type: _scaled(f, lo) for f in bounded}
    findings = [kept.get(f.type, f) if f in bounded else f for f in diagnosis.findings]
    findings = [f for f in findings
                if f.type not in kept or (keep and f.severity >= DROP_BELOW)]
    left = {f.type for f in findings}
    changes = "; ".join(
        f"{f.type} {f.severity:.2f} -> " + (
            f"{kept[f.type].severity:.2f} ({describe_params(kept[f.type])})"
            if f.type in left else "none")
        for f in bounded)
    return revised(diagnosis, findings, f"The image keeps fine detail that the diagnosed optics "
                   f"would have removed (detail ratio {ratio:.1f}, limit {limit:g}): {changes}.")


def bound_severities(per_type: torch.Tensor, before: Diagnosis, after: Diagnosis) -> torch.Tensor:
    """Per-type scores ``[T]`` (``TYPE_NAMES`` order) with the revision that turned ``before``
    into ``after`` (the input's evidence: ``engine.check_evidence``) applied to blur and low
    resolution: a revised type's score scales as its severity did, a dropped one goes to 0, an
    added one reads its severity times its confidence; every other score stays. Not JPEG's
    quality from its quantisation lattice (reasoner/jpeg_lattice.py): that says how the file
    was saved, and a restoration that stays near its input keeps the lattice after its
    artefacts are gone (with it, the residual severity of our moderate and severe JPEG
    restorations on the held-out restoration benchmark read 0.33 and 0.51 against 0.25 and 0.31
    without); what is still visible is the analyzer's call."""
    out = per_type.clone()
    if after is before:
        return out
    for name in BOUNDED_TYPES:
        old, new = before.finding(name), after.finding(name)
        if (old is not None and old.source in MEASURED) or (old is None and new is None):
            continue
        i = TYPE_NAMES.index(name)
        if new is None:
            out[i] = 0.0
        elif old is None:
            out[i] = new.severity * new.confidence
        else:
            out[i] = out[i] * (new.severity / max(old.severity, 1e-6))
    return out
