"""Closed-loop restoration: residual severity as a test-time reward.

::

    diagnose -> route -> run the first step -> score -> (accept, re-diagnose) -> route -> ...

* After each step the reasoner scores the result (``Reasoner.score``: residual severity, 0 =
  clean) and re-diagnoses it, so the next step is planned on what is *left*, with conditioning
  (sigma, JPEG quality, the prior) read from the new diagnosis.
* Stops when the residual severity is under ``threshold``, when it stops falling (a step that
  does not lower it by at least ``min_improvement`` is rejected -- the image stays as it was --
  and its types are not tried again; the loop ends when no other step is left), when the plan is
  empty, or after ``max_steps`` steps.
* ``best_of_n > 1``: each step tries up to N candidates -- every wired backbone that fixes the
  step's types at strength 1 (the routed one first), then the same at lower strengths
  (``strengths``) -- and keeps the output with the lowest residual severity.

The :class:`LoopReport` holds the chosen path and every intermediate severity (each candidate
of each step, per type), as text for the user and as a dict for programs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import torch

from ...reasoner.taxonomy import TYPE_NAMES
from .restorer import BackboneRestorer, as_backbone_restorer
from .routing import candidates_for, route

__all__ = ["Candidate", "LoopStep", "LoopReport", "closed_loop_restore",
           "closed_loop_restore_batch", "DEFAULT_STRENGTHS"]

DEFAULT_STRENGTHS = (1.0, 0.6)


@dataclass
class Candidate:
    backbone: str
    arch: str
    strength: float
    severity: float
    per_type: dict[str, float]
    conditioning: dict = field(default_factory=dict)


@dataclass
class LoopStep:
    index: int
    types: tuple[str, ...]
    diagnosis: str
    severity_before: float
    candidates: list[Candidate]
    chosen: int              # index into candidates of the best one
    accepted: bool

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]

    @property
    def severity_after(self) -> float:
        return self.best.severity if self.accepted else self.severity_before


@dataclass
class LoopReport:
    threshold: float
    initial_severity: float
    initial_per_type: dict[str, float]
    final_severity: float = 0.0
    steps: list[LoopStep] = field(default_factory=list)
    stop_reason: str = ""

    @property
    def path(self) -> list[str]:
        """The accepted steps, e.g. ``["FBCNN x1.00", "DRUNet x0.60"]``."""
        return [f"{s.best.backbone} x{s.best.strength:.2f}" for s in self.steps if s.accepted]

    @property
    def severities(self) -> list[float]:
        """Residual severity after each accepted step, starting with the input's."""
        return [self.initial_severity] + [s.best.severity for s in self.steps if s.accepted]

    def text(self) -> str:
        accepted = sum(s.accepted for s in self.steps)
        lines = [f"Closed-loop restoration: residual severity {self.initial_severity:.3f} -> "
                 f"{self.final_severity:.3f} in {accepted} accepted step(s) "
                 f"(threshold {self.threshold:.3f}).",
                 f"Stopped: {self.stop_reason}."]
        worst = sorted(self.initial_per_type.items(), key=lambda kv: -kv[1])[:3]
        lines.append("Input: " + ", ".join(f"{k} {v:.3f}" for k, v in worst if v > 0.005)
                     if any(v > 0.005 for _, v in worst) else "Input: no residual degradation.")
        for s in self.steps:
            verdict = "accepted" if s.accepted else "rejected (severity did not fall)"
            b = s.best
            cond = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in b.conditioning.items() if k not in ("prior",))
            lines.append(f"Step {s.index}: {', '.join(s.types)} (diagnosis: {s.diagnosis}) -> "
                         f"{b.backbone} [{b.arch}] strength {b.strength:.2f}"
                         + (f" ({cond})" if cond else "")
                         + f": {s.severity_before:.3f} -> {b.severity:.3f}, {verdict}")
            if len(s.candidates) > 1:
                lines.append("    candidates (overall; " + ", ".join(s.types) + "): " + "; ".join(
                    f"{c.backbone} x{c.strength:.2f} {c.severity:.3f} ("
                    + ", ".join(f"{c.per_type.get(t, 0.0):.3f}" for t in s.types) + ")"
                    for c in s.candidates))
        if self.path:
            lines.append("Path: " + " -> ".join(self.path))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = self.path
        d["severities"] = self.severities
        for s, sd in zip(self.steps, d["steps"]):
            sd["severity_after"] = s.severity_after
        return d


def _score(reasoner, x) -> tuple[float, dict[str, float]]:
    per, overall = reasoner.score(x)
    return float(overall[0]), {n: float(per[0, i]) for i, n in enumerate(TYPE_NAMES)}


