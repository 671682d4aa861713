"""From a diagnosis to what the restorer (and a diffusion sampler) takes.

* ``encode_prior`` turns a diagnosis into the fixed-length vector that drives the restorer's
  degradation-aware blocks. Its layout derives from the taxonomy: a "diagnosis given" flag,
  then per type its presence, severity and every parameter normalised to [0, 1]. No diagnosis
  is the all-zero vector (the network was trained with dropped diagnoses, so zero means
  "blind restoration", not "clean").
* ``apply_overrides`` is user-guided restoration: a user can switch a type off, force one on,
  or set its severity or parameters; the result is tagged with source "user".
* ``build_prompts`` phrases the diagnosis for diffusion samplers: positive/negative prompts
  mentioning exactly the diagnosed types, and denoise/steps/cfg/seed from severity. It is a
  thin wrapper: the policy lives in :mod:`.controller`.

Pure Python apart from ``encode_prior_batch`` (torch, imported lazily).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Sequence

from ..reasoner.diagnosis import Diagnosis, Finding
from ..reasoner.taxonomy import TAXONOMY, TYPE_NAMES, get_type
from .controller import DEFAULT_SEED, PromptPlan, control, control_batch


def prior_dim() -> int:
    return 1 + sum(2 + len(t.params) for t in TAXONOMY)


def type_slice(type_name: str) -> slice:
    """Where ``type_name``'s presence, severity and parameters sit in :func:`encode_prior`'s
    vector."""
    start = 1
    for t in TAXONOMY:
        if t.name == type_name:
            return slice(start, start + 2 + len(t.params))
        start += 2 + len(t.params)
    raise KeyError(f"type_name: {type_name!r} is not a taxonomy type; expected one of "
                   f"{list(TYPE_NAMES)}")


def encode_prior(diagnosis: Diagnosis | None) -> list[float]:
    if diagnosis is None:
        return [0.0] * prior_dim()
    vec = [1.0]
    for t in TAXONOMY:
        f = diagnosis.finding(t.name)
        if f is None:
            vec += [0.0, 0.0] + [(p.identity - p.low) / (p.high - p.low) for p in t.params]
            continue
        vec += [1.0, float(f.severity)]
        for p in t.params:
            v = p.clip(f.params.get(p.key, p.identity))
            vec.append((v - p.low) / (p.high - p.low))
    return vec


def encode_prior_batch(diagnoses: Sequence[Diagnosis | None], device=None, dtype=None):
    import torch
    return torch.tensor([encode_prior(d) for d in diagnoses], device=device,
                        dtype=dtype or torch.float32)


# --- user-guided restoration ------------------------------------------------------------

def params_for_severity(type_name: str, target: float) -> dict[str, float]:
    return get_type(type_name).params_for_severity(target)


_OVERRIDE = re.compile(r"^\s*([a-z_]+)\s*(?::\s*(.*))?$")


def apply_overrides(diagnosis: Diagnosis | None, overrides: str) -> Diagnosis:
    """Apply ``"noise: severity=0.8; blur: off; haze: beta=1.5; jpeg: on"``.

    ``off`` removes a type, ``on`` adds it at moderate severity if absent, ``severity=x``
    sets its severity (parameters follow), ``key=value`` sets a parameter. Errors name the
    part that could not be read."""
    base = diagnosis or Diagnosis.from_findings([])
    if not overrides or not overrides.strip():
        return base
    findings = {f.type: f for f in base.findings}
    touched = []
    for i, part in enumerate(p for p in re.split(r"[;\n]", overrides) if p.strip()):
        m = _OVERRIDE.match(part)
        if not m or m.group(1) not in TYPE_NAMES:
            raise ValueError(f"overrides part {i + 1} {part.strip()!r}: expected "
                             f"'<type>: off|on|severity=x|key=value' with type one of "
                             f"{list(TYPE_NAMES)}")
        name, body = m.group(1), (m.group(2) or "on").strip()
        t = get_type(name)
        touched.append(name)
        if body == "off":
            findings.pop(name, None)
            continue
        current = findings.get(name)
        params = dict(current.params) if current else params_for_severity(name, 0.5)
        if body != "on":
            for kv in body.split(","):
                if "=" not in kv:
                    raise ValueError(f"overrides part {i + 1}: expected key=value, got "
                                     f"{kv.strip()!r}")
                key, value = (s.strip() for s in kv.split("=", 1))
                try:
                    number = float(value)
                except ValueError:
                    raise ValueError(f"overrides part {i + 1}: {key} must be a number, got "
                                     f"{value!r}") from None
                if key == "severity":
                    if not 0.0 <= number <= 1.0:
                        raise ValueError(f"overrides part {i + 1}: severity must be in [0, 1], "
                                         f"got {number}")
                    params = params_for_severity(name, number)
                elif key in t.keys:
                    params[key] = t.param(key).clip(number)
                else:
                    raise ValueError(f"overrides part {i + 1}: {name} has no parameter {key!r}; "
                                     f"expected severity or one of {list(t.keys)}")
        findings[name] = Finding.from_params(name, params, 1.0, "user")
    presence = dict(base.presence)
    presence.update({n: (1.0 if n in findings else 0.0) for n in touched})
    sources = dict(base.sources)
    sources["overrides"] = "user"
    notes = list(base.notes) + [f"user override: {overrides.strip()}"]
    d = Diagnosis.from_findings(findings.values(), presence=presence, scene=base.scene,
                                objects=base.objects, sources=sources,
                                observation=base.reasoning[0].text if base.reasoning else "",
                                notes=notes)
    return d


# --- prompts for diffusion samplers -----------------------------------------------------
# The policy lives in :mod:`.controller`; these names stay here for existing callers.

def build_prompts(diagnosis: Diagnosis, instruction: str = "",
                  seed: int = DEFAULT_SEED) -> PromptPlan:
    """Prompts naming exactly the diagnosed types, and denoise/steps/cfg growing with the
    overall severity (:func:`.controller.control`)."""
    return control(diagnosis, instruction, "", seed)


@dataclass
class RestorationPrior:
    """What flows along the PRIOR socket: everything the restorer is conditioned on."""

    diagnoses: list  # one Diagnosis (or None for blind restoration) per batch image
    instruction: str = ""
    prompts: list = field(default_factory=list)  # one PromptPlan per image

    def with_diagnoses(self, diagnoses) -> "RestorationPrior":
        return replace(self, diagnoses=list(diagnoses))


def make_prior(diagnoses: Sequence[Diagnosis | None], instruction: str = "",
               overrides: str = "", seed: int = DEFAULT_SEED) -> RestorationPrior:
    guided = [apply_overrides(d, overrides) if overrides.strip() else d for d in diagnoses]
    prompts = control_batch(guided, instruction, seed)
    return RestorationPrior(list(guided), instruction, prompts)
