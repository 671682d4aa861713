"""The structured diagnosis: what is wrong with an image, how badly, and why we think so.

A :class:`Diagnosis` is what flows along the DIAGNOSIS socket, what the CLI writes as
``X.diagnosis.json``, and what the VLM reasoner must produce. Validation derives from the
taxonomy, and every error names the offending field (``findings[1].params.sigma``) so a
user editing JSON by hand, or a model writing it, learns exactly what to fix.

Pure Python: no torch or numpy at import.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .taxonomy import TAXONOMY, TIERS, TYPE_NAMES, get_type, overall_severity, tier_of

SCHEMA_VERSION = 1
# "evidence": measured on the input itself (reasoner/resampling.py), not guessed by a model.
SOURCES = ("analyzer", "vlm", "user", "synthesis", "fused", "classifier", "evidence", "none")
REASONING_STAGES = ("observation", "degradations", "severity", "plan")
PRESENCE_THRESHOLD = 0.5


class DiagnosisError(ValueError):
    """A diagnosis that does not fit the schema; the message names the field."""


@dataclass
class Finding:
    type: str
    params: dict[str, float]
    severity: float
    tier: str
    confidence: float
    source: str = "analyzer"
    # Per-parameter confidence (from the spread of the analyzer's grid distribution).
    param_confidence: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_params(cls, type_name: str, params: Mapping[str, float], confidence: float = 1.0,
                    source: str = "analyzer", param_confidence=None) -> "Finding":
        """Build a finding whose severity and tier follow from the taxonomy."""
        t = get_type(type_name)
        full = {k: float(t.param(k).clip(v)) for k, v in params.items()}
        full = {**t.identity_params(), **full}
        sev = float(t.severity(full))
        return cls(type_name, full, sev, tier_of(sev), float(confidence), source,
                   dict(param_confidence or {}))


@dataclass
class ReasoningStep:
    stage: str
    text: str


@dataclass
class Diagnosis:
    findings: list[Finding] = field(default_factory=list)
    overall_severity: float = 0.0
    # Probability that each taxonomy type is present (all types, detected or not).
    presence: dict[str, float] = field(default_factory=dict)
    scene: str = ""
    objects: list[str] = field(default_factory=list)
    # Which reasoner produced each top-level field: {"findings": "analyzer", "scene": "vlm"}.
    sources: dict[str, str] = field(default_factory=dict)
    reasoning: list[ReasoningStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_findings(cls, findings: Iterable[Finding], *, presence=None, scene="", objects=(),
                      sources=None, observation: str = "", notes=()) -> "Diagnosis":
        """Assemble a diagnosis and write its chain of thought from the findings."""
        findings = sorted(findings, key=lambda f: get_type(f.type).formation_order)
        if presence is None:
            presence = {n: 0.0 for n in TYPE_NAMES}
            presence.update({f.type: f.confidence for f in findings})
        d = cls(findings=list(findings),
                overall_severity=float(overall_severity(f.severity for f in findings)),
                presence={k: float(v) for k, v in presence.items()}, scene=scene,
                objects=list(objects), sources=dict(sources or {"findings": "analyzer"}),
                notes=list(notes))
        d.reasoning = build_reasoning(d, observation)
        return d

    # --- queries ------------------------------------------------------------------------
    def finding(self, type_name: str) -> Finding | None:
        for f in self.findings:
            if f.type == type_name:
                return f
        return None

    @property
    def types(self) -> list[str]:
        return [f.type for f in self.findings]

    def plan(self) -> list[str]:
        """Restoration order: undo image formation backwards (codec -> sensor -> optics ->
        scene), so each step sees the degradation it was trained on."""
        order = sorted(self.findings, key=lambda f: -get_type(f.type).formation_order)
        return [f.type for f in order]

    def summary(self) -> str:
        if not self.findings:
            return "no degradation detected"
        parts = [f"{f.type} {f.tier} ({f.severity:.2f})" for f in self.findings]
        return f"{', '.join(parts)}; overall {self.overall_severity:.2f}"

    def chain_of_thought(self) -> str:
        return "\n".join(f"[{s.stage}] {s.text}" for s in self.reasoning)

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "findings": [
                {"type": f.type, "params": {k: _round(v) for k, v in f.params.items()},
                 "severity": _round(f.severity), "tier": f.tier,
                 "confidence": _round(f.confidence), "source": f.source,
                 "param_confidence": {k: _round(v) for k, v in f.param_confidence.items()}}
                for f in self.findings],
            "overall_severity": _round(self.overall_severity),
            "presence": {k: _round(v) for k, v in self.presence.items()},
            "scene": self.scene,
            "objects": list(self.objects),
            "sources": dict(self.sources),
            "reasoning": [{"stage": s.stage, "text": s.text} for s in self.reasoning],
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, where: str = "diagnosis") -> "Diagnosis":
        return _parse(data, where)

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "diagnosis") -> "Diagnosis":
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as e:
            raise DiagnosisError(f"{where}: not valid JSON ({e})") from None
        return _parse(data, where)


def _round(v: float) -> float:
    return round(float(v), 4)


# --- validation -------------------------------------------------------------------------

def _number(value, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DiagnosisError(f"{where}: expected a number in [{low:g}, {high:g}], got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < low - 1e-6 or v > high + 1e-6:
        raise DiagnosisError(f"{where}: expected a number in [{low:g}, {high:g}], got {value!r}")
    return min(high, max(low, v))


def _choice(value, where: str, options) -> str:
    if value not in options:
        raise DiagnosisError(f"{where}: expected one of {list(options)}, got {value!r}")
    return value


def _mapping(value, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise DiagnosisError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise DiagnosisError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _string(value, where: str) -> str:
    if not isinstance(value, str):
        raise DiagnosisError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _parse_finding(raw, where: str) -> Finding:
    raw = _mapping(raw, where)
    name = _choice(raw.get("type"), f"{where}.type", TYPE_NAMES)
    t = get_type(name)
    params = {}
    for key, value in _mapping(raw.get("params", {}), f"{where}.params").items():
        if key not in t.keys:
            raise DiagnosisError(f"{where}.params.{key}: {name} has no such parameter; "
                                 f"expected keys {list(t.keys)}")
        spec = t.param(key)
        params[key] = _number(value, f"{where}.params.{key}", spec.low, spec.high)
    params = {**t.identity_params(), **params}
    severity = raw.get("severity")
    severity = (float(t.severity(params)) if severity is None
                else _number(severity, f"{where}.severity", 0.0, 1.0))
    tier = raw.get("tier")
    tier = tier_of(severity) if tier is None else _choice(tier, f"{where}.tier", TIERS)
    confidence = _number(raw.get("confidence", 1.0), f"{where}.confidence", 0.0, 1.0)
    source = _choice(raw.get("source", "analyzer"), f"{where}.source", SOURCES)
    pconf = {}
    for key, value in _mapping(raw.get("param_confidence", {}),
                               f"{where}.param_confidence").items():
        if key not in t.keys:
            raise DiagnosisError(f"{where}.param_confidence.{key}: {name} has no such parameter")
        pconf[key] = _number(value, f"{where}.param_confidence.{key}", 0.0, 1.0)
    return Finding(name, params, severity, tier, confidence, source, pconf)


_KNOWN_FIELDS = {"schema_version", "findings", "overall_severity", "presence", "scene",
                 "objects", "sources", "reasoning", "notes"}


def _parse(data, where: str) -> Diagnosis:
    data = _mapping(data, where)
    unknown = set(data) - _KNOWN_FIELDS
    if unknown:
        raise DiagnosisError(f"{where}: unknown field(s) {sorted(unknown)}; expected "
                             f"{sorted(_KNOWN_FIELDS)}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise DiagnosisError(f"{where}.schema_version: expected {SCHEMA_VERSION}, got {version!r}")
    if "findings" not in data:
        raise DiagnosisError(f"{where}.findings: missing (a list of detected degradations)")
    findings = [_parse_finding(f, f"{where}.findings[{i}]")
                for i, f in enumerate(_list(data["findings"], f"{where}.findings"))]
    seen = set()
    for i, f in enumerate(findings):
        if f.type in seen:
            raise DiagnosisError(f"{where}.findings[{i}].type: {f.type!r} appears twice")
        seen.add(f.type)
    presence = {}
    for key, value in _mapping(data.get("presence", {}), f"{where}.presence").items():
        _choice(key, f"{where}.presence key", TYPE_NAMES)
        presence[key] = _number(value, f"{where}.presence.{key}", 0.0, 1.0)
    overall = data.get("overall_severity")
    overall = (overall_severity(f.severity for f in findings) if overall is None
               else _number(overall, f"{where}.overall_severity", 0.0, 1.0))
    sources = {}
    for key, value in _mapping(data.get("sources", {}), f"{where}.sources").items():
        sources[_string(key, f"{where}.sources key")] = _choice(value, f"{where}.sources.{key}",
                                                                 SOURCES)
    reasoning = []
    for i, step in enumerate(_list(data.get("reasoning", []), f"{where}.reasoning")):
        step = _mapping(step, f"{where}.reasoning[{i}]")
        reasoning.append(ReasoningStep(
            _choice(step.get("stage"), f"{where}.reasoning[{i}].stage", REASONING_STAGES),
            _string(step.get("text", ""), f"{where}.reasoning[{i}].text")))
    objects = [_string(o, f"{where}.objects[{i}]")
               for i, o in enumerate(_list(data.get("objects", []), f"{where}.objects"))]
    notes = [_string(n, f"{where}.notes[{i}]")
             for i, n in enumerate(_list(data.get("notes", []), f"{where}.notes"))]
    return Diagnosis(findings=findings, overall_severity=float(overall), presence=presence,
                     scene=_string(data.get("scene", ""), f"{where}.scene"), objects=objects,
                     sources=sources, reasoning=reasoning, notes=notes)


def json_schema() -> dict:
    """JSON Schema of a diagnosis, generated from the taxonomy (for docs and VLM prompts)."""
    finding_variants = []
    for t in TAXONOMY:
        finding_variants.append({
            "type": "object",
            "required": ["type", "params"],
            "properties": {
                "type": {"const": t.name},
                "params": {"type": "object", "additionalProperties": False, "properties": {
                    p.key: {"type": "number", "minimum": p.low, "maximum": p.high,
                            "description": f"{p.description} [{p.unit}]; grid {list(p.grid)}"}
                    for p in t.params}},
                "severity": {"type": "number", "minimum": 0, "maximum": 1},
                "tier": {"enum": list(TIERS)},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "source": {"enum": list(SOURCES)},
            },
        })
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ReasonRestore diagnosis",
        "type": "object",
        "required": ["findings"],
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "findings": {"type": "array", "items": {"oneOf": finding_variants}},
            "overall_severity": {"type": "number", "minimum": 0, "maximum": 1},
            "presence": {"type": "object", "properties": {
                n: {"type": "number", "minimum": 0, "maximum": 1} for n in TYPE_NAMES}},
            "scene": {"type": "string"},
            "objects": {"type": "array", "items": {"type": "string"}},
            "sources": {"type": "object", "additionalProperties": {"enum": list(SOURCES)}},
            "reasoning": {"type": "array", "items": {"type": "object", "properties": {
                "stage": {"enum": list(REASONING_STAGES)}, "text": {"type": "string"}}}},
            "notes": {"type": "array", "items": {"type": "string"}},
        },
    }


# --- chain of thought -------------------------------------------------------------------

def describe_params(f: Finding) -> str:
    """A finding's parameters in plain words ("sigma=25 0-255, shot=5 0-255")."""
    t = get_type(f.type)
    parts = []
    for p in t.params:
        v = f.params.get(p.key, p.identity)
        if v == p.identity and len(t.params) > 1:
            continue
        parts.append(f"{p.key}={v:.3g}{'' if p.unit in ('x', 'QF') else ' ' + p.unit}")
    return ", ".join(parts) or "parameters at their neutral values"


