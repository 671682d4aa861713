"""Evidence that an image was upscaled: the periodic trace that interpolation leaves.

An image enlarged by a factor ``s`` is, pixel by pixel, a different mix of the small image's
samples: the interpolation phase cycles every ``s`` output pixels, and so does how rough the
image is locally. The mean absolute second difference along one axis, as a function of the
position across it, then oscillates at ``1/s`` cycles per pixel (folded into [0, 1/2]); its
spectrum shows a sharp peak there, on both axes. This is the resampling trace of image
forensics (Popescu and Farid, "Exposing digital forgeries by detecting traces of re-sampling",
2005). A blur is shift-invariant and leaves none, which is what the analyzer cannot see on its
128-px crops: to it, low resolution at scale ``s`` looks much like a blur of width ``0.4 s``.

``resampling_trace`` measures the strongest peak (over the median of its neighbourhood, the
smaller of the two axes) away from multiples of 1/16 cycles/px, where JPEG puts peaks of its
own (its 8-px blocks; with 4:2:0 chroma, Pillow's default, 16-px macroblocks), and above
``MIN_FREQUENCY``, the trace of the smallest upscaling worth a finding (severity
``evidence.DROP_BELOW``, scale 1.15; slower variation is the content's). Two factors
fold onto one frequency ``f``: ``1/f`` and ``1/(1 - f)``. ``bound_by_resampling`` keeps those
the input's detail allows (``evidence.detail_ratio``: a too-large factor removes detail the
image still has); where both fit, ``likelier_factor`` chooses (below). It replaces the
analyzer's low-resolution scale with that factor, or adds the finding. A blur the analyzer read
beside it stays for the PSF fit (psf.py), which takes the measured upscaling's transfer out of
the spectrum and drops the blur when nothing is left: the analyzer often reads an upscaling's
softness as a blur too. (That replaced a rule here that dropped any blur no more severe than
the upscaling, which also dropped most real ones: on training-source photos it cost 1.1-3.5 dB
on every real blur beside an upscaling, see psf.py.) The trace cannot show a factor whose
frequency sits on the block grid (2, 4, 1.6, 8/3 ...), and strong noise hides it; then nothing
changes. (A camera's demosaicing, period
2 px, also lands on the grid, at 1/2 cycles/px.)

Two factors on one frequency: the detail check alone took the larger wherever the image held
too little fine detail to rule it out (a 1.75 upscaling read as 2.33 on 7 of 24 training
photos). ``likelier_factor`` asks instead how much of the image each factor's projection
(downscale, upscale back) would change: for an image enlarged by the smaller factor, the larger
one removes a band the image has, for one enlarged by the larger, hardly anything more. Where
that ratio falls depends on the content, so the image calibrates it: the same ratio of the input
re-enlarged by each factor. On training-source photos, upscalings by 1.75, 2.2, 2.33, 2.5, 3,
3.4 and 3.8 of 9 photos were all told apart (58 of 58 with a trace); over 312 images of 8
photos per source (every level of blur and low resolution, their mixtures, 4 random mixtures
each) 8 diagnoses changed: 7 upscalings by 1.75 once read as 2.33 (the restorer +1.8 to +2.6
dB on 6, -0.3 dB on one with a blur beside it) and a random mixture's 2.14 now 1.87 (unchanged,
its low light missed). 0.03 s per 512 px image, 1.7 s at 12 megapixels.

On training-source photos (the analyzer benchmark's 32 images per photo, on 3 photos of each
training source, 8-bit) the 240 images without low resolution read at most 9.4 (rain, noise,
JPEG and clean photos alike, once the block grid is left out; 14-32 just beside it, at 0.245
cycles/px, so that guard is 4 bins wide), and 30 of the 48 upscaled ones read 12 or more, at
the upscaling's frequency: ``TRACE_LIMIT`` is 12. The misses are mostly noise or JPEG on top
of the upscaling (3.0-7.7), and three plain upscalings at 8.2-10.8. The macroblock guard came
from the held-out photos: one of their 214 images without upscaling, haze + JPEG at quality
33, read 20.5 at 0.063 cycles/px (1/16), now below ``MIN_FREQUENCY`` and on that grid.

No trace: the converse. The analyzer often reads a blur as low resolution, or as both (the
same softness), and the restorer then undoes an upscaling that never happened. Where the
input shows no peak over ``NO_TRACE_LIMIT`` at any frequency, JPEG's grids included (an
upscaling by 3.2 puts its trace at 5/16 cycles/px, where the scale search above does not
look), and nothing that hides a trace was found (noise, JPEG, rain), the analyzer's low
resolution becomes a blur of width 0.4 s, or simply goes beside the blur it also read; the
PSF fit (psf.py) then measures that blur. Not where the spectrum is folded (``fold_coherence``
over ``FOLD_LIMIT``): an enlargement by exactly 2 leaves no trace at all (both interpolation
phases sit 1/4 px from a sample, mirror images of each other; on training photos it read 3-7,
and taking it for a blur cost 0.5-2.8 dB there), but its spectrum is the small image's folded
about 1/4 cycles/px, with the same phase relation on every row. On training-source photos (6
of each training source, the analyzer benchmark's cases, an enlargement by 2 and 10 random
mixtures each: 684 images; ``python benchmarks/no_trace.py``) upscalings by 2.5 or more read at
least 9 with the grids included, the false low-resolution readings beside a blur 3.1-5.8; the
rule changed 24 diagnoses (none with a true low resolution, every enlargement by 2 left alone)
and the restorer's mean on them went 31.51 -> 33.09 dB (19 up, 5 down, the worst -0.96). A
first version without the fold test, which skipped every scale under 2.5 instead, changed 18
(28.88 -> 30.02 dB) and missed the mild blurs read as a small upscaling (+1.7 to +5.5 dB now).
"""

