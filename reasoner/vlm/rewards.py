"""GRPO-style rewards for fine-tuning a VLM to write the diagnosis.

Each function has the signature TRL's ``GRPOTrainer`` calls reward functions with::

    reward(completions, ground_truth, **kwargs) -> list[float]

``completions`` is a list of model outputs, each a string or a conversation (a list of
``{"role": ..., "content": ...}`` messages whose last assistant message is read; content may
be a string or a list of ``{"type": "text", "text": ...}`` parts). ``ground_truth`` is the
dataset column of the same name, one entry per completion: a
:class:`~..diagnosis.Diagnosis`, its ``to_dict()`` (what :mod:`tools.export_vlm_sft` writes),
its JSON, or an answer in the prompt's format. Other columns arrive as ``kwargs`` and are
ignored. Every reward is in [0, 1]; an unreadable completion scores 0.

* :func:`format_reward` -- 1.0 when the output is one JSON object valid as written (known
  types and keys, values in range, nothing for the parser to fix), 0.5 when the parser could
  still recover a diagnosis from it, 0.0 when it found no answer.
* :func:`type_reward` -- F1 between the predicted and the true sets of degradation types
  (1.0 when both are empty).
* :func:`param_reward` -- closeness on the grid: per parameter ``1 - |error| / (tolerance x
  grid step)`` clipped to [0, 1] (angles wrap around), averaged over a type's parameters, then
  over the union of predicted and true types (a type only one side has scores 0).
* :func:`severity_reward` -- ``1 - |stated - true severity|`` per type, averaged over the union
  of types; a missing type counts as severity 0. The model's stated severity is used when it
  gave one, else the one its parameters imply.

Usage with TRL (the dataset from ``tools/export_vlm_sft.py`` has a ``ground_truth`` column)::

    from reason_restore.reasoner.vlm.rewards import REWARD_FUNCS
    trainer = GRPOTrainer(model=..., reward_funcs=REWARD_FUNCS, train_dataset=ds, ...)

:func:`combined_reward` weighs them into one number. Pure Python: no torch.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from ..diagnosis import Diagnosis, DiagnosisError
from ..taxonomy import get_type
from .parse import ParseResult, parse_vlm_answer

__all__ = ["format_reward", "type_reward", "param_reward", "severity_reward",
           "combined_reward", "make_param_reward", "REWARD_FUNCS", "DEFAULT_WEIGHTS",
           "completion_text", "ground_truth_diagnosis"]

PARAM_TOLERANCE_STEPS = 2.0
DEFAULT_WEIGHTS = {"format": 0.1, "type": 0.4, "param": 0.3, "severity": 0.2}


# --- inputs ---------------------------------------------------------------------------------

def completion_text(completion) -> str:
    """The text of one completion: a string, a message, or a conversation."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        content = completion.get("content", "")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content
                           if isinstance(p, Mapping) and isinstance(p.get("text"), str))
        return ""
    if isinstance(completion, (list, tuple)):
        msgs = [m for m in completion if isinstance(m, Mapping)]
        assistant = [m for m in msgs if m.get("role") == "assistant"] or msgs
        return completion_text(assistant[-1]) if assistant else ""
    return str(completion)


def ground_truth_diagnosis(gt) -> Diagnosis:
    """A ground-truth entry as a diagnosis (see the module doc for accepted forms)."""
    if isinstance(gt, Diagnosis):
        return gt
    if isinstance(gt, (str, bytes)):
        try:
            gt = json.loads(gt)
        except ValueError:
            return parse_vlm_answer(gt).diagnosis
    if isinstance(gt, Mapping):
        try:
            return Diagnosis.from_dict(dict(gt), where="ground_truth")
        except DiagnosisError:
            return parse_vlm_answer(json.dumps(gt)).diagnosis
    raise TypeError(f"ground_truth: expected a Diagnosis, a dict or JSON text, got "
                    f"{type(gt).__name__}")


def _pairs(completions, ground_truth) -> list[tuple[ParseResult, Diagnosis | None]]:
    completions = list(completions)
    if ground_truth is None:
        truths: Sequence[Any] = [None] * len(completions)
    elif isinstance(ground_truth, (Diagnosis, str, bytes, Mapping)):
        truths = [ground_truth] * len(completions)  # one truth for the whole group
    else:
        truths = list(ground_truth)
        if len(truths) != len(completions):
            raise ValueError(f"ground_truth: {len(truths)} entries for {len(completions)} "
                             f"completions")
    return [(parse_vlm_answer(completion_text(c)),
             None if t is None else ground_truth_diagnosis(t))
            for c, t in zip(completions, truths)]


