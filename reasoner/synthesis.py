"""Degradation synthesis: a clean image + a structured spec -> degraded image + ground truth.

The spec is an ordered list of steps ``[{"type": "noise", "params": {"sigma": 25}}, ...]``
whose types and keys come from the taxonomy. Synthesis is deterministic for a seed (one
NumPy generator drives every random choice) and composes: a mixture is just a longer list.

Images are float32 ``H x W x 3`` arrays in [0, 1]. Convolutions and resampling go through
torch (already a dependency, fast on CPU, deterministic there); JPEG goes through Pillow.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .diagnosis import Diagnosis, Finding
from .taxonomy import TAXONOMY, TYPE_NAMES, get_type


@dataclass
class Step:
    type: str
    params: dict[str, float]


def parse_spec(spec) -> list[Step]:
    """Accept a list of steps/dicts, a JSON string, or the short form
    ``"noise: sigma=25, shot=5; jpeg: quality=30"``; validate against the taxonomy."""
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            return []
        if text[0] in "[{":
            try:
                spec = json.loads(text)
            except ValueError as e:
                raise ValueError(f"spec: not valid JSON ({e})") from None
            if isinstance(spec, dict):
                spec = [spec]
        else:
            spec = [_parse_short(part, i) for i, part in enumerate(text.split(";"))
                    if part.strip()]
    steps = []
    for i, raw in enumerate(spec):
        if isinstance(raw, Step):
            raw = {"type": raw.type, "params": raw.params}
        if not isinstance(raw, Mapping) or "type" not in raw:
            raise ValueError(f"spec[{i}]: expected {{'type': one of {list(TYPE_NAMES)}, "
                             f"'params': {{...}}}}, got {raw!r}")
        if raw["type"] not in TYPE_NAMES:
            raise ValueError(f"spec[{i}].type: unknown degradation {raw['type']!r}; expected "
                             f"one of {list(TYPE_NAMES)}")
        t = get_type(raw["type"])
        params = t.identity_params()
        for key, value in dict(raw.get("params", {})).items():
            if key not in t.keys:
                raise ValueError(f"spec[{i}].params.{key}: {t.name} has no such parameter; "
                                 f"expected {list(t.keys)}")
            p = t.param(key)
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = float("nan")
            if not math.isfinite(v) or not p.low <= v <= p.high:
                raise ValueError(f"spec[{i}].params.{key}: expected a number in "
                                 f"[{p.low:g}, {p.high:g}] ({p.unit}), got {value!r}")
            params[key] = v
        steps.append(Step(t.name, params))
    return steps


def _parse_short(part: str, i: int) -> dict:
    m = re.fullmatch(r"\s*([a-z_]+)\s*(?::(.*))?", part)
    if not m:
        raise ValueError(f"spec[{i}]: cannot read {part.strip()!r}; expected "
                         f"'type: key=value, ...'")
    params = {}
    for kv in (m.group(2) or "").split(","):
        if not kv.strip():
            continue
        if "=" not in kv:
            raise ValueError(f"spec[{i}]: expected key=value, got {kv.strip()!r}")
        k, v = kv.split("=", 1)
        params[k.strip()] = v.strip()
    return {"type": m.group(1), "params": params}


def random_spec(rng: np.random.Generator, max_types: int = 3,
                types: Sequence[str] | None = None) -> list[Step]:
    """A random mixture of 1..max_types degradations in image-formation order."""
    pool = list(types or TYPE_NAMES)
    n = int(rng.integers(1, min(max_types, len(pool)) + 1))
    chosen = rng.choice(len(pool), size=n, replace=False)
    steps = []
    for idx in chosen:
        t = get_type(pool[int(idx)])
        params = t.identity_params()
        for key, (lo, hi) in t.sample_ranges.items():
            params[key] = float(rng.uniform(lo, hi))
        if t.name == "blur":  # defocus, motion, or both
            kind = rng.integers(3)
            if kind == 0:
                params["motion_length"] = 0.0
            elif kind == 1:
                params["width"] = float(rng.uniform(0.0, 0.8))
        if t.name == "noise" and rng.random() < 0.5:
            params["shot"] = 0.0  # pure Gaussian noise is common and worth seeing often
        steps.append(Step(t.name, params))
    return sorted(steps, key=lambda s: get_type(s.type).formation_order)


def ground_truth(steps: Sequence[Step]) -> Diagnosis:
    findings = [Finding.from_params(s.type, s.params, 1.0, "synthesis") for s in steps]
    return Diagnosis.from_findings(findings, sources={"findings": "synthesis"},
                                   observation="Synthetic degradation of a clean photograph.")


QUANTISATION_VARIANCE = (1.0 / 255.0) ** 2 / 12.0  # of the rounding that quantise() does


def quantise(img: np.ndarray) -> np.ndarray:
    """Round to 8 bits, as a saved photo is (training pairs and benchmarks both use this)."""
    return (np.round(np.clip(img, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def degrade(image: np.ndarray, spec, seed: int = 0) -> tuple[np.ndarray, Diagnosis]:
    """Apply ``spec`` to ``image`` (H x W x 3 float in [0, 1]); same seed -> same output."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected an H x W x 3 array, got shape {image.shape}")
    steps = parse_spec(spec)
    rng = np.random.default_rng(seed)
    out = image.copy()
    for step in steps:
        out = np.clip(_APPLY[step.type](out, step.params, rng), 0.0, 1.0).astype(np.float32)
    return out, ground_truth(steps)


