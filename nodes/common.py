"""What the nodes and the CLI share: input checks that name the input, image layout
conversion, diagnosis plumbing, the upscale rule and the severity report.

No ComfyUI here (that is :mod:`.comfy`) and no torch at import: torch-using helpers import it
inside their bodies, so ``import reason_restore`` stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from contextlib import contextmanager
from typing import Sequence

from ..reasoner.diagnosis import Diagnosis, DiagnosisError
from ..reasoner.taxonomy import TAXONOMY, TYPE_NAMES, tier_of

log = logging.getLogger("reason_restore")

DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")


# --- errors that name the input ---------------------------------------------------------

def _retag(err: Exception, message: str) -> Exception:
    try:
        new = type(err)(message)
    except Exception:  # noqa: BLE001 - exception types with unusual constructors
        new = ValueError(message)
    return new


@contextmanager
def blame(input_name: str):
    """Re-raise a core ``ValueError``/``TypeError`` with ``input_name`` in front of its
    message (unless it already starts with it), keeping the exception type."""
    try:
        yield
    except (ValueError, TypeError) as e:
        msg = str(e)
        if msg.startswith(input_name):
            raise
        raise _retag(e, f"{input_name}: {msg}") from e


def node_errors(display_name: str):
    """Decorator for a node's FUNCTION: a ``ValueError``/``TypeError`` reaches the user as
    ``"<Node name>: <input>: <what is wrong>"``; anything else (interrupts, out of memory)
    passes through untouched for ComfyUI to handle."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (ValueError, TypeError) as e:
                msg = str(e)
                if msg.startswith(display_name + ":"):
                    raise
                raise _retag(e, f"{display_name}: {msg}") from e
        return run
    return wrap


def check_number(name: str, value, low: float, high: float, integer: bool = False):
    """A widget value in range, or an error naming the input."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)) \
            or not low <= value <= high:
        raise ValueError(f"{name}: expected {kind} in [{low:g}, {high:g}], got {value!r}")
    return value


def check_choice(name: str, value, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name}: expected one of {list(options)}, got {value!r}")
    return value


def check_instance(name: str, value, cls, socket: str):
    if not isinstance(value, cls):
        raise TypeError(f"{name}: expected a {socket} (connect the matching output), got "
                        f"{type(value).__name__}")
    return value


def torch_dtype(name: str):
    import torch
    check_choice("dtype", name, DTYPES)
    return {"float32": torch.float32, "float16": torch.float16,
            "bfloat16": torch.bfloat16}[name]


# --- images -----------------------------------------------------------------------------

def from_comfy(image, name: str = "image"):
    """ComfyUI ``IMAGE`` ``[B, H, W, C]`` (1, 3 or 4 channels) -> ``[B, 3, H, W]`` in [0, 1];
    errors name ``name``."""
    from ..reasoner.images import as_rgb_batch
    if image is None:
        raise ValueError(f"{name}: no image connected")
    with blame(name):
        # ComfyUI images live on the CPU; a node that left one on the GPU must not make the
        # restorer mix devices.
        return as_rgb_batch(image, name=name, channels_last=True).cpu()


def to_comfy(x):
    """``[B, 3, H, W]`` -> ComfyUI ``IMAGE`` ``[B, H, W, 3]`` float32 in [0, 1] on the CPU."""
    return x.detach().float().clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().contiguous()


def resize_to(x, h: int, w: int):
    """Resize ``[B, 3, h', w']`` to ``h x w`` (bicubic, antialiased when shrinking)."""
    import torch.nn.functional as F
    if tuple(x.shape[-2:]) == (h, w):
        return x
    down = x.shape[-2] > h or x.shape[-1] > w
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False,
                         antialias=down).clamp(0.0, 1.0)


def match_batch(x, batch: int, name: str):
    """Broadcast a batch of 1 to ``batch``; any other mismatch is an error naming ``name``."""
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    raise ValueError(f"{name}: batch of {x.shape[0]} images does not match the image batch "
                     f"of {batch} (use 1 or {batch})")


# --- diagnoses --------------------------------------------------------------------------

def diagnosis_list(value, batch: int | None, name: str = "diagnosis") -> list:
    """Normalise an ``RR_DIAGNOSIS`` value to one entry per image (a single one broadcasts)."""
    if value is None:
        return [None] * (batch or 1)
    if isinstance(value, Diagnosis):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"{name}: expected a list of diagnoses (RR_DIAGNOSIS), got "
                        f"{type(value).__name__}")
    for i, d in enumerate(value):
        if d is not None and not isinstance(d, Diagnosis):
            raise TypeError(f"{name}[{i}]: expected a Diagnosis, got {type(d).__name__}")
    value = list(value)
    if batch is not None and len(value) != batch:
        if len(value) == 1:
            return value * batch
        raise ValueError(f"{name}: {len(value)} diagnoses for a batch of {batch} images "
                         f"(connect the diagnosis of this batch, or a single one)")
    return value


def parse_diagnosis_json(text: str, name: str = "overrides") -> list[Diagnosis]:
    """A diagnosis JSON object, or a list of them (one per image); errors name the field."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DiagnosisError(f"{name}: not valid JSON ({e})") from None
    if isinstance(data, list):
        if not data:
            raise DiagnosisError(f"{name}: empty list; expected one diagnosis per image")
        return [Diagnosis.from_dict(d, where=f"{name}[{i}]") for i, d in enumerate(data)]
    return [Diagnosis.from_dict(data, where=name)]


