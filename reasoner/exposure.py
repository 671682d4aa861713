"""The brightest level an image records bounds a low-light finding's exposure from below.

The taxonomy's low light is the tone curve ``y = exposure * x ** gamma`` on a scene ``x`` in
[0, 1]: nothing comes out brighter than ``exposure``. So where the brightest part of the input
reads ``w``, an exposure under ``w`` is impossible, whatever the scene, and the finding's
exposure is raised to ``w`` (its gamma stays). This is a bound, not an estimate: a photo
whose brightest part was grey in the scene keeps the analyzer's reading, and a missed low light
stays missed. The data-consistency step inverts the diagnosed curve exactly
(restorer/consistency.py), so an exposure read too low over-brightens the whole image; the
analyzer reads exposure from the image's content and misses this plain constraint on some
photos (on the training sources, a mild low light of exposure 0.89 read as 0.67-0.78).

``w`` is the 99.9th percentile of the brightest colour channel after a 3x3 box mean, less
three standard deviations of the diagnosed sensor noise left after that mean (noise, added
after the curve, would otherwise lift the bright tail above ``exposure``; blur after it only
lowers that tail, and JPEG's ringing at quality 30 lifted it by under 0.01 in
tests/test_exposure.py). Everything a diagnosis places before the curve (a veil, rain) stays in
[0, 1] and so under it too.

Chosen on training-source photos (4 per source, the benchmark's three low-light levels and
up to three random curves each, 57 images the analyzer found low light in; inverting the
curve alone, scratch /tmp/scr/ll_ev4.py): the bound took the mean PSNR from 24.10 to 24.87 dB
(the true curve: 48.40), gaining over 1 dB on 10 images and losing over 1 dB on one (-4.6 dB:
there the analyzer's errors in exposure and gamma had cancelled, and raising one alone undid
that). Estimating the exposure
instead, as the white divided by a typical white (0.95 or 0.9, alone or averaged with the
analyzer's reading), had the same mean (24.50-24.90) but lost over 1 dB on 12-23 images, down
to -24 dB: the training photos' own whites range from 0.70 to 1.00. Through the whole pipeline
(network and data step, scratch /tmp/scr/ll_full.py, 4 per source): low light mild / moderate /
severe 18.68 / 20.44 / 27.66 -> 19.20 / 21.19 / 29.33 dB, low light + noise 17.24 -> 17.26,
random mixtures with low light 20.60 -> 20.57 (the same one loss, -3.9 dB).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .diagnosis import Diagnosis, Finding, describe_params
from .evidence import DROP_BELOW, MEASURED, revised
from .synthesis import noise_variance

__all__ = ["recorded_white", "bound_by_exposure"]

BRIGHT_QUANTILE = 0.999  # the brightest 0.1 %: a specular highlight, a light, a white wall
BOX = 3                  # px: the mean that takes sensor noise down by a factor of BOX
NOISE_MARGIN = 3.0       # standard deviations of the noise left after the mean
MAX_PIXELS = 1 << 20     # the percentile of a larger image is read on a strided subsample


def recorded_white(image: torch.Tensor, diagnosis: Diagnosis | None = None) -> float:
    """The brightest level ``image`` ([3, H, W] in [0, 1]) records: a high percentile of its
    brightest channel after a small mean, less the margin its diagnosed noise needs."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected a [3, H, W] tensor, got shape {tuple(image.shape)}")
    brightest = image.float().amax(0)[None, None]
    if min(brightest.shape[-2:]) >= BOX:
        brightest = F.avg_pool2d(brightest, BOX, stride=1)
    values = brightest.reshape(-1)
    stride = max(1, values.numel() // MAX_PIXELS)
    white = float(torch.quantile(values[::stride], BRIGHT_QUANTILE))
    noise = diagnosis.finding("noise") if diagnosis is not None else None
    if noise is not None:
        std = float(noise_variance(noise.params, torch.tensor(white))) ** 0.5 / BOX
        white -= NOISE_MARGIN * std
    return min(max(white, 0.0), 1.0)


def bound_by_exposure(image: torch.Tensor, diagnosis: Diagnosis) -> Diagnosis:
    """``diagnosis`` with its low-light exposure raised to the brightest level ``image``
    records where it was below it (the finding dropped when that leaves too little to undo);
    the same object when there is no such finding, it is a user's or measured, or it already
    fits."""
    old = diagnosis.finding("low_light")
    if old is None or old.source in MEASURED:
        return diagnosis
    white = recorded_white(image, diagnosis)
    if white <= old.params["exposure"]:
        return diagnosis
    new = Finding.from_params("low_light", {**old.params, "exposure": white}, old.confidence,
                              old.source, old.param_confidence)
    findings = [f for f in diagnosis.findings if f.type != "low_light"]
    if new.severity >= DROP_BELOW:
        findings.append(new)
    now = f"{new.severity:.2f} ({describe_params(new)})" if new.severity >= DROP_BELOW else "none"
    return revised(diagnosis, findings, f"The brightest part of the image reads {white:.2f}, and "
                   f"a tone curve of exposure {old.params['exposure']:.2f} cannot produce "
                   f"anything brighter than {old.params['exposure']:.2f}: low light "
                   f"{old.severity:.2f} -> {now}.")
