"""Evidence that an image was saved as JPEG, and at which quality: the quantisation lattice.

JPEG divides the DCT coefficients of each 8x8 luma block by a quantisation table and rounds
them; the decoder multiplies them back. In a decoded JPEG the luma DCT of the blocks on the
8-pixel grid from the top-left corner therefore sits on the lattice ``k * Q[u, v]``, up to
the decoder's rounding to 8 bits and the conversion to RGB and back (about 0.35 per
coefficient). libjpeg, which Pillow and most software use, scales one standard table (ITU-T
T.81 Annex K) by the quality, so the quality whose lattice the coefficients sit on is the
quality the image was saved at: a measurement where the analyzer can only guess (its grid
steps are 10 quality points).

The statistic, for each candidate quality with its table ``Q``: the sum of ``cos(2 pi c / Q)``
over the AC coefficients ``c`` that the candidate would not have zeroed (``|c| >= Q / 2``). On
the lattice each adds about 1, off it as much below 0 as above. A table that divides the true
one fits as well, but on the coefficients the true one zeroed it meets only rounding noise, a
table that is a multiple of it halves its support with every other multiple at -1, and the
tables of other qualities are neither: the true quality has the largest sum. ``coherence``,
that sum over its support, tells a lattice from none. The DC coefficient is left out (the
level shift puts a black block on many lattices at once), so are blocks with more than an
eighth of their pixels clipped at 0 or 255 (clipping moves them off the lattice), and only the
``BLOCKS`` blocks with the most AC energy are scored (coefficients the quantiser zeroed say
least), in a centre region of at most ``REGION`` px: 0.02-0.03 s per image at any size.

On training-source photos (``tools/data.py``'s training split, 512-px centre crops): 144
random 1-3-type mixtures on 4 photos per source (the training sampler, 32 with JPEG): every
JPEG read at its exact quality (rounded to an integer, as Pillow takes it), coherence
0.61-1.00 (one, dark and noisy, on only 14 coefficients: under ``MIN_SUPPORT`` the analyzer's
reading stands); the 112 without JPEG at most 0.31. Qualities 30, 60, 80, 85, 88, 90, 92, 94,
95, 96 and 98, alone and after noise of sigma 5 on 2 photos per source: exact on all 12 images
each, coherence at least 0.54 up to quality 94 (0.46 at 95, 0.30 at 98); clean and noisy
photos -0.24 to 0.01. Hence ``LATTICE_LIMIT`` 0.5: every JPEG worth restoring (quality up to
91, severity at least ``evidence.DROP_BELOW``) clears it with room. A first version that also
scored DC and every block read dark photos without JPEG as quality 1 (coherence 0.67).

On the held-out benchmarks it took the analyzer's JPEG severity MAE from 0.046 to 0.003
(single types) and left the restoration where it was (JPEG rows within 0.08 dB): on those
photos the analyzer's quality was near enough, and the misreads that cost the JPEG rows are a
blur or low resolution read beside it. The Severity Score does not take this revision
(``evidence.bound_severities`` says why).

What it cannot see: a JPEG that was cropped off the 8-pixel grid or resized afterwards (the
lattice is gone: the analyzer's reading then stands), tables other than the IJG family (a
camera's own: the nearest quality fits poorly and, below the limit, changes nothing), and
chroma (only luma is scored).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .diagnosis import Diagnosis, Finding
from .evidence import DROP_BELOW, revised
from .images import dct_matrix, luma
from .taxonomy import get_type

__all__ = ["LatticeFit", "luma_table", "measure_quality", "bound_by_jpeg_lattice"]

LATTICE_LIMIT = 0.5   # coherence; training-source photos: JPEG >= 0.54 up to quality 94, none <= 0.31
MIN_SUPPORT = 256     # coefficients; fewer say too little either way
BLOCKS = 512          # the most textured blocks scored (0.02 s at 512; 256 let the null reach 0.41)
MAX_CLIPPED = 0.125   # fraction of a block's pixels at 0 or 255 above which it is left out
REGION = 1024         # px: the centre region (on the grid) that large images are read in
QUALITIES = range(5, 101)

# ITU-T T.81 Annex K, table K.1: the luminance table libjpeg scales by the quality.
_ANNEX_K_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)


@dataclass(frozen=True)
class LatticeFit:
    quality: int        # the quality whose table the coefficients fit best
    coherence: float    # mean cos(2 pi c / Q) over its support: ~1 on a lattice, ~0 off it
    support: int        # AC coefficients that quality would not have zeroed


def luma_table(quality: int) -> torch.Tensor:
    """libjpeg's luminance quantisation table at ``quality`` (``jpeg_quality_scaling`` with
    baseline limits), [64] in row-major order of the 8x8 frequencies."""
    if not 1 <= quality <= 100:
        raise ValueError(f"quality: expected an integer in [1, 100], got {quality!r}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    table = torch.tensor(_ANNEX_K_LUMA, dtype=torch.float64)
    return torch.floor((table * scale + 50) / 100).clamp(1, 255)


@functools.cache
def _ac_tables() -> torch.Tensor:
    """[len(QUALITIES), 63]: every candidate's table without DC (built on first use, not when
    the reasoner is imported)."""
    return torch.stack([luma_table(q) for q in QUALITIES])[:, 1:].float()


def _ac_coefficients(image: torch.Tensor) -> torch.Tensor:
    """[N, 63] AC coefficients of the luma of the ``BLOCKS`` most textured unclipped blocks on
    the grid from the top-left corner, in JPEG's units (8-bit levels, shifted by 128)."""
    h, w = (min(s, REGION) // 8 * 8 for s in image.shape[-2:])
    # A centre region on the grid: 8-bit levels, exact in float32.
    y0, x0 = ((s - n) // 16 * 8 for s, n in zip(image.shape[-2:], (h, w)))
    levels = torch.round(image[:, y0:y0 + h, x0:x0 + w].clamp(0, 1) * 255).double()
    clipped = ((levels == 0) | (levels == 255)).any(0).double()
    clipped = clipped.reshape(h // 8, 8, w // 8, 8).mean((1, 3)).reshape(-1)
    y = luma(levels) - 128
    blocks = y.reshape(h // 8, 8, w // 8, 8).transpose(1, 2).reshape(-1, 8, 8)
    d = dct_matrix(8, torch.float64)
    c = (d @ blocks[clipped <= MAX_CLIPPED] @ d.T).reshape(-1, 64)[:, 1:]
    energy = (c * c).sum(1)
    return c[torch.argsort(energy, descending=True)[:BLOCKS]].float()


def measure_quality(image: torch.Tensor) -> LatticeFit | None:
    """The JPEG quality whose quantisation lattice the luma DCT of ``image`` ([3, H, W] in
    [0, 1]) fits best, how well, and on how many coefficients; None for an image without a
    full 8x8 block."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected a [3, H, W] tensor, got shape {tuple(image.shape)}")
    if min(image.shape[-2:]) < 8:
        return None
    c = _ac_coefficients(image.float().cpu())
    best = None
    for quality, table in zip(QUALITIES, _ac_tables()):
        kept = c.abs() >= table / 2  # what this table would not have quantised to 0
        score = float(torch.where(kept, torch.cos(c * (2 * math.pi / table)), 0.0).sum())
        if best is None or score > best[0]:
            best = (score, quality, int(kept.sum()))
    score, quality, support = best
    return LatticeFit(quality, score / max(support, 1), support)


def bound_by_jpeg_lattice(image: torch.Tensor, diagnosis: Diagnosis,
                          limit: float = LATTICE_LIMIT) -> Diagnosis:
    """``diagnosis`` with its JPEG finding at the quality the input's quantisation lattice shows
    (added when missing and worth restoring, dropped when the quality is too high to matter);
    the same object without a lattice (coherence under ``limit``) or with a user's JPEG."""
    old = diagnosis.finding("jpeg")
    if old is not None and old.source == "user":
        return diagnosis
    fit = measure_quality(image)
    if fit is None or fit.support < MIN_SUPPORT or fit.coherence < limit:
        return diagnosis
    new = Finding.from_params("jpeg", {"quality": float(fit.quality)},
                              max(fit.coherence, old.confidence if old is not None else 0.0),
                              "evidence")
    if old is None and new.severity < DROP_BELOW:
        return diagnosis
    findings = [f for f in diagnosis.findings if f.type != "jpeg"]
    before = f"JPEG at quality {old.params['quality']:.0f}" if old is not None else "no JPEG"
    lattice = (f"The luma DCT of the 8x8 blocks sits on JPEG's quantisation lattice for quality "
               f"{fit.quality} (coherence {fit.coherence:.2f} over {fit.support} coefficients)")
    if new.severity < DROP_BELOW:
        return revised(diagnosis, findings, f"{lattice}: saved too lightly to leave artefacts "
                       f"worth removing, where the diagnosis had {before}.")
    return revised(diagnosis, findings + [new], f"{lattice}: it was saved at quality "
                   f"{fit.quality}, so JPEG at quality {fit.quality} where the diagnosis had "
                   f"{before}.")


assert get_type("jpeg").param("quality").low >= min(QUALITIES), "candidates must span the range"
