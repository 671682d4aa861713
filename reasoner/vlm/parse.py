"""Turn whatever a VLM writes into a valid :class:`~..diagnosis.Diagnosis`.

Models wrap JSON in code fences or prose, think aloud first (``<think>...</think>``), stop
mid-object when they run out of tokens, use single quotes, trailing commas, Python literals,
NaN, repeated keys, invented degradation types, values outside the ranges, strings where
numbers belong, and sometimes emit megabytes of repetition or pure garbage.
:func:`parse_vlm_output` accepts all of it and never raises on text:

1. the text is capped (``MAX_CHARS``); a ``</think>`` block, fenced blocks and the whole text
   are searched, in that order, for the first JSON object (or array) that looks like an answer;
   it is read strictly first, then with a lenient reader that accepts the usual mistakes and
   closes a truncated object;
2. the object is read against the taxonomy: unknown types and keys are dropped, out-of-range
   values clamped, wrong types coerced where unambiguous, duplicated types merged (first
   kept) -- each fix is written into ``notes``;
3. the findings get the VLM's (uncalibrated) confidence, lowered for every fix; a structural
   repair (truncation, lenient JSON, an array instead of an object, no findings list) or no
   answer at all marks the diagnosis *low confidence*: its first note starts with
   ``"low confidence:"`` and the raw text (truncated) is attached to the notes.

The model can never set ``sources``, ``notes``, ``presence`` or confidences itself: those
keys are ignored (and reported), so text injected into the image cannot pose as another
source. Everything returned survives ``Diagnosis.from_json(d.to_json())``.

:class:`VLMOutputError` (a :class:`~..diagnosis.DiagnosisError`, hence a ``ValueError``) is the
only error: raised by :func:`extract_answer` when no JSON object can be found, and by the
parse functions only for an argument that is not text at all (e.g. an int).

Pure Python: no torch.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..diagnosis import Diagnosis, DiagnosisError, Finding
from ..taxonomy import TIERS, TYPE_NAMES, get_type, tier_of

__all__ = ["VLMOutputError", "ParseResult", "parse_vlm_output", "parse_vlm_answer",
           "extract_answer", "is_low_confidence", "normalise_type", "MAX_CHARS",
           "VLM_CONFIDENCE", "LOW_CONFIDENCE", "LOW_CONFIDENCE_NOTE", "VLM_SOURCES"]

MAX_CHARS = 262_144          # text beyond this is ignored (a runaway model can write MBs)
MAX_RAW_NOTE = 2_000         # raw text attached to a low-confidence diagnosis
MAX_NOTES = 40
MAX_DEPTH = 64
MAX_STARTS = 24              # candidate "{" / "[" positions tried per text segment
MAX_LENIENT = 6              # of which read leniently (each may scan to the end)
MAX_FINDINGS = 32
MAX_FACTORS, MAX_FACTOR_CHARS = 8, 160
MAX_OBJECTS, MAX_OBJECT_CHARS = 12, 60
MAX_SCENE_CHARS, MAX_REASONING_CHARS = 200, 1_000

VLM_CONFIDENCE = 0.6         # an uncalibrated prior: the analyzer's numbers are calibrated
LOW_CONFIDENCE = 0.3
ISSUE_PENALTY = 0.85         # confidence factor per fix the parser had to make
MIN_CONFIDENCE = 0.05
LOW_CONFIDENCE_NOTE = "low confidence:"
VLM_SOURCES = {"findings": "vlm", "scene": "vlm", "objects": "vlm", "factors": "vlm",
               "observation": "vlm"}


class VLMOutputError(DiagnosisError):
    """No usable answer in a model's output (or an argument that is not text)."""


# --- small helpers --------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _clean(text: str, limit: int) -> str:
    """Printable text, at most ``limit`` characters (lone surrogates become '?')."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = _CONTROL.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[:limit].rstrip() + "..."


def _show(value, limit: int = 40) -> str:
    """A short printable rendering of a value for a note."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - exotic objects
        text = f"<{type(value).__name__}>"
    return _clean(text, limit)


