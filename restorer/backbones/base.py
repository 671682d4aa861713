"""The :class:`Backbone` descriptor: what a restoration network is, what it fixes, how to call it.

Every network the pack can run (a spandrel model, a diagnosis-driven adapter such as DRUNet /
FFDNet / FBCNN, or the pack's own prior-conditioned restorer) is wrapped in one of these, so
routing, tiling and the closed loop never look inside a model:

* ``name`` / ``arch``: the file it came from and the detected architecture.
* ``scale``: integer output/input size ratio (1 for restoration, 2 or 4 for upscalers).
* ``conditioning``: what the network reads besides the image -- ``"none"``, ``"noise_map"``
  (a noise-level map; sigma from the diagnosed noise), ``"quality_factor"`` (a JPEG quality;
  from the diagnosed JPEG) or ``"prior"`` (the pack's full diagnosis prior).
* ``handles``: the taxonomy types it can fix (routing maps plan steps to backbones with it).
* ``run(tile, diagnosis)``: one tile ``[B, 3, h, w]`` (already on the model's device and dtype)
  -> ``[B, 3, h*scale, w*scale]``. Padding to the model's size requirements and cropping back
  happen here, once, for every backbone; the conditioning is derived from ``diagnosis`` by the
  ``call`` function (``None`` = blind: each adapter falls back to its own default).

Conditioning helpers (:func:`noise_sigma`, :func:`jpeg_quality`, ...) live here too, so every
adapter reads the diagnosis the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ...reasoner.diagnosis import Diagnosis
from ...reasoner.taxonomy import TYPE_NAMES, get_type

__all__ = ["CONDITIONINGS", "Backbone", "pad_to", "noise_sigma", "noise_sigma_map",
           "jpeg_quality", "lowres_scale", "check_handles"]

CONDITIONINGS = ("none", "noise_map", "quality_factor", "prior")

# call(model, tile, diagnosis, info) -> tensor; ``info`` is a dict the call may fill with the
# conditioning it used (e.g. {"sigma": 25.0}), shown in reports and checked by tests.
CallFn = Callable[[torch.nn.Module, torch.Tensor, Optional[Diagnosis], dict], torch.Tensor]


def check_handles(handles, where: str = "handles") -> tuple[str, ...]:
    """Validate a collection of taxonomy type names (order kept, duplicates dropped)."""
    if isinstance(handles, str):
        handles = [h for h in handles.replace(";", ",").split(",")]
    out: list[str] = []
    for h in handles:
        h = str(h).strip()
        if not h:
            continue
        if h not in TYPE_NAMES:
            raise ValueError(f"{where}: unknown degradation type {h!r}; expected some of "
                             f"{list(TYPE_NAMES)}")
        if h not in out:
            out.append(h)
    if not out:
        raise ValueError(f"{where}: names no degradation type; expected some of "
                         f"{list(TYPE_NAMES)}")
    return tuple(out)


@dataclass
class Backbone:
    """A restoration network plus everything needed to run it on a tile (see module doc)."""

    name: str
    arch: str
    model: torch.nn.Module
    call: CallFn
    scale: int = 1
    conditioning: str = "none"
    handles: tuple[str, ...] = ("noise", "jpeg", "blur")
    multiple_of: int = 1
    minimum: int = 0
    square: bool = False
    supports_half: bool = True
    supports_bfloat16: bool = True
    description: str = ""
    # What the last ``run`` derived from the diagnosis (e.g. {"sigma": 25.0}); for reports.
    last_conditioning: dict = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"Backbone {self.name!r}: conditioning must be one of "
                             f"{list(CONDITIONINGS)}, got {self.conditioning!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f"Backbone {self.name!r}: scale must be an int >= 1, got "
                             f"{self.scale!r}")
        self.handles = check_handles(self.handles, f"Backbone {self.name!r}: handles")

    # -- introspection -----------------------------------------------------------------

    def fixes(self, type_name: str) -> bool:
        return type_name in self.handles

    def describe(self) -> str:
        cond = {"none": "no conditioning", "noise_map": "noise-level map from the diagnosed "
                "noise", "quality_factor": "JPEG quality factor from the diagnosed JPEG",
                "prior": "the full diagnosis prior"}[self.conditioning]
        return (f"{self.name}: {self.arch}, x{self.scale}, {cond}; fixes "
                f"{', '.join(self.handles)}" + (f". {self.description}"
                                                if self.description else ""))

    def dtype_for(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype actually used: float32 when the architecture does not support ``dtype``."""
        if dtype == torch.float16 and not self.supports_half:
            return torch.float32
        if dtype == torch.bfloat16 and not self.supports_bfloat16:
            return torch.float32
        return dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # -- running -----------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, tile: torch.Tensor, diagnosis: Optional[Diagnosis] = None) -> torch.Tensor:
        """``[B, 3, h, w]`` -> ``[B, 3, h*scale, w*scale]`` (not clamped; callers clamp)."""
        h, w = tile.shape[-2:]
        x = pad_to(tile, self.multiple_of, self.minimum, self.square)
        info: dict = {}
        out = self.call(self.model, x, diagnosis, info)
        if isinstance(out, (tuple, list)):
            out = out[0]
        self.last_conditioning = info
        return out[..., : h * self.scale, : w * self.scale]