def build_reasoning(d: Diagnosis, observation: str = "") -> list[ReasoningStep]:
    """observation -> degradations -> severity -> restoration plan, in plain words."""
    steps = [ReasoningStep("observation", observation or (
        f"Scene: {d.scene}." if d.scene else "The image content was not described."))]
    if d.findings:
        found = "; ".join(f"{get_type(f.type).label.lower()} ({describe_params(f)}, "
                          f"confidence {f.confidence:.2f})" for f in d.findings)
        steps.append(ReasoningStep("degradations", f"Detected {found}."))
        sev = "; ".join(f"{f.type} {f.severity:.2f} ({f.tier})" for f in d.findings)
        steps.append(ReasoningStep("severity", f"Severity {sev}; overall "
                                   f"{d.overall_severity:.2f} ({tier_of(d.overall_severity)})."))
        plan = " -> ".join(get_type(n).restore_verb for n in d.plan())
        steps.append(ReasoningStep("plan", f"Restore in reverse order of image formation: "
                                   f"{plan}."))
    else:
        steps.append(ReasoningStep("degradations", "No degradation is above the detection "
                                   "threshold."))
        steps.append(ReasoningStep("severity", "Overall severity 0.00 (mild)."))
        steps.append(ReasoningStep("plan", "Leave the image as it is."))
    return steps