def _jsonable(info: dict) -> dict:
    out = {}
    for k, v in info.items():
        out[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
    return out


@torch.no_grad()
def closed_loop_restore(image: torch.Tensor, reasoner, restorers: Sequence,
                        threshold: float = 0.15, max_steps: int = 3, best_of_n: int = 1,
                        strengths: Sequence[float] = DEFAULT_STRENGTHS,
                        min_improvement: float = 0.005, tile: int = 512, overlap: int = 32,
                        progress: Optional[Callable[[int, int], None]] = None,
                        check_interrupt: Optional[Callable[[], None]] = None
                        ) -> tuple[torch.Tensor, LoopReport]:
    """Restore one image ``[1, 3, H, W]`` in a closed loop (see the module doc).

    ``restorers``: one or more restorers (built-in :class:`~..engine.Restorer` or
    :class:`BackboneRestorer`); their backbones together are what routing chooses from.
    Returns the CPU float32 image (same size) and the :class:`LoopReport`."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image: expected one image [1, 3, H, W], got {list(image.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: expected a value in [0, 1], got {threshold}")
    if max_steps < 1 or best_of_n < 1:
        raise ValueError(f"max_steps and best_of_n must be >= 1, got {max_steps}, {best_of_n}")
    options: list[tuple[BackboneRestorer, int]] = []
    for r in restorers:
        br = as_backbone_restorer(r)
        options += [(br, k) for k in range(len(br.backbones))]
    if not options:
        raise ValueError("restorer: connect at least one restorer")
    backbones = [br.backbones[k] for br, k in options]
    strengths = [float(s) for s in strengths] or [1.0]

    x = image.detach().float().cpu()
    sev, per = _score(reasoner, x)
    d = reasoner.diagnose(x)[0]
    report = LoopReport(threshold=float(threshold), initial_severity=sev,
                        initial_per_type=per)
    exhausted: list[str] = []
    runs_done = 0
    est_runs = max_steps * best_of_n

    def run_progress(done, total):
        if progress:
            progress(min(runs_done, est_runs - 1) * total + done, est_runs * total)

    for step_no in range(1, max_steps + 1):
        if sev < threshold:
            report.stop_reason = (f"residual severity {sev:.3f} is below the threshold "
                                  f"{threshold:.3f}")
            break
        plan = route(d, backbones, exclude=exhausted)
        if not plan.steps:
            report.stop_reason = (
                f"the diagnosis shows nothing a wired backbone can fix (skipped: "
                f"{', '.join(t for t, _ in plan.skipped)})" if plan.skipped else
                f"the diagnosis finds no degradation left to fix (the residual severity "
                f"{sev:.3f} comes from types below the detection threshold)")
            break
        step = plan.steps[0]
        indices = candidates_for(step, backbones) if best_of_n > 1 else [step.index]
        specs = [(i, s) for s in strengths for i in indices][:best_of_n]
        results = []
        for i, strength in specs:
            if check_interrupt is not None:
                check_interrupt()
            br, k = options[i]
            b = br.backbones[k]
            y = br.run_backbone(b, x, d, upscale=1.0, strength=strength, tile=tile,
                                overlap=overlap, progress=run_progress,
                                check_interrupt=check_interrupt)
            runs_done += 1
            s_y, per_y = _score(reasoner, y)
            results.append((y, Candidate(b.name, b.arch, strength, s_y, per_y,
                                         _jsonable(b.last_conditioning))))
        chosen = min(range(len(results)), key=lambda j: results[j][1].severity)
        y, best = results[chosen]
        accepted = best.severity < sev - min_improvement
        report.steps.append(LoopStep(step_no, step.types, d.summary(), sev,
                                     [c for _, c in results], chosen, accepted))
        if accepted:
            x, sev, per = y, best.severity, best.per_type
            d = reasoner.diagnose(x)[0]
            continue
        exhausted += [t for t in step.types if t not in exhausted]
        if not route(d, backbones, exclude=exhausted).steps:
            report.stop_reason = (f"residual severity stopped falling ({sev:.3f} -> "
                                  f"{best.severity:.3f} with the best candidate) and no other "
                                  f"step is left")
            break
    else:
        report.stop_reason = (f"max_steps ({max_steps}) reached" if sev >= threshold else
                              f"residual severity {sev:.3f} is below the threshold "
                              f"{threshold:.3f}")
    if not report.stop_reason:
        report.stop_reason = f"max_steps ({max_steps}) reached"
    report.final_severity = sev
    if progress:
        progress(1, 1)
    for r in restorers:
        if not getattr(r, "keep_loaded", True):
            r.offload()
    return x, report


def closed_loop_restore_batch(images: torch.Tensor, reasoner, restorers: Sequence, **kw
                              ) -> tuple[torch.Tensor, list[LoopReport]]:
    """:func:`closed_loop_restore` for each image of ``[B, 3, H, W]``."""
    progress = kw.pop("progress", None)
    b = images.shape[0]
    outs, reports = [], []
    for i in range(b):
        def p(done, total, i=i):
            if progress:
                progress(i * total + done, b * total)
        out, rep = closed_loop_restore(images[i:i + 1], reasoner, restorers, progress=p, **kw)
        outs.append(out)
        reports.append(rep)
    return torch.cat(outs), reports
