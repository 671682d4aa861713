"""Fusion: the analyzer's calibrated numbers with the VLM's semantics and factors.

Modes:

* ``"analyzer"`` -- the analyzer alone (with classifier scene/object tags when a
  :class:`~.semantics.SemanticTagger` is given);
* ``"vlm"`` -- the VLM alone (its own, uncalibrated findings);
* ``"fused"`` -- findings, parameters, severities and presence from the analyzer; scene,
  objects and likely causes (factors) from the VLM. Types one of them sees and the other does
  not, or whose tiers differ, are *disagreements*: written into the chain of thought (the
  degradations step) and into the notes. ``sources`` tags every field with where it came from.

Residual severity (Severity Score) always comes from the analyzer.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..diagnosis import Diagnosis, Finding
from ..engine import Reasoner, check_evidence
from ..images import as_rgb_batch
from ..taxonomy import get_type
from .parse import ParseResult, add_factors_to_reasoning, is_low_confidence
from .semantics import SemanticTagger, apply_semantics

__all__ = ["MODES", "FusedReasoner", "fuse"]

MODES = ("analyzer", "vlm", "fused")
FUSED_SOURCES = {"findings": "analyzer", "params": "analyzer", "severity": "analyzer",
                 "presence": "analyzer", "scene": "vlm", "objects": "vlm", "factors": "vlm",
                 "observation": "fused", "disagreements": "fused"}
MAX_VLM_TEXT = 400


def _label(t: str) -> str:
    return get_type(t).label.lower()


def disagreements(a: Diagnosis, v: Diagnosis) -> list[str]:
    """Where the analyzer's and the VLM's findings differ, one sentence each."""
    out = []
    a_types, v_types = set(a.types), set(v.types)
    for t in sorted(v_types - a_types, key=lambda n: get_type(n).formation_order):
        f = v.finding(t)
        out.append(f"the VLM sees {_label(t)} ({f.tier}, severity {f.severity:.2f}) but the "
                   f"analyzer does not (presence {a.presence.get(t, 0.0):.2f})")
    for t in sorted(a_types - v_types, key=lambda n: get_type(n).formation_order):
        f = a.finding(t)
        out.append(f"the analyzer detects {_label(t)} ({f.tier}, confidence "
                   f"{f.confidence:.2f}) but the VLM does not mention it")
    for t in sorted(a_types & v_types, key=lambda n: get_type(n).formation_order):
        fa, fv = a.finding(t), v.finding(t)
        if fa.tier != fv.tier:
            out.append(f"both see {_label(t)}, but the analyzer rates it {fa.tier} "
                       f"({fa.severity:.2f}) and the VLM {fv.tier} ({fv.severity:.2f})")
    return out


def _copy_finding(f: Finding) -> Finding:
    return Finding(f.type, dict(f.params), f.severity, f.tier, f.confidence, f.source,
                   dict(f.param_confidence))


def fuse(a: Diagnosis, vlm: ParseResult | Diagnosis) -> Diagnosis:
    """One diagnosis from the analyzer's ``a`` and the VLM's answer (a
    :class:`~.parse.ParseResult`, or a bare diagnosis, which carries no factors)."""
    result = vlm if isinstance(vlm, ParseResult) else None
    v = vlm.diagnosis if isinstance(vlm, ParseResult) else vlm
    factors = dict(result.factors) if result is not None else {}
    usable = not is_low_confidence(v)
    vlm_text = (result.reasoning if result is not None else "") or ""
    if len(vlm_text) > MAX_VLM_TEXT:
        vlm_text = vlm_text[:MAX_VLM_TEXT].rstrip() + "..."

    observation = a.reasoning[0].text if a.reasoning else ""
    if vlm_text:
        observation = f"{observation} The VLM says: {vlm_text}".strip()
    if v.scene:
        observation += f" Scene (VLM): {v.scene}."

    notes = list(a.notes)
    if usable:
        diffs = disagreements(a, v)
        notes.append("fused: findings, parameters and severities from the analyzer; scene, "
                     "objects and likely causes from the VLM")
    else:
        diffs = []
        notes.append("fused: the VLM's answer was not usable (low confidence), so everything "
                     "but what it managed to say about the scene is the analyzer's")
    notes += [f"disagreement: {d}" for d in diffs]
    notes += [f"VLM: {n}" for n in v.notes]

    sources = dict(FUSED_SOURCES)
    if not v.scene:
        sources.pop("scene")
    if not v.objects:
        sources.pop("objects")
    if not factors:
        sources.pop("factors")
    if not diffs:
        sources.pop("disagreements")
    d = Diagnosis.from_findings([_copy_finding(f) for f in a.findings],
                                presence=dict(a.presence), scene=v.scene,
                                objects=list(v.objects), sources=sources,
                                observation=observation, notes=notes)
    add_factors_to_reasoning(d, factors)
    if diffs:
        for step in d.reasoning:
            if step.stage == "degradations":
                step.text += (" Disagreement between analyzer and VLM: " + "; ".join(diffs)
                              + ". The analyzer's calibrated numbers are used.")
                break
    return d


class FusedReasoner(Reasoner):
    """An analyzer and a VLM behind the reasoner interface (``kind`` is the mode)."""

    def __init__(self, analyzer: Reasoner | None = None, vlm=None, mode: str = "fused",
                 semantics: SemanticTagger | None = None):
        # No Reasoner.__init__: the two reasoners inside own their models.
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")
        if mode in ("analyzer", "fused") and analyzer is None:
            raise ValueError(f"analyzer: mode {mode!r} needs the analyzer; connect Load "
                             f"Reasoner to the analyzer input, or choose mode 'vlm'")
        if mode in ("vlm", "fused") and vlm is None:
            raise ValueError(f"mode {mode!r} needs a VLM reasoner")
        self.analyzer, self.vlm, self.mode = analyzer, vlm, mode
        self.semantics = semantics
        self.kind = mode
        main = vlm if mode == "vlm" else analyzer
        self.device, self.dtype = main.device, main.dtype
        self.name = "+".join(r.name for r in (analyzer, vlm) if r is not None)
        self.keep_loaded = all(r.keep_loaded for r in (analyzer, vlm) if r is not None)
        self.model = main.model

    def diagnose(self, images, progress: Optional[Callable[[int, int], None]] = None
                 ) -> list[Diagnosis]:
        images = as_rgb_batch(images)
        if self.mode == "analyzer":
            result = self.analyzer.diagnose(images, progress)
        elif self.mode == "vlm":
            result = self.vlm.diagnose(images, progress)
        else:
            analyzed = self.analyzer.diagnose(images)
            answers = self.vlm.diagnose_detailed(images, progress)
            result = [fuse(a, r) for a, r in zip(analyzed, answers)]
        if self.mode != "analyzer" and getattr(self.analyzer, "detail_check", True):
            # The analyzer checked its own findings; a VLM's blur and resolution reads are no
            # better grounded, so what it brings meets the same evidence.
            result = [check_evidence(img, d) for img, d in zip(images, result)]
        if self.semantics is not None:  # classifier tags fill what is still empty
            for d, sem in zip(result, self.semantics.tag(images)):
                apply_semantics(d, sem)
        return result

    def score(self, images):
        if self.analyzer is None:
            return self.vlm.score(images)  # raises with the explanation
        return self.analyzer.score(images)

    def offload(self) -> None:
        for r in (self.analyzer, self.vlm):
            if r is not None:
                r.offload()
