""":class:`BackboneRestorer`: the Restore node's interface over any backbone(s).

It has the same ``restore(images, diagnoses, reference, upscale, strength, tile, overlap,
progress, check_interrupt)``, ``kind``, ``offload``, ``device``, ``dtype``, ``keep_loaded`` and
``model`` as :class:`~..engine.Restorer`, so the Restore node takes either.

* One backbone (what "Load Restorer Backbone" gives): it runs on the whole image, conditioned on
  the diagnosis where it can read one (adapters, the built-in), in tiles.
* Several: the diagnosis is routed (:func:`.routing.route`) and the steps run in order (open
  loop; :mod:`.closed_loop` re-diagnoses between steps instead).

Scale (``upscale`` is the output/input size ratio the caller wants, as for the built-in):

* x1 backbones: enlarge bicubically first when ``upscale > 1`` (the diagnosis is told the image
  now looks that much lower-resolution), then restore.
* x2/x4 backbones: the input is first shrunk by as much as the diagnosed low-resolution factor
  justifies (at most ``scale / upscale``), so an image that *was* upsampled gets its detail
  re-synthesised rather than enlarged again; the model's output is then resized to the target
  size (bicubic up, antialiased down). ``upscale == scale`` with no low resolution diagnosed
  is plain super-resolution, exactly the model's output.

Every backbone runs through :func:`..tiling.tiled_apply` (overlap blending, progress per tile,
interrupt between tiles, smaller tiles on out-of-memory); device memory holds one tile.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ...reasoner.diagnosis import Diagnosis
from ..engine import MAX_UPSCALE, check_restore_inputs
from ..tiling import tiled_apply
from .base import Backbone, lowres_scale
from .routing import RoutePlan, route

__all__ = ["BackboneRestorer", "apply_backbone", "as_backbone_restorer", "diagnosis_without",
           "resize", "MAX_UPSCALE"]


def resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bicubic resize of ``[B, C, H, W]`` (antialiased when shrinking), clamped to [0, 1]."""
    if tuple(x.shape[-2:]) == (h, w):
        return x
    down = x.shape[-2] > h or x.shape[-1] > w
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False,
                         antialias=down).clamp(0, 1)


def diagnosis_without(d: Optional[Diagnosis], types: Sequence[str]) -> Optional[Diagnosis]:
    """``d`` with the findings of ``types`` removed (they were handled by an earlier step)."""
    if d is None or not any(d.finding(t) for t in types):
        return d
    presence = dict(d.presence)
    presence.update({t: 0.0 for t in types})
    return Diagnosis.from_findings([f for f in d.findings if f.type not in types],
                                   presence=presence, scene=d.scene, objects=d.objects,
                                   sources=d.sources, notes=d.notes,
                                   observation=d.reasoning[0].text if d.reasoning else "")