from __future__ import annotations

import math

import torch

from .diagnosis import Diagnosis, Finding
from .evidence import (BOUNDED_TYPES, DETAIL_LIMIT, DROP_BELOW, MEASURED, detail_ratio,
                       error_floor, revised)
from .images import luma
from .synthesis import low_resolution_size, resize_tensor
from .taxonomy import get_type

__all__ = ["TRACE_LIMIT", "NO_TRACE_LIMIT", "FOLD_LIMIT", "resampling_trace", "fold_coherence",
           "upscale_factors", "bound_by_resampling"]

TRACE_LIMIT = 12.0     # training-source photos: without upscaling <= 9.4, upscaled up to 1,870
# Weaker than this at every frequency (JPEG's grids included), the image was not upscaled (see
# "No trace" in the module docstring).
NO_TRACE_LIMIT = 6.0
# An enlargement by exactly 2 leaves no trace (its two interpolation phases, +-1/4 px, are
# mirror images, so the roughness does not alternate); it shows as spectral folding instead
# (``fold_coherence``): over this, the missing trace says nothing. Training photos: plain
# enlargements by 2 read 0.44-1.00 (17 of 18 over 0.7), clean and blurred photos at most 0.19,
# JPEG at quality 60 at most 0.21 (other enlargements, which leave a trace, up to 0.72).
FOLD_LIMIT = 0.3
FOLD_BAND = (0.08, 0.2)  # cycles/px: where a small image's spectrum still has content
# What hides a trace: noise and rain drown it, JPEG's blocks put peaks on its grids.
TRACE_HIDING_TYPES = ("noise", "jpeg", "rain")
# The blur that looks like an upscaling by s to the analyzer: width 0.4 s (see above).
SOFTNESS_WIDTH = 0.4
# The trace of the smallest upscaling worth a finding: 1 - 1/s at the scale of severity
# DROP_BELOW (the finding the detail check would drop anyway).
MIN_FREQUENCY = 1.0 - 1.0 / get_type("low_resolution").params_for_severity(DROP_BELOW)["scale"]
# JPEG's grids: bins left out either side of a multiple of 1/8 cycles/px (8-px blocks) and
# of an odd multiple of 1/16 (16-px macroblocks, weaker: a 1.75 upscaling's 0.429 must stay).
BLOCK_GUARD, MACROBLOCK_GUARD = 4, 2
NEIGHBOURS = 12        # bins either side whose median is the background of a peak
CROP = 512