# --- one function per taxonomy type ----------------------------------------------------

def _torch():
    import torch  # lazy: the pack imports without torch until something is computed
    return torch


def convolve_tensor(x, kernel):
    """``[B, C, H, W]`` tensor convolved ("same" size, reflect-padded) with a 2-D kernel
    tensor: the blur of the synthesiser, and the forward model that restorer/consistency.py
    inverts."""
    import torch.nn.functional as F
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    x = F.pad(x, (pw, pw, ph, ph), mode=mode)
    c = x.shape[1]
    return F.conv2d(x, kernel.to(x)[None, None].expand(c, 1, -1, -1), groups=c)


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    torch = _torch()
    k = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    return convolve_tensor(x, k)[0].numpy().transpose(1, 2, 0)


def line_kernel(length: float, angle_deg: float, from_vertical: bool = False) -> np.ndarray:
    """Anti-aliased line segment PSF of ``length`` px; angle from horizontal (or vertical)."""
    size = int(math.ceil(length)) | 1
    size = max(size, 1)
    theta = math.radians(angle_deg + (90.0 if from_vertical else 0.0))
    dx, dy = math.cos(theta), -math.sin(theta)
    c = size // 2
    k = np.zeros((size, size), np.float32)
    n = max(2, int(length * 4))
    for t in np.linspace(-length / 2, length / 2, n):
        x, y = c + t * dx, c + t * dy
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for xx, yy, w in ((x0, y0, (1 - fx) * (1 - fy)), (x0 + 1, y0, fx * (1 - fy)),
                          (x0, y0 + 1, (1 - fx) * fy), (x0 + 1, y0 + 1, fx * fy)):
            if 0 <= xx < size and 0 <= yy < size:
                k[yy, xx] += w
    return k / max(k.sum(), 1e-8)


def gaussian_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float32)
    g = np.exp(-x * x / (2 * sigma * sigma))
    g = np.outer(g, g)
    return g / g.sum()


def blur_kernel(width: float, motion_length: float, motion_angle: float) -> np.ndarray:
    k = np.ones((1, 1), np.float32)
    if motion_length >= 1.0:
        k = line_kernel(motion_length, motion_angle)
    if width >= 0.1:
        g = gaussian_kernel(width)
        torch = _torch()
        import torch.nn.functional as F
        kt = torch.from_numpy(k)[None, None]
        # A *full* convolution: the result must grow by the Gaussian's support. Padding by
        # half of it (a "same" convolution) cropped the PSF to the motion kernel's size, so a
        # Gaussian-only blur came out as the 1x1 identity (found 2026-11-22, see issue 3).
        pad = g.shape[0] - 1
        k = F.conv2d(F.pad(kt, (pad, pad, pad, pad)),
                     torch.from_numpy(g)[None, None])[0, 0].numpy()
    return k / k.sum()


def _blur(img, p, rng):
    k = blur_kernel(p["width"], p["motion_length"], p["motion_angle"])
    return img if k.size == 1 else _convolve(img, k)