@torch.no_grad()
def apply_backbone(backbone: Backbone, image: torch.Tensor, diagnosis: Optional[Diagnosis],
                   *, device=None, dtype=torch.float32, upscale: float = 1.0,
                   strength: float = 1.0, tile: int = 512, overlap: int = 32,
                   progress: Optional[Callable[[int, int], None]] = None,
                   check_interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """Run ``backbone`` on one image ``[1, 3, H, W]`` (CPU) in tiles; returns the clamped CPU
    float32 result at ``round(H * upscale) x round(W * upscale)`` (see the module doc)."""
    from ..engine import upscaled_diagnosis
    device = torch.device(device or "cpu")
    h, w = image.shape[-2:]
    th, tw = max(1, round(h * upscale)), max(1, round(w * upscale))
    s = backbone.scale
    d = diagnosis
    if s == 1:
        x = resize(image, th, tw) if upscale > 1.0 else image
        if upscale > 1.0:
            d = upscaled_diagnosis(d, upscale)
    else:
        shrink = min(max(lowres_scale(d), 1.0), max(1.0, s / upscale))
        x = image
        if shrink > 1.0 + 1e-6:
            x = resize(image, max(1, round(h / shrink)), max(1, round(w / shrink)))
    run_dtype = backbone.dtype_for(dtype)
    backbone.model.to(device, run_dtype)

    def fn(t):
        return backbone.run(t.to(device, run_dtype), d)

    out = tiled_apply(fn, x, tile=tile, overlap=overlap, scale=s, progress=progress,
                      check_interrupt=check_interrupt).clamp_(0, 1)
    out = resize(out, th, tw)
    if strength < 1.0:
        base = resize(image, th, tw)
        out = base * (1.0 - strength) + out * strength
    return out


class BackboneRestorer:
    """One or more :class:`~.base.Backbone` behind the Restore node's interface."""

    kind = "backbone"

    def __init__(self, backbones: Sequence[Backbone] | Backbone, device=None,
                 dtype=torch.float32, name: Optional[str] = None, keep_loaded: bool = True):
        if isinstance(backbones, Backbone):
            backbones = [backbones]
        backbones = list(backbones)
        if not backbones or not all(isinstance(b, Backbone) for b in backbones):
            raise TypeError("BackboneRestorer: expected one or more Backbone objects")
        self.backbones = backbones
        self.device = torch.device(device or "cpu")
        self.dtype = dtype
        self.name = name or " + ".join(b.name for b in backbones)
        self.keep_loaded = keep_loaded
        self._modules = torch.nn.ModuleList([b.model for b in backbones])

    @property
    def model(self) -> torch.nn.Module:
        """All backbone networks (for memory estimates and ``.to``)."""
        return self._modules

    @property
    def backbone(self) -> Backbone:
        return self.backbones[0]

    def describe(self) -> str:
        return "\n".join(b.describe() for b in self.backbones)

    def plan(self, diagnosis: Optional[Diagnosis]) -> RoutePlan:
        if len(self.backbones) == 1:
            b = self.backbones[0]
            types = tuple(diagnosis.plan()) if diagnosis is not None else tuple(b.handles)
            from .routing import PlanStep
            return RoutePlan([PlanStep(types or tuple(b.handles), 0, b)])
        return route(diagnosis, self.backbones)

    def run_backbone(self, backbone: Backbone, image: torch.Tensor,
                     diagnosis: Optional[Diagnosis], **kw) -> torch.Tensor:
        return apply_backbone(backbone, image, diagnosis, device=self.device,
                              dtype=self.dtype, **kw)

    @torch.no_grad()
    def restore(self, images, diagnoses: Sequence[Diagnosis | None] | None = None,
                reference=None, upscale: float = 1.0, strength: float = 1.0,
                tile: int = 512, overlap: int = 32,
                progress: Optional[Callable[[int, int], None]] = None,
                check_interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
        images, diagnoses = check_restore_inputs(images, diagnoses, upscale, strength)
        b = images.shape[0]
        if reference is not None and len(self.backbones) == 1 \
                and self.backbone.conditioning == "prior":
            # The built-in restorer's own path aligns and tiles a reference with the image.
            from ..engine import Restorer
            r = Restorer(self.backbone.model, self.device, self.dtype, self.name,
                         self.keep_loaded)
            return r.restore(images, diagnoses, reference, upscale, strength, tile, overlap,
                             progress, check_interrupt)
        outs = []
        for i in range(b):
            d = diagnoses[i]
            plan = self.plan(d)
            steps = plan.steps
            x = images[i:i + 1]
            if not steps:
                outs.append(resize(x, max(1, round(x.shape[-2] * upscale)),
                                   max(1, round(x.shape[-1] * upscale))))
                continue
            # Enlarge in the step that handles low resolution, else in the last one.
            up_at = next((k for k, s in enumerate(steps) if "low_resolution" in s.types),
                         len(steps) - 1)
            done: list[str] = []
            base = x
            for k, step in enumerate(steps):
                if check_interrupt is not None:
                    check_interrupt()

                def step_progress(n_done, n_total, i=i, k=k, n_steps=len(steps)):
                    if progress:
                        progress((i * n_steps + k) * n_total + n_done, b * n_steps * n_total)
                x = self.run_backbone(step.backbone, x, diagnosis_without(d, done),
                                      upscale=upscale if k == up_at else 1.0, strength=1.0,
                                      tile=tile, overlap=overlap, progress=step_progress,
                                      check_interrupt=check_interrupt)
                done += list(step.types)
            if strength < 1.0:
                x = resize(base, *x.shape[-2:]) * (1.0 - strength) + x * strength
            outs.append(x)
        if not self.keep_loaded:
            self.offload()
        return outs[0] if len(outs) == 1 else torch.cat(outs)  # no extra copy for one image

    def offload(self) -> None:
        for b in self.backbones:
            b.model.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def as_backbone_restorer(restorer) -> BackboneRestorer:
    """A :class:`BackboneRestorer` for either restorer kind (the built-in
    :class:`~..engine.Restorer` becomes one prior-conditioned backbone, same device/dtype)."""
    if isinstance(restorer, BackboneRestorer):
        return restorer
    from ..engine import Restorer
    if isinstance(restorer, Restorer):
        from .adapters import prior_backbone
        return BackboneRestorer([prior_backbone(restorer.model, restorer.name)],
                                restorer.device, restorer.dtype, restorer.name,
                                restorer.keep_loaded)
    raise TypeError(f"expected a restorer (Load Restorer / Load Restorer Backbone), got "
                    f"{type(restorer).__name__}")
