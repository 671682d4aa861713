"""Any spandrel ``ImageModelDescriptor`` as a :class:`~.base.Backbone`.

spandrel (the library ComfyUI's own upscale-model loader uses) detects ~40 architectures
(ESRGAN, Compact, SPAN, SwinIR, HAT, DAT, NAFNet, SCUNet, DnCNN, ...) from a state dict and
reads their hyper-parameters from tensor shapes. This module only decides what the pack needs
on top: which taxonomy types a model fixes (routing), and refuses what it cannot run as an
image-to-image backbone (inpainting, face-crop models, non-RGB).

What a model *fixes* cannot be read from weights (an ESRGAN can be a 4x upscaler or a 1x JPEG
remover), so the default follows the architecture and scale (below); the user can override it
on the loader (``handles``).
"""

from __future__ import annotations

from typing import Optional

from .base import Backbone

__all__ = ["default_handles", "from_descriptor", "UNSUPPORTED_PURPOSES"]

# Restoration architectures whose published weights target specific degradations.
_ARCH_HANDLES = {
    "DnCNN": ("noise",), "DRUNet": ("noise",), "SCUNet": ("noise", "jpeg"),
    "FBCNN": ("jpeg",),
    "NAFNet": ("noise", "blur"), "Restormer": ("noise", "blur", "rain"),
    "KBNet": ("noise", "blur"), "Uformer": ("noise", "blur", "rain"),
    "FFTformer": ("blur",), "MPRNet": ("noise", "blur", "rain"),
    "MixDehazeNet": ("haze",),
    "RetinexFormer": ("low_light",), "HVICIDNet": ("low_light",),
    "SAFMNBCIE": ("low_light",),
}
# A x1 model of an upscaling family (ESRGAN, Compact, SPAN, ...) is usually a "1x" cleaner.
_GENERIC_X1 = ("noise", "jpeg", "blur")
UNSUPPORTED_PURPOSES = {"FaceSR": "a face-restoration model (it needs aligned face crops)",
                        "Inpainting": "an inpainting model (it needs a mask)"}


def default_handles(arch_id: str, scale: int) -> tuple[str, ...]:
    if scale > 1:
        return ("low_resolution",)
    return _ARCH_HANDLES.get(arch_id, _GENERIC_X1)


def _grey_call(desc):
    def call(model, x, diagnosis, info):
        b, c, h, w = x.shape
        out = desc(x.reshape(b * c, 1, h, w))
        return out.reshape(b, c, *out.shape[-2:])
    return call


def from_descriptor(desc, name: str, handles: Optional[tuple[str, ...]] = None) -> Backbone:
    """Wrap a spandrel descriptor; raises ``ValueError`` for what cannot run here."""
    from spandrel import ImageModelDescriptor
    arch = desc.architecture.name
    if not isinstance(desc, ImageModelDescriptor) or desc.purpose in UNSUPPORTED_PURPOSES:
        why = UNSUPPORTED_PURPOSES.get(getattr(desc, "purpose", ""), "not an image-to-image "
                                       "model")
        raise ValueError(f"{arch} is {why}; only image-to-image restoration and upscaling "
                         f"models can be restorer backbones")
    if desc.input_channels != desc.output_channels or desc.input_channels not in (1, 3):
        raise ValueError(f"{arch} takes {desc.input_channels} and returns "
                         f"{desc.output_channels} channels; only RGB (3) or grey (1) models "
                         f"are supported")
    scale = int(desc.scale)
    if desc.input_channels == 3:
        def call(model, x, diagnosis, info):
            return desc(x)
    else:
        call = _grey_call(desc)
    req = desc.size_requirements
    return Backbone(name=name, arch=arch, model=desc.model.eval(), call=call, scale=scale,
                    conditioning="none",
                    handles=tuple(handles) if handles else default_handles(arch, scale),
                    multiple_of=req.multiple_of, minimum=req.minimum, square=req.square,
                    supports_half=bool(desc.supports_half),
                    supports_bfloat16=bool(desc.supports_bfloat16),
                    description=f"spandrel {desc.purpose} model"
                                + (f" ({', '.join(desc.tags)})" if desc.tags else "")
                                + ("" if desc.input_channels == 3 else
                                   "; grey: run on each RGB channel"),
                    extra={"spandrel": desc, "tags": list(desc.tags)})
