"""The reasoner as a user-facing object: load, diagnose, score, offload.

The nodes and the CLI both call these methods; neither knows how the analyzer works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from .analyzer import (DegradationAnalyzer, combined_severity, decode, describe_image,
                       load_analyzer, make_crops, residual_severity)
from .diagnosis import Diagnosis
from .evidence import bound_by_detail, bound_severities
from .exposure import bound_by_exposure
from .images import as_rgb_batch
from .jpeg_lattice import bound_by_jpeg_lattice
from .psf import measure_blur
from .resampling import bound_by_resampling

DEFAULT_ANALYZER = Path(__file__).resolve().parent / "weights" / "analyzer.safetensors"


def check_evidence(image: torch.Tensor, diagnosis: Diagnosis) -> Diagnosis:
    """``diagnosis`` of ``image`` ([3, H, W] in [0, 1]) revised by what the input itself shows:
    JPEG's quantisation lattice sets the quality (reasoner/jpeg_lattice.py; first, as the
    checks after it weigh JPEG's error), the trace of an upscaling sets the low-resolution
    scale (reasoner/resampling.py), the spectrum's signature of a PSF sets the blur's
    parameters (reasoner/psf.py), then the fine detail the input keeps bounds blur and low
    resolution (reasoner/evidence.py), and the brightest level it records bounds a low light's
    exposure from below (reasoner/exposure.py)."""
    image = image.float().cpu()
    diagnosis = bound_by_resampling(image, bound_by_jpeg_lattice(image, diagnosis))
    return bound_by_exposure(image, bound_by_detail(image, measure_blur(image, diagnosis)))


class Reasoner:
    """Analyzer-backed reasoner. ``kind`` tells the nodes which backend produced a diagnosis."""

    kind = "analyzer"

    def __init__(self, model: DegradationAnalyzer, device=None, dtype=torch.float32,
                 name: str = "analyzer", keep_loaded: bool = True, semantics=None,
                 detail_check: bool = True):
        self.model = model.eval()
        # Revise blur/low-resolution findings by the input's own evidence (its upscaling
        # trace and its fine detail: check_evidence); off only to measure what it does.
        self.detail_check = detail_check
        # Optional offline ImageNet tagger (reasoner/vlm/semantics.py): without a VLM it is
        # what keeps the default diagnosis from being blind to content.
        self.semantics = semantics
        self.device = torch.device(device or "cpu")
        self.dtype = dtype
        self.name = name
        self.keep_loaded = keep_loaded

    def _crops(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        return torch.stack([make_crops(img, cfg.crop, cfg.max_crops) for img in images])

    def outputs(self, images: torch.Tensor) -> dict:
        """Raw head outputs (differentiable when called with grad enabled)."""
        self.model.to(self.device, self.dtype)
        return self.model(self._crops(images).to(self.device, self.dtype))

    @torch.no_grad()
    def diagnose(self, images, progress: Optional[Callable[[int, int], None]] = None
                 ) -> list[Diagnosis]:
        images = as_rgb_batch(images)
        result = []
        for i, img in enumerate(images):
            sem = self.semantics.tag(img[None])[0] if self.semantics is not None else None
            observation = describe_image(img)
            if sem is not None and not sem.empty:
                observation += f" It looks like {sem.scene}" + (
                    f" ({', '.join(sem.objects[:3])})." if sem.objects else ".")
            d = decode(self.outputs(img[None]), [observation])[0]
            if self.detail_check:
                d = check_evidence(img, d)
            if sem is not None:
                from .vlm.semantics import apply_semantics
                apply_semantics(d, sem)
            result.append(d)
            if progress:
                progress(i + 1, len(images))
        self._maybe_offload()
        return result

    @torch.no_grad()
    def score(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual severity: ([B, T] per type, [B] overall), on the CPU. With the evidence
        checks on, blur and low resolution are revised as ``diagnose`` revises them."""
        images = as_rgb_batch(images)
        per, overall = [], []
        for img in images:
            out = self.outputs(img[None])
            p, o = residual_severity(out)
            p, o = p.float().cpu(), o.float().cpu()
            if self.detail_check:
                before = decode(out)[0]
                p = bound_severities(p[0], before, check_evidence(img, before))[None]
                o = combined_severity(p)
            per.append(p)
            overall.append(o)
        self._maybe_offload()
        return torch.cat(per), torch.cat(overall)

    def _maybe_offload(self):
        if not self.keep_loaded:
            self.offload()

    def offload(self) -> None:
        """Give the accelerator memory back (the model stays usable; it moves on next use)."""
        self.model.to("cpu")
        if self.semantics is not None and getattr(self.semantics, "model", None) is not None:
            self.semantics.model.to("cpu")
            self.semantics.device = torch.device("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_reasoner(path=None, device=None, dtype=torch.float32,
                  keep_loaded: bool = True, semantics: bool = True) -> Reasoner:
    """The analyzer, plus the offline ImageNet tagger for scene/objects when its optional
    weights package is installed (``semantics=False`` skips it)."""
    path = Path(path) if path else DEFAULT_ANALYZER
    tagger = None
    if semantics:
        from .vlm.semantics import load_semantic_tagger
        tagger = load_semantic_tagger(device=device or "cpu")
    return Reasoner(load_analyzer(path), device=device, dtype=dtype, name=path.stem,
                    keep_loaded=keep_loaded, semantics=tagger)