# --- the rewards ----------------------------------------------------------------------------

def _format_score(r: ParseResult) -> float:
    if not r.ok:
        return 0.0
    return 1.0 if r.clean else 0.5


def format_reward(completions, ground_truth=None, **kwargs) -> list[float]:
    """1.0 valid as written, 0.5 recoverable, 0.0 no answer."""
    return [_format_score(r) for r, _ in _pairs(completions, ground_truth)]


def _types_f1(pred: set, true: set) -> float:
    if not pred and not true:
        return 1.0
    hit = len(pred & true)
    if hit == 0:
        return 0.0
    p, r = hit / len(pred), hit / len(true)
    return 2 * p * r / (p + r)


def _need_truth(gt, name: str):
    if gt is None:
        raise ValueError(f"{name}: needs the ground_truth column")


def type_reward(completions, ground_truth=None, **kwargs) -> list[float]:
    """F1 of the predicted vs. true sets of degradation types."""
    out = []
    for r, gt in _pairs(completions, ground_truth):
        _need_truth(gt, "type_reward")
        out.append(_types_f1(set(r.diagnosis.types), set(gt.types)) if r.ok else 0.0)
    return out


def _param_closeness(type_name: str, pred: Mapping, true: Mapping, tolerance: float) -> float:
    t = get_type(type_name)
    scores = []
    for p in t.params:
        a, b = float(pred.get(p.key, p.identity)), float(true.get(p.key, p.identity))
        err = abs(a - b)
        if p.circular:
            period = p.high - p.low
            err = min(err % period, period - err % period)
        scores.append(max(0.0, min(1.0, 1.0 - err / (tolerance * p.step()))))
    return sum(scores) / len(scores)


def make_param_reward(tolerance_steps: float = PARAM_TOLERANCE_STEPS):
    """A parameter reward that reaches 0 at ``tolerance_steps`` grid steps of error."""
    if tolerance_steps <= 0:
        raise ValueError(f"tolerance_steps: expected > 0, got {tolerance_steps}")

    def param_reward(completions, ground_truth=None, **kwargs) -> list[float]:
        out = []
        for r, gt in _pairs(completions, ground_truth):
            _need_truth(gt, "param_reward")
            if not r.ok:
                out.append(0.0)
                continue
            pred = {f.type: f for f in r.diagnosis.findings}
            true = {f.type: f for f in gt.findings}
            union = set(pred) | set(true)
            if not union:
                out.append(1.0)
                continue
            total = sum(_param_closeness(t, pred[t].params, true[t].params, tolerance_steps)
                        for t in union if t in pred and t in true)
            out.append(total / len(union))
        return out
    param_reward.__doc__ = (f"Closeness on the grid (0 at {tolerance_steps:g} grid steps), "
                            f"averaged over the union of types.")
    return param_reward


param_reward = make_param_reward()


def severity_reward(completions, ground_truth=None, **kwargs) -> list[float]:
    """1 - |stated - true severity| per type, averaged over the union of types."""
    out = []
    for r, gt in _pairs(completions, ground_truth):
        _need_truth(gt, "severity_reward")
        if not r.ok:
            out.append(0.0)
            continue
        pred = {f.type: r.stated_severity.get(f.type, f.severity) for f in r.diagnosis.findings}
        true = {f.type: f.severity for f in gt.findings}
        union = set(pred) | set(true)
        if not union:
            out.append(1.0)
            continue
        out.append(sum(max(0.0, 1.0 - abs(pred.get(t, 0.0) - true.get(t, 0.0)))
                       for t in union) / len(union))
    return out


def combined_reward(completions, ground_truth=None, weights: Mapping[str, float] | None = None,
                    **kwargs) -> list[float]:
    """Weighted mean of the four rewards (``DEFAULT_WEIGHTS`` unless given)."""
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    parts = {"format": format_reward, "type": type_reward, "param": param_reward,
             "severity": severity_reward}
    unknown = set(w) - set(parts)
    if unknown:
        raise ValueError(f"weights: unknown rewards {sorted(unknown)}; expected {list(parts)}")
    total = sum(w.values())
    if total <= 0:
        raise ValueError("weights: expected a positive sum")
    completions = list(completions)
    scores = [0.0] * len(completions)
    for name, weight in w.items():
        for i, s in enumerate(parts[name](completions, ground_truth)):
            scores[i] += weight * s / total
    return scores


REWARD_FUNCS = [format_reward, type_reward, param_reward, severity_reward]
