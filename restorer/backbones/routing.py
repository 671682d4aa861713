"""From a diagnosis to a restoration plan over the backbones the user wired in.

The plan follows :meth:`Diagnosis.plan` -- image formation undone backwards (JPEG -> noise ->
low resolution -> blur -> low light -> rain -> haze), each step seeing the degradation it was
trained on -- and keeps only the types the diagnosis shows. Each type goes to a backbone that
declares it (``Backbone.handles``); among several, the most specialised one (fewest handled
types) wins, ties going to the one wired first, so a dedicated denoiser beats the built-in
generalist for noise while the generalist still covers what nothing else does. Consecutive
types routed to the same backbone merge into one step (the built-in restorer, conditioned on
the whole diagnosis, fixes them in one pass). Types no wired backbone fixes are reported as
skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from ...reasoner.diagnosis import Diagnosis
from ...reasoner.taxonomy import get_type
from .base import Backbone

__all__ = ["PlanStep", "RoutePlan", "route", "candidates_for"]


@dataclass
class PlanStep:
    types: tuple[str, ...]
    index: int          # position of the backbone in the wired list
    backbone: Backbone

    def describe(self) -> str:
        verbs = ", ".join(get_type(t).restore_verb for t in self.types)
        return f"{verbs} ({', '.join(self.types)}) with {self.backbone.name} [{self.backbone.arch}]"


@dataclass
class RoutePlan:
    steps: list[PlanStep] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (type, why)

    @property
    def types(self) -> list[str]:
        return [t for s in self.steps for t in s.types]

    def describe(self) -> str:
        if not self.steps and not self.skipped:
            return "Plan: nothing to restore (the diagnosis shows no degradation)."
        lines = ["Plan:"] + [f"  {i + 1}. {s.describe()}" for i, s in enumerate(self.steps)]
        lines += [f"  skipped {t}: {why}" for t, why in self.skipped]
        return "\n".join(lines)


def _specialism(b: Backbone, i: int) -> tuple[int, int]:
    return (len(b.handles), i)


def route(diagnosis: Optional[Diagnosis], backbones: Sequence[Backbone],
          exclude: Sequence[str] = ()) -> RoutePlan:
    """The ordered plan for ``diagnosis`` over ``backbones`` (types in ``exclude`` are left
    out, e.g. those a closed loop already failed to improve). No diagnosis (blind): one step
    with the first backbone, which fixes whatever it fixes."""
    if not backbones:
        raise ValueError("route: no backbone wired in")
    plan = RoutePlan()
    if diagnosis is None:
        plan.steps.append(PlanStep(tuple(backbones[0].handles), 0, backbones[0]))
        return plan
    for t in diagnosis.plan():
        if t in exclude:
            plan.skipped.append((t, "a previous step did not lower the residual severity"))
            continue
        able = [(i, b) for i, b in enumerate(backbones) if b.fixes(t)]
        if not able:
            plan.skipped.append((t, "no wired backbone fixes it"))
            continue
        i, b = min(able, key=lambda ib: _specialism(ib[1], ib[0]))
        if plan.steps and plan.steps[-1].index == i:
            plan.steps[-1].types += (t,)
        else:
            plan.steps.append(PlanStep((t,), i, b))
    return plan


def candidates_for(step: PlanStep, backbones: Sequence[Backbone]) -> list[int]:
    """Indices of every wired backbone that fixes at least one of ``step``'s types: the routed
    one first, then the others by specialism (for best-of-N)."""
    others = [(i, b) for i, b in enumerate(backbones)
              if i != step.index and any(b.fixes(t) for t in step.types)]
    others.sort(key=lambda ib: _specialism(ib[1], ib[0]))
    return [step.index] + [i for i, _ in others]