def is_low_confidence(d: Diagnosis) -> bool:
    """Whether :func:`parse_vlm_output` (or the fusion) marked ``d`` as low confidence."""
    return any(n.startswith(LOW_CONFIDENCE_NOTE) for n in d.notes)


_TYPE_ALIASES = {
    "noise": "noise", "noisy": "noise", "grain": "noise", "gaussian_noise": "noise",
    "sensor_noise": "noise", "shot_noise": "noise", "iso_noise": "noise", "denoise": "noise",
    "blur": "blur", "blurry": "blur", "motion_blur": "blur", "defocus": "blur",
    "defocus_blur": "blur", "gaussian_blur": "blur", "out_of_focus": "blur", "deblur": "blur",
    "jpeg": "jpeg", "jpg": "jpeg", "compression": "jpeg", "jpeg_compression": "jpeg",
    "jpeg_artifacts": "jpeg", "jpeg_artefacts": "jpeg", "compression_artifacts": "jpeg",
    "compression_artefacts": "jpeg", "blocking": "jpeg",
    "haze": "haze", "hazy": "haze", "fog": "haze", "foggy": "haze", "mist": "haze",
    "smog": "haze", "dehaze": "haze",
    "rain": "rain", "rainy": "rain", "rain_streaks": "rain", "raindrops": "rain",
    "derain": "rain",
    "low_light": "low_light", "lowlight": "low_light", "dark": "low_light",
    "darkness": "low_light", "underexposure": "low_light", "underexposed": "low_light",
    "low_exposure": "low_light",
    "low_resolution": "low_resolution", "lowres": "low_resolution", "low_res": "low_resolution",
    "low_resolution_upscaled": "low_resolution", "downsampling": "low_resolution",
    "downsampled": "low_resolution", "pixelation": "low_resolution",
    "pixelated": "low_resolution", "upscaled": "low_resolution",
    "super_resolution": "low_resolution", "resolution": "low_resolution",
}


def normalise_type(name) -> str | None:
    """A taxonomy type name for a model's spelling ("Motion blur" -> "blur"), or None."""
    if not isinstance(name, str):
        return None
    key = re.sub(r"[\s\-./]+", "_", name.strip().lower()).strip("_")
    if key in TYPE_NAMES:
        return key
    return _TYPE_ALIASES.get(key)


_NUMBER_AT_START = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%?)")


def _to_number(value) -> tuple[float | None, bool]:
    """(float or None, was_coerced). Numbers pass; numeric strings ("25", "25 px", "80%")
    are read; booleans, containers and words are not numbers."""
    if isinstance(value, bool):
        return None, False
    if isinstance(value, (int, float)):
        try:
            return float(value), False
        except OverflowError:  # an int with hundreds of digits
            return math.inf if value > 0 else -math.inf, False
    if isinstance(value, str):
        s = value.strip().lower()
        if s in ("nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"):
            return float(s.replace("infinity", "inf")), True
        m = _NUMBER_AT_START.match(value)
        if m:
            v = float(m.group(1))
            return (v / 100.0 if m.group(2) else v), True
    return None, False


def _params_for_severity(type_name: str, target: float) -> dict[str, float]:
    return get_type(type_name).params_for_severity(target)


# --- finding the JSON -----------------------------------------------------------------------

class _Fail(Exception):
    pass


class _EOF(Exception):
    pass


_WS = re.compile(r"(?:\s+|//[^\n]*|/\*.*?(?:\*/|\Z)|#[^\n]*)+", re.S)
_DQ = re.compile(r'((?:[^"\\]|\\.)*)("?)', re.S)  # after the opening quote
_SQ = re.compile(r"((?:[^'\\]|\\.)*)('?)", re.S)
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_LITERALS = {"true": True, "false": False, "null": None, "none": None, "nan": math.nan,
             "infinity": math.inf, "inf": math.inf}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "'": "'",
            "\\": "\\", "/": "/"}