def pad_to(x: torch.Tensor, multiple_of: int = 1, minimum: int = 0,
           square: bool = False) -> torch.Tensor:
    """Pad ``[B, C, H, W]`` at the bottom/right to satisfy size requirements (reflect where
    possible, replicate beyond), as spandrel does; a no-op when already satisfied."""
    h, w = x.shape[-2:]
    th, tw = max(h, minimum), max(w, minimum)
    m = max(1, multiple_of)
    th, tw = math.ceil(th / m) * m, math.ceil(tw / m) * m
    if square:
        th = tw = max(th, tw)
    ph, pw = th - h, tw - w
    if ph == 0 and pw == 0:
        return x
    rh, rw = min(ph, h - 1), min(pw, w - 1)
    if rh > 0 or rw > 0:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if ph - rh > 0 or pw - rw > 0:
        x = F.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
    return x


# --- reading the diagnosis --------------------------------------------------------------

def noise_sigma(diagnosis: Optional[Diagnosis], default: Optional[float] = None
                ) -> Optional[float]:
    """Noise std on the 0-255 scale the diagnosis implies: ``sqrt(sigma^2 + 0.5 shot^2)``
    (the Gaussian read noise plus the signal-dependent part at mid-grey, as the taxonomy's
    severity measures it). 0 when a diagnosis shows no noise; ``default`` when there is no
    diagnosis at all (blind)."""
    if diagnosis is None:
        return default
    f = diagnosis.finding("noise")
    if f is None:
        return 0.0
    sigma, shot = float(f.params.get("sigma", 0.0)), float(f.params.get("shot", 0.0))
    return math.sqrt(sigma * sigma + 0.5 * shot * shot)


def noise_sigma_map(image: torch.Tensor, diagnosis: Optional[Diagnosis],
                    default: float) -> torch.Tensor:
    """Per-pixel noise std in [0, 1] units, ``[B, 1, H, W]``: ``sqrt(sigma^2 + shot^2 * x)``
    with ``x`` the (locally smoothed) luminance, so signal-dependent noise gets a map that is
    stronger in bright areas; uniform when the diagnosis shows no shot noise or there is none
    (blind: ``default``)."""
    b, _, h, w = image.shape
    f = diagnosis.finding("noise") if diagnosis is not None else None
    if f is None or float(f.params.get("shot", 0.0)) <= 0.0:
        s = noise_sigma(diagnosis, default)
        return torch.full((b, 1, h, w), float(s) / 255.0, device=image.device,
                          dtype=image.dtype)
    sigma, shot = float(f.params.get("sigma", 0.0)), float(f.params["shot"])
    lum = (0.299 * image[:, 0:1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:3]).float()
    lum = F.avg_pool2d(F.pad(lum, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    std = torch.sqrt(sigma * sigma + shot * shot * lum.clamp(0, 1)) / 255.0
    return std.to(image.dtype)


def jpeg_quality(diagnosis: Optional[Diagnosis], default: Optional[float] = None
                 ) -> Optional[float]:
    """Diagnosed JPEG quality factor; the identity (95) when a diagnosis shows no JPEG;
    ``default`` without a diagnosis."""
    if diagnosis is None:
        return default
    f = diagnosis.finding("jpeg")
    spec = get_type("jpeg").param("quality")
    return float(f.params.get("quality", spec.identity)) if f is not None else spec.identity


def lowres_scale(diagnosis: Optional[Diagnosis]) -> float:
    """Diagnosed low-resolution factor (1 = full resolution or no diagnosis)."""
    if diagnosis is None:
        return 1.0
    f = diagnosis.finding("low_resolution")
    return float(f.params.get("scale", 1.0)) if f is not None else 1.0
