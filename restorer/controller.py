"""The diffusion controller: a diagnosis (plus the user's instruction and overrides) becomes
everything a diffusion sampler takes -- prompts, denoise strength, step count, guidance scale
and seed. Any sampler can use it: ComfyUI's own KSampler (through Build Prior Prompt's
outputs) or the pack's diffusers reference synthesis (:mod:`.reference`).

Policy (documented here, in ``docs/diffusion.md``, and unit-tested in ``tests/test_reference.py``)
------------------------------------------------------------------------------------------------
``s`` is the diagnosis' overall severity in [0, 1] (``1 - prod(1 - s_t)`` over the diagnosed
types, after the user's overrides). Every setting is a bounded, non-decreasing function of it:

* **denoise** ``= 0.15 + 0.50 s`` in [0.15, 0.65]. Light damage keeps the photo (an img2img
  pass at 0.15 only re-draws fine texture); heavy damage lets the sampler repaint more, but
  never the whole picture (content must survive: above ~0.7 SD invents a different image).
* **steps** ``= round(20 + 20 s)`` in [20, 40]. img2img runs only ``denoise x steps`` of them,
  so the light end still takes 3 real steps and the heavy end 26.
* **cfg** ``= 4.0 + 3.0 s`` in [4.0, 7.0]. Low guidance for light damage (stay close to the
  photo), stronger guidance when the prompt has to steer the repair.
* **prompts**: the positive prompt is the scene/objects (when a VLM described them, else "a
  photograph"), "high quality photo", then the taxonomy's ``clean_words`` of *exactly* the
  diagnosed types, most severe first (CLIP reads 77 tokens: what matters most comes first),
  then the instruction. The negative prompt is the ``artefact_words`` of exactly the diagnosed
  types, most severe first, plus three generic guards (oversaturated, cartoon, distorted).
  A type that was not diagnosed is never mentioned.
* **seed**: ``seed >= 0`` is used as given (the default 0: the same diagnosis always gives the
  same result). ``seed = -1`` (:data:`AUTO_SEED`) derives a seed from a SHA-256 of the
  diagnosis content (types, rounded parameters, scene, objects) and the instruction: stable for
  a picture and its diagnosis, different between pictures, never random. A diffusers run uses
  ``torch.Generator("cpu").manual_seed(seed)``, so the noise is the same on every device.

Pure Python (no torch): Build Prior Prompt runs it at every change of a widget.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Sequence

from ..reasoner.diagnosis import Diagnosis
from ..reasoner.taxonomy import get_type

__all__ = [
    "DENOISE_RANGE", "STEPS_RANGE", "CFG_RANGE", "AUTO_SEED", "DEFAULT_SEED", "MAX_SEED",
    "GENERIC_POSITIVE", "GENERIC_NEGATIVE", "PromptPlan", "denoise_for", "steps_for",
    "cfg_for", "seed_for", "positive_prompt", "negative_prompt", "control", "control_batch",
]

DENOISE_RANGE = (0.15, 0.65)
STEPS_RANGE = (20, 40)
CFG_RANGE = (4.0, 7.0)
AUTO_SEED = -1
DEFAULT_SEED = 0
MAX_SEED = 0xFFFFFFFFFFFFFFFF  # KSampler's maximum; derived seeds stay below 2**32
GENERIC_POSITIVE = "high quality photo"
GENERIC_NEGATIVE = ("oversaturated", "cartoon", "distorted")
MAX_OBJECTS = 5


@dataclass
class PromptPlan:
    """What a diffusion sampler takes, for one image."""

    positive: str
    negative: str
    denoise: float
    steps: int
    cfg: float
    seed: int = DEFAULT_SEED
    severity: float = 0.0
    types: tuple = field(default_factory=tuple)  # the diagnosed types, most severe first

    def summary(self) -> str:
        return (f"denoise {self.denoise}, steps {self.steps}, cfg {self.cfg}, seed {self.seed} "
                f"(severity {self.severity:.2f})")


def _clamp01(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def _lerp(bounds, s: float) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * _clamp01(s)


def denoise_for(severity: float) -> float:
    """img2img denoise strength, ``0.15 + 0.5 s`` (rounded to 3 decimals)."""
    return round(_lerp(DENOISE_RANGE, severity), 3)


def steps_for(severity: float) -> int:
    """Sampler steps, ``round(20 + 20 s)``."""
    return int(round(_lerp(STEPS_RANGE, severity)))


def cfg_for(severity: float) -> float:
    """Classifier-free guidance scale, ``4 + 3 s`` (rounded to 2 decimals)."""
    return round(_lerp(CFG_RANGE, severity), 2)


def _ranked(diagnosis: Diagnosis) -> list:
    """Findings, most severe first (ties: image-formation order, as the diagnosis lists them)."""
    return sorted(diagnosis.findings, key=lambda f: -float(f.severity))


def _clean_text(text: str) -> str:
    return " ".join(str(text).split())


def positive_prompt(diagnosis: Diagnosis, instruction: str = "") -> str:
    subject = _clean_text(diagnosis.scene) or "a photograph"
    objects = [_clean_text(o) for o in diagnosis.objects if _clean_text(o)][:MAX_OBJECTS]
    if objects:
        subject += " with " + ", ".join(objects)
    parts = [subject, GENERIC_POSITIVE]
    parts += [get_type(f.type).clean_words for f in _ranked(diagnosis)]
    instruction = _clean_text(instruction or "")
    if instruction:
        parts.append(instruction)
    return ", ".join(parts)


def negative_prompt(diagnosis: Diagnosis) -> str:
    parts = [get_type(f.type).artefact_words for f in _ranked(diagnosis)]
    return ", ".join(parts + list(GENERIC_NEGATIVE))


def _fingerprint(diagnosis: Diagnosis, instruction: str) -> str:
    content = {
        "findings": sorted((f.type, sorted((k, round(float(v), 3)) for k, v in f.params.items()))
                           for f in diagnosis.findings),
        "scene": diagnosis.scene, "objects": list(diagnosis.objects),
        "instruction": _clean_text(instruction or ""),
    }
    return json.dumps(content, sort_keys=True)


def seed_for(diagnosis: Diagnosis, instruction: str = "", seed: int = DEFAULT_SEED) -> int:
    """``seed`` itself when >= 0; for :data:`AUTO_SEED` (-1) a seed in [0, 2**32) derived
    from the diagnosis content and the instruction (deterministic, never random)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an integer, got {type(seed).__name__}")
    if seed == AUTO_SEED:
        digest = hashlib.sha256(_fingerprint(diagnosis, instruction).encode()).digest()
        return int.from_bytes(digest[:4], "little")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed: expected -1 (derive from the diagnosis) or an integer in "
                         f"[0, {MAX_SEED}], got {seed}")
    return seed