_STRICT_STRING = json.JSONDecoder(strict=False)


def _unescape(body: str) -> str:
    try:
        return _STRICT_STRING.decode('"' + body + '"')
    except ValueError:
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body,
                      flags=re.S)


class _Lenient:
    """A forgiving JSON reader: single quotes, bare keys and words, comments, trailing or
    missing commas, ``=`` for ``:``, Python literals, NaN/Infinity, and an end of text inside
    an object (which is closed where it stopped). Token-level, so linear in the text."""

    def __init__(self, text: str, pos: int):
        self.s, self.n, self.pos = text, len(text), pos
        self.truncated = False
        self.duplicates: list[str] = []

    def ws(self):
        m = _WS.match(self.s, self.pos)
        if m:
            self.pos = m.end()

    def parse(self):
        return self.value(0)

    def value(self, depth: int):
        if depth > MAX_DEPTH:
            raise _Fail(f"nested deeper than {MAX_DEPTH} levels")
        self.ws()
        if self.pos >= self.n:
            self.truncated = True
            raise _EOF()
        c = self.s[self.pos]
        if c == "{":
            return self.obj(depth)
        if c == "[":
            return self.arr(depth)
        if c in "\"'":
            return self.string()
        m = _NUM.match(self.s, self.pos)
        if m:
            self.pos = m.end()
            try:
                return float(m.group()) if any(x in m.group() for x in ".eE") \
                    else int(m.group())
            except ValueError:  # more digits than int() accepts
                return float(m.group())
        if c in "+-" and _WORD.match(self.s, self.pos + 1):
            self.pos += 1
            v = self.word()
            return -v if c == "-" and isinstance(v, float) else v
        if _WORD.match(self.s, self.pos):
            return self.word()
        raise _Fail(f"unexpected character {c!r}")

    def word(self):
        m = _WORD.match(self.s, self.pos)
        self.pos = m.end()
        w = m.group()
        return _LITERALS.get(w.lower(), w)

    def string(self) -> str:
        q = self.s[self.pos]
        m = (_DQ if q == '"' else _SQ).match(self.s, self.pos + 1)
        self.pos = m.end()
        if not m.group(2):
            self.truncated = True
        return _unescape(m.group(1))

    def key(self) -> str:
        c = self.s[self.pos]
        if c in "\"'":
            return self.string()
        m = _WORD.match(self.s, self.pos) or _NUM.match(self.s, self.pos)
        if not m:
            raise _Fail(f"expected a key, got {c!r}")
        self.pos = m.end()
        return m.group()

    def obj(self, depth: int) -> dict:
        self.pos += 1
        out: dict = {}
        while True:
            self.ws()
            if self.pos >= self.n:
                self.truncated = True
                return out
            c = self.s[self.pos]
            if c in "}]":
                self.pos += 1
                return out
            if c == ",":
                self.pos += 1
                continue
            key = self.key()
            if self.truncated:
                return out
            self.ws()
            if self.pos >= self.n:
                self.truncated = True
                return out
            if self.s[self.pos] not in ":=":
                raise _Fail("expected ':' after a key")
            self.pos += 1
            try:
                v = self.value(depth + 1)
            except _EOF:
                return out
            if key in out:
                self.duplicates.append(key)
            out[key] = v
            if self.truncated:
                return out

    def arr(self, depth: int) -> list:
        self.pos += 1
        out: list = []
        while True:
            self.ws()
            if self.pos >= self.n:
                self.truncated = True
                return out
            c = self.s[self.pos]
            if c in "]}":
                self.pos += 1
                return out
            if c == ",":
                self.pos += 1
                continue
            try:
                out.append(self.value(depth + 1))
            except _EOF:
                return out
            if self.truncated:
                return out