def noise_variance(params: Mapping[str, float], level):
    """Variance of the synthesised sensor noise at the brightness ``level`` (a NumPy array or a
    torch tensor): read noise ``sigma^2`` plus shot noise ``shot^2`` times the level. The
    evidence checks and the data-consistency step weigh the noise by this same model."""
    sigma, shot = params["sigma"] / 255.0, params["shot"] / 255.0
    return sigma * sigma + shot * shot * level.clip(0.0, 1.0)


def _noise(img, p, rng):
    std = np.sqrt(noise_variance(p, img))
    return img + std * rng.standard_normal(img.shape, dtype=np.float32)


def jpeg_roundtrip(img: np.ndarray, quality: float) -> np.ndarray:
    """``img`` (H x W x 3 in [0, 1]) saved by Pillow as JPEG at ``quality`` and decoded: the
    synthesiser's JPEG, and the error that restorer/consistency.py measures."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
        buf, format="JPEG", quality=int(round(quality)))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0


def _jpeg(img, p, rng):
    return jpeg_roundtrip(img, p["quality"])


def resize_tensor(x, h: int, w: int):
    """The synthesiser's resampling of a ``[B, C, H, W]`` tensor (antialiased bicubic)."""
    import torch.nn.functional as F
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)


def low_resolution_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """Size of the small image that ``low_resolution`` at ``scale`` goes through."""
    return max(1, round(h / scale)), max(1, round(w / scale))


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    torch = _torch()
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    return resize_tensor(x, h, w)[0].numpy().transpose(1, 2, 0)


def _low_resolution(img, p, rng):
    s = p["scale"]
    if s <= 1.0:
        return img
    h, w = img.shape[:2]
    small = _resize(img, *low_resolution_size(h, w, s))
    return _resize(np.clip(small, 0, 1), h, w)


def _smooth_field(rng, h: int, w: int, cells: int = 4) -> np.ndarray:
    coarse = rng.random((cells, cells)).astype(np.float32)
    return _resize(np.repeat(coarse[:, :, None], 3, 2), h, w)[:, :, 0]


def _haze(img, p, rng):
    h, w = img.shape[:2]
    # Depth proxy: farther towards the top of the frame, with low-frequency variation.
    ramp = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None].repeat(w, 1)
    depth = 0.7 * ramp + 0.3 * _smooth_field(rng, h, w)
    depth = (depth - depth.min()) / max(float(depth.max() - depth.min()), 1e-6)
    t = np.exp(-p["beta"] * depth)[:, :, None]
    return img * t + p["airlight"] * (1.0 - t)


def _rain(img, p, rng):
    if p["density"] <= 0 or p["length"] < 1:
        return img
    h, w = img.shape[:2]
    seeds = (rng.random((h, w)) < p["density"]).astype(np.float32)
    seeds *= rng.uniform(0.5, 1.0, size=(h, w)).astype(np.float32)
    k = line_kernel(p["length"], p["angle"], from_vertical=True)
    k = k / k.max()  # a streak keeps its seed's brightness along its length
    streaks = _convolve(np.repeat(seeds[:, :, None], 3, 2), k)
    streaks = _convolve(streaks, gaussian_kernel(0.6))
    streaks = np.clip(streaks * 0.8, 0.0, 1.0)
    return 1.0 - (1.0 - img) * (1.0 - streaks)  # screen blend: light streaks over the scene


def tone_curve(x, exposure: float, gamma: float):
    """The low-light tone curve ``exposure * x ** gamma`` on a NumPy array or a torch tensor
    (the data-consistency step inverts the very curve that synthesises low light)."""
    return exposure * x.clip(0.0, 1.0) ** gamma


def _low_light(img, p, rng):
    return tone_curve(img, p["exposure"], p["gamma"])


_APPLY: dict[str, Callable[[np.ndarray, Mapping[str, float], np.random.Generator],
                           np.ndarray]] = {
    "noise": _noise, "blur": _blur, "jpeg": _jpeg, "haze": _haze, "rain": _rain,
    "low_light": _low_light, "low_resolution": _low_resolution,
}
assert set(_APPLY) == {t.name for t in TAXONOMY}, "every taxonomy type needs a synthesiser"