def control(diagnosis: Diagnosis | None, instruction: str = "", overrides: str = "",
            seed: int = DEFAULT_SEED) -> PromptPlan:
    """The sampler settings for one image. ``overrides`` (short form, see
    :func:`..prior.apply_overrides`) are applied first; ``None`` means no diagnosis (treated
    as a clean image: generic prompts, the lightest settings)."""
    if overrides and overrides.strip():
        from .prior import apply_overrides  # local: prior imports this module
        diagnosis = apply_overrides(diagnosis, overrides)
    if diagnosis is None:
        diagnosis = Diagnosis.from_findings([])
    s = _clamp01(diagnosis.overall_severity)
    return PromptPlan(
        positive=positive_prompt(diagnosis, instruction),
        negative=negative_prompt(diagnosis),
        denoise=denoise_for(s), steps=steps_for(s), cfg=cfg_for(s),
        seed=seed_for(diagnosis, instruction, seed), severity=round(s, 4),
        types=tuple(f.type for f in _ranked(diagnosis)))


def control_batch(diagnoses: Sequence[Diagnosis | None], instruction: str = "",
                  seed: int = DEFAULT_SEED) -> list[PromptPlan]:
    """One plan per image (diagnoses already carry the user's overrides)."""
    return [control(d, instruction, "", seed) for d in diagnoses]