_ANSWER_KEYS = {"findings", "degradations", "degradation", "scene", "objects", "reasoning",
                "type", "params"}


def _keys(obj) -> set:
    return {k.strip().lower() for k in obj if isinstance(k, str)} if isinstance(obj, dict) \
        else set()


def _looks_like_answer(obj) -> bool:
    if isinstance(obj, dict):
        return bool(_keys(obj) & _ANSWER_KEYS)
    if isinstance(obj, list):
        return any(isinstance(x, dict) and _keys(x) & _ANSWER_KEYS for x in obj[:8])
    return False


def _pairs_hook(duplicates: list):
    def hook(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                duplicates.append(k)
            out[k] = v
        return out
    return hook


def _segments(text: str) -> list[str]:
    """Where to look, best first: after a closing </think>, inside code fences, everything."""
    segs = []
    if "</think>" in text:
        segs.append(text.rsplit("</think>", 1)[1])
    for m in re.finditer(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\n?(.*?)(?:```|\Z)",
                         text, re.S):
        segs.append(m.group(1))
    segs.append(text)
    unique = []
    for s in segs:
        if s.strip() and s not in unique:
            unique.append(s)
    return unique


@dataclass
class _Found:
    value: Any
    lenient: bool
    truncated: bool
    duplicates: list


def _read_at(seg: str, start: int, allow_lenient: bool) -> _Found | None:
    dups: list = []
    try:
        value, _ = json.JSONDecoder(object_pairs_hook=_pairs_hook(dups)).raw_decode(seg, start)
        return _Found(value, False, False, dups)
    except (ValueError, RecursionError):
        pass
    if not allow_lenient:
        return None
    reader = _Lenient(seg, start)
    try:
        value = reader.parse()
    except (_Fail, _EOF, RecursionError):
        return None
    return _Found(value, True, reader.truncated, reader.duplicates)


_KEYED = re.compile(r"""\{\s*["']?(?:reasoning|findings|degradations|scene|objects)["']?\s*:""")


def _find_json(text: str) -> _Found | None:
    fallback = None
    for seg in _segments(text):
        # Objects opening with an answer key first (they may sit after much clutter), then
        # every "{" / "[" in order.
        keyed = [m.start() for m in _KEYED.finditer(seg)][:8]
        plain = [m.start() for m in re.finditer(r"[{\[]", seg)][:MAX_STARTS]
        starts = keyed + [p for p in plain if p not in keyed]
        for i, start in enumerate(starts):
            found = _read_at(seg, start, allow_lenient=i < MAX_LENIENT + len(keyed))
            if found is None:
                continue
            if _looks_like_answer(found.value):
                return found
            if fallback is None and isinstance(found.value, dict):
                fallback = found
    return fallback


def _prepare(text) -> tuple[str, list[str]]:
    if text is None:
        return "", []
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise VLMOutputError(f"model output: expected text, got {type(text).__name__}")
    issues = []
    if len(text) > MAX_CHARS:
        issues.append(f"output of {len(text)} characters capped at {MAX_CHARS}")
        text = text[:MAX_CHARS]
    return text, issues


def extract_answer(text) -> tuple[Any, list[str]]:
    """The JSON object (or array) a model's text holds, and notes on the repairs needed.

    Raises :class:`VLMOutputError` with a clear message when there is none."""
    text, issues = _prepare(text)
    if not text.strip():
        raise VLMOutputError("model output: empty (no JSON object to read)")
    found = _find_json(text)
    if found is None:
        raise VLMOutputError(f"model output: no JSON object found in {len(text)} characters "
                             f"(starts {_show(text[:60], 70)})")
    if found.lenient:
        issues.append("the JSON was malformed and read leniently")
    if found.truncated:
        issues.append("the output stops mid-answer (truncated); what was written is used")
    for k in dict.fromkeys(found.duplicates):
        issues.append(f"key {_show(k)} appears more than once; the last value is used")
    return found.value, issues


# --- reading the answer ---------------------------------------------------------------------

@dataclass
class ParseResult:
    """Everything :func:`parse_vlm_answer` learned. ``issues`` lists every fix; ``structural``
    tells whether the JSON itself had to be repaired or reshaped."""

    diagnosis: Diagnosis
    answer: Any = None
    issues: list = field(default_factory=list)
    structural: bool = False
    low_confidence: bool = False
    factors: dict = field(default_factory=dict)
    stated_severity: dict = field(default_factory=dict)
    reasoning: str = ""

    @property
    def ok(self) -> bool:
        """An answer object was found (possibly after repairs)."""
        return self.answer is not None

    @property
    def clean(self) -> bool:
        """Valid as written: found, nothing repaired, clamped, dropped or coerced."""
        return self.ok and not self.issues and not self.structural


_ALIASES = {
    "findings": ("findings", "degradations", "degradation", "detections", "issues"),
    "scene": ("scene", "scene_description", "description", "caption"),
    "objects": ("objects", "subjects", "object", "tags", "content"),
    "reasoning": ("reasoning", "reason", "explanation", "analysis", "rationale", "thoughts",
                  "chain_of_thought", "observation"),
}
_IGNORED_QUIETLY = {"tier", "severity", "overall_severity", "overall", "confidence", "summary"}


def _pick(obj: dict, field_name: str, issues: list):
    norm = {k.strip().lower(): k for k in obj if isinstance(k, str)}
    for alias in _ALIASES[field_name]:
        if alias in norm:
            if alias != field_name:
                issues.append(f"read {_show(norm[alias])} as {field_name!r}")
            return obj[norm[alias]], True
    return None, False


def _text_list(value, where: str, limit: int, chars: int, issues: list) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in re.split(r"[,;\n]", value) if v.strip()]
    if not isinstance(value, list):
        issues.append(f"{where}: expected a list of words, got {type(value).__name__}; "
                      f"ignored")
        return []
    out, seen = [], set()
    for item in value:
        if isinstance(item, dict):  # {"name": "car"} / {"label": ...}
            item = next((item[k] for k in ("name", "label", "object", "text")
                         if isinstance(item.get(k), str)), None)
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            continue
        text = _clean(str(item), chars)
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    if len(out) > limit:
        issues.append(f"{where}: {len(out)} entries, kept the first {limit}")
        out = out[:limit]
    return out


def _text(value, where: str, limit: int, issues: list) -> str:
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
        value = " ".join(str(v.get("text", "")) for v in value if isinstance(v.get("text"), str))
    if not isinstance(value, str):
        issues.append(f"{where}: expected text, got {type(value).__name__}; ignored")
        return ""
    return _clean(value, limit)


def _findings_list(raw, issues: list) -> list:
    """The findings as a list of (index label, raw entry)."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        if "type" in _keys(raw):
            issues.append("findings: a single object instead of a list; read as one finding")
            return [("findings[0]", raw)]
        # {"noise": {"sigma": 25, ...}, "blur": {...}}: type -> entry or params
        issues.append("findings: an object keyed by type instead of a list; converted")
        out = []
        for k, v in raw.items():
            entry = dict(v) if isinstance(v, dict) else {"severity": v}
            if not ({"params", "severity", "tier", "factors"} & _keys(entry)):
                entry = {"params": entry}
            entry.setdefault("type", k)
            out.append((f"findings.{_clean(str(k), 30)}", entry))
        return out
    if not isinstance(raw, list):
        issues.append(f"findings: expected a list, got {type(raw).__name__}; ignored")
        return []
    return [(f"findings[{i}]", f) for i, f in enumerate(raw)]


@dataclass
class _Entry:
    type: str
    params: dict
    severity: float
    factors: list
    stated_severity: float | None
    issues: list


def _read_finding(label: str, raw, issues: list) -> _Entry | None:
    if isinstance(raw, str) and normalise_type(raw):
        raw = {"type": raw}
        issues.append(f"{label}: a bare type name; read as a finding without parameters")
    if not isinstance(raw, dict):
        issues.append(f"{label}: expected an object, got {type(raw).__name__}; dropped")
        return None
    norm = {k.strip().lower(): v for k, v in raw.items() if isinstance(k, str)}
    given = norm.get("type", norm.get("name", norm.get("degradation")))
    name = normalise_type(given)
    if name is None:
        issues.append(f"{label}.type {_show(given)} is not a known degradation type "
                      f"(expected one of {list(TYPE_NAMES)}); dropped")
        return None
    t = get_type(name)
    own: list[str] = []
    if isinstance(given, str) and given != name:
        own.append(f"{label}.type {_show(given)} read as {name!r}")
    raw_params = norm.get("params", norm.get("parameters"))
    loose = {k: v for k, v in norm.items() if k in t.keys}
    if raw_params is None and loose:
        raw_params = loose  # {"type": "noise", "sigma": 25}
    if raw_params is not None and not isinstance(raw_params, dict):
        own.append(f"{label}.params: expected an object, got {type(raw_params).__name__}; "
                   f"ignored")
        raw_params = None
    params: dict[str, float] = {}
    for key, value in (raw_params or {}).items():
        k = key.strip().lower() if isinstance(key, str) else key
        if k not in t.keys:
            own.append(f"{label}.params.{_clean(str(key), 30)}: {name} has no such parameter "
                       f"(keys {list(t.keys)}); dropped")
            continue
        spec = t.param(k)
        v, coerced = _to_number(value)
        if v is None or not math.isfinite(v):
            own.append(f"{label}.params.{k}: {_show(value)} is not a finite number; dropped")
            continue
        if coerced:
            own.append(f"{label}.params.{k}: read {_show(value)} as {v:g}")
        if not spec.low <= v <= spec.high:
            if spec.circular:
                period = spec.high - spec.low
                wrapped = (v - spec.low) % period + spec.low
                own.append(f"{label}.params.{k}: {v:g} wrapped to {wrapped:g}")
                v = wrapped
            else:
                own.append(f"{label}.params.{k}: {v:g} is outside [{spec.low:g}, "
                           f"{spec.high:g}] {spec.unit}; clamped to {spec.clip(v):g}")
                v = spec.clip(v)
        params[k] = float(v)

    stated = None
    if "severity" in norm:
        v, _ = _to_number(norm["severity"])
        if v is None or not math.isfinite(v):
            own.append(f"{label}.severity: {_show(norm['severity'])} is not a finite number; "
                       f"ignored")
        else:
            if not 0.0 <= v <= 1.0:
                c = min(1.0, max(0.0, v))
                own.append(f"{label}.severity: {v:g} is outside [0, 1]; clamped to {c:g}")
                v = c
            stated = v
    tier = norm.get("tier")
    if tier is not None and (not isinstance(tier, str) or tier.strip().lower() not in TIERS):
        own.append(f"{label}.tier: {_show(tier)} is not one of {list(TIERS)}; ignored")
        tier = None
    tier = tier.strip().lower() if isinstance(tier, str) else None

    if params:
        full = {**t.identity_params(), **params}
        severity = float(t.severity(full))
        if stated is not None and abs(stated - severity) > 0.2:
            own.append(f"{label}.severity: {stated:.2f} stated but the parameters imply "
                       f"{severity:.2f}; the parameters' value is used")
    elif stated is not None:
        full = _params_for_severity(name, stated)
        severity = float(t.severity(full))
    elif tier is not None:
        severity = {TIERS[0]: 1 / 6, TIERS[1]: 0.5, TIERS[2]: 5 / 6}[tier]
        full = _params_for_severity(name, severity)
        severity = float(t.severity(full))
        own.append(f"{label}: only a tier was given; parameters set for a {tier} {name}")
    else:
        full = _params_for_severity(name, 0.5)
        severity = float(t.severity(full))
        own.append(f"{label}: no parameters, severity or tier; assumed moderate")
    near = {tier_of(max(0.0, severity - 0.02)), tier_of(min(1.0, severity + 0.02))}
    if tier is not None and tier not in near and (params or stated is not None):
        own.append(f"{label}.tier: {tier!r} stated but severity {severity:.2f} is "
                   f"{tier_of(severity)!r}; {tier_of(severity)!r} is used")
    factors = _text_list(norm.get("factors", norm.get("causes")), f"{label}.factors",
                         MAX_FACTORS, MAX_FACTOR_CHARS, own)
    return _Entry(name, full, severity, factors, stated, own)


def _confidence(n_issues: int, low: bool) -> float:
    c = max(MIN_CONFIDENCE, VLM_CONFIDENCE * ISSUE_PENALTY ** n_issues)
    return min(c, LOW_CONFIDENCE) if low else c


def _raw_note(text: str) -> str:
    shown = text[:MAX_RAW_NOTE].encode("utf-8", "replace").decode("utf-8")
    shown = _CONTROL.sub(" ", shown)
    more = f" (first {MAX_RAW_NOTE} of {len(text)} characters)" if len(text) > MAX_RAW_NOTE \
        else ""
    return f"raw VLM output{more}: {shown}"


def _cap_notes(notes: list[str]) -> list[str]:
    notes = [_clean(n, 300) for n in notes]
    if len(notes) > MAX_NOTES:
        extra = len(notes) - MAX_NOTES + 1
        notes = notes[:MAX_NOTES - 1] + [f"... and {extra} more parser notes"]
    return notes


def parse_vlm_answer(text) -> ParseResult:
    """Read a model's output; never raises on text (see the module doc). Returns the
    diagnosis with what was learned on the way (for rewards and tests)."""
    text, issues = _prepare(text)
    structural = bool(issues)
    answer = None
    try:
        answer, extract_issues = extract_answer(text)
        issues += extract_issues
        structural = structural or bool(extract_issues)
    except VLMOutputError as e:
        return _unreadable(text, str(e), issues)

    if isinstance(answer, list):
        dicts = [x for x in answer if isinstance(x, dict)]
        if dicts and all("type" in _keys(x) for x in dicts) and \
                not any(_keys(x) & {"findings", "degradations"} for x in dicts):
            issues.append("a JSON array instead of an object; read as the findings list")
            obj = {"findings": answer}
        elif dicts:
            issues.append("a JSON array instead of an object; its first object is used")
            obj = dicts[0]
        else:
            return _unreadable(text, "a JSON array without any object", issues)
        structural = True
    else:
        obj = answer
    if not isinstance(obj, dict):
        return _unreadable(text, f"the JSON is a {type(obj).__name__}, not an object",
                           issues)

    low_reasons = []
    raw_findings, has_findings = _pick(obj, "findings", issues)
    if not has_findings and "type" in _keys(obj):
        issues.append("a single finding at the top level; read as the findings list")
        raw_findings, has_findings = [obj], True
        structural = True
    if not has_findings:
        issues.append("no 'findings' list in the answer; reported as no degradation found")
        low_reasons.append("the answer has no findings list")
    scene_raw, _ = _pick(obj, "scene", issues)
    objects_raw, _ = _pick(obj, "objects", issues)
    reasoning_raw, _ = _pick(obj, "reasoning", issues)
    known = {a for names in _ALIASES.values() for a in names} | _IGNORED_QUIETLY
    extra = sorted(k for k in _keys(obj) if k not in known)
    if extra:
        issues.append(f"ignored keys {[_clean(k, 30) for k in extra[:8]]}"
                      f"{' ...' if len(extra) > 8 else ''} (the VLM cannot set them)")

    entries: list[_Entry] = []
    listed = _findings_list(raw_findings, issues) if has_findings else []
    if len(listed) > MAX_FINDINGS:
        issues.append(f"findings: {len(listed)} entries, read the first {MAX_FINDINGS}")
        listed = listed[:MAX_FINDINGS]
    for label, raw in listed:
        e = _read_finding(label, raw, issues)
        if e is None:
            continue
        if any(x.type == e.type for x in entries):
            issues.append(f"{label}: {e.type} appears more than once; the first is kept")
            continue
        entries.append(e)

    scene = _text(scene_raw, "scene", MAX_SCENE_CHARS, issues)
    objects = _text_list(objects_raw, "objects", MAX_OBJECTS, MAX_OBJECT_CHARS, issues)
    reasoning = _text(reasoning_raw, "reasoning", MAX_REASONING_CHARS, issues)

    if structural:
        low_reasons.append("the JSON had to be repaired")
    base_issues = len(issues)
    low = bool(low_reasons) or _confidence(base_issues, False) < LOW_CONFIDENCE
    findings = []
    for e in entries:
        conf = _confidence(base_issues + len(e.issues), low)
        findings.append(Finding(e.type, e.params, e.severity, tier_of(e.severity), conf, "vlm",
                                {}))
        issues += e.issues
    if not low and findings and max(f.confidence for f in findings) < LOW_CONFIDENCE:
        low = True
    if low and not low_reasons:
        low_reasons.append(f"{len(issues)} parts of the answer had to be fixed")
    conf = _confidence(base_issues, low)
    presence = {n: round(0.5 - conf / 2, 4) for n in TYPE_NAMES}
    for f in findings:
        presence[f.type] = round(0.5 + f.confidence / 2, 4)

    factors = {e.type: e.factors for e in entries if e.factors}
    notes = []
    if low:
        notes.append(f"{LOW_CONFIDENCE_NOTE} {'; '.join(low_reasons)}")
    notes += issues
    notes = _cap_notes(notes)
    if low:
        notes.append(_raw_note(text))
    observation = reasoning or (f"Scene: {scene}." if scene else "")
    d = Diagnosis.from_findings(findings, presence=presence, scene=scene, objects=objects,
                                sources=dict(VLM_SOURCES), observation=observation,
                                notes=notes)
    add_factors_to_reasoning(d, factors)
    return ParseResult(d, answer, issues, structural, low, factors,
                       {e.type: e.stated_severity for e in entries
                        if e.stated_severity is not None}, reasoning)


def add_factors_to_reasoning(d: Diagnosis, factors: Mapping[str, list], source: str = "VLM"
                             ) -> None:
    """Append "likely causes" to the diagnosis' degradations step (in place)."""
    if not factors:
        return
    text = "; ".join(f"{t}: {', '.join(fs)}" for t, fs in factors.items() if fs)
    for step in d.reasoning:
        if step.stage == "degradations":
            step.text += f" Likely causes ({source}): {text}."
            return


def _unreadable(text: str, why: str, issues: list) -> ParseResult:
    notes = _cap_notes([f"{LOW_CONFIDENCE_NOTE} no usable answer from the VLM ({why})"]
                       + issues) + [_raw_note(text)]
    d = Diagnosis.from_findings([], presence={}, sources={"findings": "vlm", "scene": "vlm"},
                                observation="The VLM's answer could not be read, so nothing "
                                            "is known about this image from it.",
                                notes=notes)
    return ParseResult(d, None, list(issues) + [why], True, True)


def parse_vlm_output(text) -> Diagnosis:
    """A valid diagnosis from any model text (the worst case is an empty, low-confidence one
    with the raw text in its notes). Raises :class:`VLMOutputError` only for non-text."""
    return parse_vlm_answer(text).diagnosis