def guided_prior(diagnoses: list, overrides: str = "", instruction: str = ""):
    """User-guided prior: ``overrides`` in short form (``"noise: severity=0.8; blur: off"``)
    edits each diagnosis; a JSON object (or list) replaces the diagnoses outright."""
    from ..restorer.prior import make_prior
    overrides = overrides or ""
    instruction = instruction or ""
    if not isinstance(overrides, str):
        raise TypeError(f"overrides: expected text, got {type(overrides).__name__}")
    if not isinstance(instruction, str):
        raise TypeError(f"instruction: expected text, got {type(instruction).__name__}")
    text = overrides.strip()
    if text.startswith(("{", "[")):
        given = parse_diagnosis_json(text, "overrides")
        diagnoses = diagnosis_list(given, len(diagnoses), "overrides")
        return make_prior(diagnoses, instruction, "")
    with blame("overrides"):
        return make_prior(diagnoses, instruction, text)


def upscale_factor(diagnoses: Sequence[Diagnosis | None], upscale: float,
                   force: bool = False) -> float:
    """The rule shared by the Restore node and the CLI: enlarge only when a diagnosis shows
    low resolution (any image of the batch: a batch keeps one size), when restoring blind,
    or when forced. Returns 1.0 when the factor is not applied."""
    if upscale <= 1.0:
        return 1.0
    if force or all(d is None for d in diagnoses):
        return float(upscale)
    if any(d is not None and d.finding("low_resolution") is not None for d in diagnoses):
        return float(upscale)
    log.info("reason_restore: upscale x%g skipped: the diagnosis shows no low resolution "
             "(turn on force_upscale to enlarge anyway)", upscale)
    return 1.0


def describe_batch(diagnoses: Sequence[Diagnosis]) -> tuple[str, str]:
    """(chain-of-thought text, diagnosis JSON) for one or more images."""
    if len(diagnoses) == 1:
        d = diagnoses[0]
        return f"Diagnosis: {d.summary()}\n{d.chain_of_thought()}", d.to_json()
    sections = [f"### image {i + 1} of {len(diagnoses)}\nDiagnosis: {d.summary()}\n"
                f"{d.chain_of_thought()}" for i, d in enumerate(diagnoses)]
    return "\n\n".join(sections), json.dumps([d.to_dict() for d in diagnoses], indent=2)


# --- severity report --------------------------------------------------------------------

SEVERITY_NAMES = tuple(f"{n}_severity" for n in TYPE_NAMES)


def severity_report(reasoner, images, clean=None) -> dict:
    """Residual severity per type (and overall) of ``images`` ``[B, 3, H, W]``, plus PSNR and
    SSIM against ``clean`` (same size; batch 1 broadcasts) or -1.0 without one.

    Returns ``{"per_type": [B, T] tensor, "overall": [B], "mean_per_type": {name: float},
    "mean_overall": float, "psnr": float, "ssim": float, "report": str}``."""
    from ..restorer.metrics import psnr, ssim
    per, overall = reasoner.score(images)
    b = images.shape[0]
    p_vals = s_vals = None
    if clean is not None:
        if tuple(clean.shape[-2:]) != tuple(images.shape[-2:]):
            raise ValueError(f"clean_reference: its size {clean.shape[-1]}x{clean.shape[-2]} "
                             f"differs from image's {images.shape[-1]}x{images.shape[-2]}; "
                             f"connect the clean version of the same picture at the same size")
        clean = match_batch(clean, b, "clean_reference")
        p_vals = psnr(images, clean).tolist()
        s_vals = ssim(images, clean).tolist()
    mean_per = {n: float(per[:, i].mean()) for i, n in enumerate(TYPE_NAMES)}
    mean_overall = float(overall.mean())
    psnr_mean = -1.0 if p_vals is None else _mean_db(p_vals)
    ssim_mean = -1.0 if s_vals is None else float(sum(s_vals) / len(s_vals))

    lines = ["Residual severity (0 = clean, 1 = worst synthesised)"
             + (f", mean over {b} images" if b > 1 else "") + ":"]
    for t in TAXONOMY:
        v = mean_per[t.name]
        lines.append(f"  {t.label.lower():<15} {v:.3f} ({tier_of(v)})")
    lines.append(f"  {'overall':<15} {mean_overall:.3f} ({tier_of(mean_overall)})")
    if p_vals is None:
        lines.append("PSNR/SSIM: no clean_reference connected, reported as -1.0.")
    else:
        lines.append(f"PSNR {_fmt_db(psnr_mean)} dB, SSIM {ssim_mean:.4f} (luminance, "
                     f"against clean_reference)")
    if b > 1:
        lines.append("Per image:")
        for i in range(b):
            worst = max(range(len(TYPE_NAMES)), key=lambda j: float(per[i, j]))
            extra = ("" if p_vals is None else
                     f", PSNR {_fmt_db(p_vals[i])} dB, SSIM {s_vals[i]:.4f}")
            lines.append(f"  image {i + 1}: overall {float(overall[i]):.3f}, worst "
                         f"{TYPE_NAMES[worst]} {float(per[i, worst]):.3f}{extra}")
    return {"per_type": per, "overall": overall, "mean_per_type": mean_per,
            "mean_overall": mean_overall, "psnr": psnr_mean, "ssim": ssim_mean,
            "report": "\n".join(lines)}


def _mean_db(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        return math.inf
    return float(sum(finite) / len(finite))


def _fmt_db(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.2f}"