def _square_luma(image: torch.Tensor) -> torch.Tensor:
    """The luma (float64) of the largest centred square of at most ``CROP`` px."""
    _, h, w = image.shape
    s = min(CROP, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return luma(image.float()).double()[top:top + s, left:left + s]


def _roughness_spectra(image: torch.Tensor) -> torch.Tensor:
    """Power spectra ``[2, n//2 + 1]`` of the column- and row-profiles of the luma's absolute
    second difference (a Hann-windowed centre crop of at most ``CROP`` px)."""
    lum = _square_luma(image)
    spectra = []
    for a in (lum, lum.T):
        d = (a[:, 2:] - 2 * a[:, 1:-1] + a[:, :-2]).abs().mean(0)
        d = (d - d.mean()) * torch.hann_window(d.numel(), periodic=False, dtype=d.dtype)
        spectra.append(torch.fft.rfft(d).abs() ** 2)
    return torch.stack(spectra)


def resampling_trace(image: torch.Tensor, keep_block_grid: bool = False
                     ) -> tuple[float, float] | None:
    """``(strength, frequency)`` of the strongest resampling peak of ``image`` ([3, H, W] in
    [0, 1]): strength is the peak over its neighbours' median on the weaker axis, frequency in
    cycles/px. None for an image too small to tell (under 64 px). ``keep_block_grid`` counts the
    frequencies of JPEG's grids too (left out by default: JPEG's own peaks sit there)."""
    traces = _traces(image)
    return None if traces is None else traces[1 if keep_block_grid else 0]


def _traces(image: torch.Tensor) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """``resampling_trace`` off JPEG's grids and everywhere, from one pass over the image."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected [3, H, W], got {list(image.shape)}")
    if min(image.shape[1:]) < 64:
        return None
    spectra = _roughness_spectra(image.float())
    bins = spectra.shape[1]
    n = 2 * (bins - 1)  # the profile's length (even after the crop)
    freq = torch.arange(bins, dtype=torch.float64) / n
    # Each bin against the median of the NEIGHBOURS bins either side, its own +-2 left out
    # (a peak between two bins spreads over both), the lowest two never counted.
    padded = torch.nn.functional.pad(spectra, (NEIGHBOURS, NEIGHBOURS), value=float("nan"))
    padded[:, NEIGHBOURS:NEIGHBOURS + 2] = float("nan")
    windows = padded.unfold(1, 2 * NEIGHBOURS + 1, 1).clone()
    windows[..., NEIGHBOURS - 2:NEIGHBOURS + 3] = float("nan")
    background = windows.nanmedian(-1).values.clamp(min=1e-30)
    ratio = (spectra / background).min(0).values
    sixteenths = (freq * 16).round()
    guard = torch.where(sixteenths % 2 == 0, BLOCK_GUARD, MACROBLOCK_GUARD)
    on_grid = (freq * 16 - sixteenths).abs() * n / 16 < guard
    ratio[freq < MIN_FREQUENCY] = 0.0
    k = int(ratio.argmax())
    everywhere = float(ratio[k]), float(freq[k])
    ratio[on_grid] = 0.0
    k = int(ratio.argmax())
    return (float(ratio[k]), float(freq[k])), everywhere


def fold_coherence(image: torch.Tensor) -> float:
    """How consistently each row's (and column's) spectrum at ``f`` mirrors the one at
    ``1/2 - f``, over the band ``FOLD_BAND``: near 1 for an enlargement by 2, whose spectrum is
    the small image's folded about 1/4 cycles/px, times the interpolation kernel's (the same
    phase relation on every row); near 0 for an image that was not (``image`` [3, H, W]). The
    weaker of the two axes."""
    lum = _square_luma(image)
    s = lum.shape[0]
    lo, hi = (round(f * s) for f in FOLD_BAND)
    k = torch.arange(lo, hi)
    out = []
    for a in (lum, lum.T):
        a = a - a.mean(1, keepdim=True)
        spec = torch.fft.fft(a * torch.hann_window(s, periodic=False, dtype=a.dtype), dim=1)
        pairs = spec[:, k] * spec[:, s // 2 - k]
        out.append(float((pairs.sum(0).abs() / pairs.abs().sum(0).clamp(min=1e-30)).median()))
    return min(out)


def upscale_factors(frequency: float) -> list[float]:
    """The upscaling factors within the taxonomy's range whose trace lands at ``frequency``
    (``1/f`` and ``1/(1 - f)``), largest first."""
    spec = get_type("low_resolution").param("scale")
    out = [1.0 / frequency, 1.0 / (1.0 - frequency)] if 0.0 < frequency < 1.0 else []
    return sorted({round(s, 3) for s in out if 1.0 < s <= spec.high}, reverse=True)


def _projection_misfit(lum: torch.Tensor, scale: float) -> float:
    """Mean squared change of ``lum`` ([1, 1, H, W]) under the synthesiser's upscaling by
    ``scale`` of its own downscaling: how much of the image an upscaling by ``scale`` could not
    have produced (it is never 0: the two resamplings are not exact inverses)."""
    h, w = lum.shape[-2:]
    back = resize_tensor(resize_tensor(lum, *low_resolution_size(h, w, scale)), h, w)
    return float(((back - lum) ** 2).mean())


def _misfit_ratio(lum: torch.Tensor, small: float, large: float) -> float:
    return math.log(max(_projection_misfit(lum, large), 1e-12)
                    / max(_projection_misfit(lum, small), 1e-12))


def _reupscaled(lum: torch.Tensor, scale: float) -> torch.Tensor:
    h, w = lum.shape[-2:]
    return resize_tensor(resize_tensor(lum, *low_resolution_size(h, w, scale)).clamp(0, 1),
                         h, w)


def likelier_factor(image: torch.Tensor, large: float, small: float) -> float:
    """Of two upscaling factors whose traces land on the same frequency, the one ``image``
    ([3, H, W]) was more likely enlarged by. Removing the band between the two small images'
    Nyquist frequencies costs an image enlarged by ``small`` much more (log misfit ratio
    1.3-1.7 for 1.75 against 2.33 on training photos) than one enlarged by ``large`` (0.4-0.6);
    where that ratio falls depends on the content, so it is calibrated on the image itself:
    the ratio of the input re-enlarged by each factor, and the nearer one wins."""
    lum = luma(image.float())[None, None]
    observed = _misfit_ratio(lum, small, large)
    as_large = _misfit_ratio(_reupscaled(lum, large), small, large)
    as_small = _misfit_ratio(_reupscaled(lum, small), small, large)
    return large if abs(observed - as_large) < abs(observed - as_small) else small


def bound_by_resampling(image: torch.Tensor, diagnosis: Diagnosis,
                        limit: float = TRACE_LIMIT,
                        no_trace_limit: float = NO_TRACE_LIMIT) -> Diagnosis:
    """``diagnosis`` with its low-resolution finding set to the scale the input's resampling
    trace shows (added when missing); the same object when the trace is weaker than ``limit``,
    when a user set blur or low resolution, or when no factor fits the input's detail (see the
    module docstring). With no trace at all (under
    ``no_trace_limit``; 0 turns that rule off) a low resolution becomes the blur it looks like."""
    if any(f.source == "user" and f.type in BOUNDED_TYPES for f in diagnosis.findings):
        return diagnosis
    traces = _traces(image)
    if traces is None:
        return diagnosis
    trace, anywhere = traces
    if trace[0] < limit:
        return _softness_without_trace(image, diagnosis, anywhere, no_trace_limit)
    strength, frequency = trace
    floor, quality = error_floor(diagnosis, image)

    def fits(scale: float) -> bool:
        ratio = detail_ratio(image, [Finding.from_params("low_resolution", {"scale": scale})],
                             floor, quality)
        return ratio is None or ratio <= DETAIL_LIMIT

    fitting = [s for s in upscale_factors(frequency) if fits(s)]
    if not fitting:
        return diagnosis
    scale = fitting[0] if len(fitting) == 1 else likelier_factor(image, *fitting)
    old = diagnosis.finding("low_resolution")
    blur = diagnosis.finding("blur")
    confidence = max([f.confidence for f in (old, blur) if f is not None] + [0.5])
    # Measured, not guessed: the detail check leaves it alone and bounds the other findings.
    new = Finding.from_params("low_resolution", {"scale": scale}, confidence, "evidence")
    findings = [f for f in diagnosis.findings if f.type != "low_resolution"] + [new]
    before = (f"low resolution at scale {old.params['scale']:.2f}" if old is not None
              else "no low resolution")
    return revised(diagnosis, findings, f"The image carries the periodic trace of upscaling "
                   f"({strength:.0f} times its surroundings at {frequency:.3f} cycles/px on both "
                   f"axes): it was enlarged by {scale:.2f}, so low resolution at scale "
                   f"{scale:.2f} where the diagnosis had {before}.")


def _softness_without_trace(image: torch.Tensor, diagnosis: Diagnosis,
                            trace: tuple[float, float], no_trace_limit: float) -> Diagnosis:
    """``diagnosis`` with the analyzer's low resolution read as the blur it is, when the input's
    strongest ``trace`` at any frequency is under ``no_trace_limit`` and nothing that would hide
    one was found."""
    old = diagnosis.finding("low_resolution")
    if (old is None or old.source in MEASURED
            or any(f.type in TRACE_HIDING_TYPES for f in diagnosis.findings)):
        return diagnosis
    if trace[0] >= no_trace_limit or fold_coherence(image) > FOLD_LIMIT:
        return diagnosis
    scale = old.params["scale"]
    findings = [f for f in diagnosis.findings if f is not old]
    blur = diagnosis.finding("blur")
    if blur is None:  # the same softness, as the optics' (the PSF fit may measure it next)
        blur = Finding.from_params("blur", {"width": SOFTNESS_WIDTH * scale}, old.confidence,
                                   old.source)
        findings.append(blur)
    return revised(diagnosis, findings, f"The image carries no trace of upscaling (nothing over "
                   f"{trace[0]:.1f} times its surroundings, where an enlargement leaves "
                   f"{no_trace_limit:.0f} or more): the softness read as low resolution at scale "
                   f"{scale:.2f} is a blur of width {blur.params['width']:.2f} px.")
