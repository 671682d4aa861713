"""``load_backbone(path)``: any supported weights file -> a :class:`~.base.Backbone`, safely.

Reading never executes code from the file:

* ``.safetensors`` / ``.sft``: read with safetensors (no code path at all).
* ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin``: ``torch.load(weights_only=True)``, whose
  unpickler only rebuilds tensors and plain containers; a pickle naming any other global
  (``os.system``, ``builtins.exec``, a class from some module) is refused *before* anything is
  called. (spandrel's own ``load_from_file`` is not used: for ``.pt`` it tries TorchScript
  first. The state dict is read here and handed to ``ModelLoader().load_from_state_dict``.)

Detection order: the pack's own :class:`~..network.PriorRestorer` (``detect_restorer`` or the
``arch`` metadata), then the diagnosis-driven adapters (:mod:`.adapters`), then spandrel. Every
failure is a :class:`BackboneLoadError` (a ``ValueError``) whose message starts with the file's
path and says what is wrong: not a model file, truncated, unsupported architecture, refused
pickle.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from .adapters import ADAPTERS, find_adapter, prior_backbone
from .base import Backbone, check_handles

__all__ = ["BackboneLoadError", "MODEL_EXTENSIONS", "read_state_dict", "load_backbone",
           "backbone_from_state_dict"]

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".pth", ".pt", ".ckpt", ".bin")
MODEL_EXTENSIONS = SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS


class BackboneLoadError(ValueError):
    """A weights file that cannot become a backbone; the message names the file."""


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line[:limit]


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    try:
        state = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            for k in f.keys():
                state[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises its own error types
        raise BackboneLoadError(f"{path}: not a valid safetensors file (truncated or "
                                f"corrupt: {type(e).__name__}: {_first_line(e)})") from None
    return state, meta


_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|global) ([\w.]+)")


def _read_pickle(path: Path) -> tuple[object, dict]:
    import pickle
    import warnings
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error below says more
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = _GLOBAL.search(msg)
        if m or "weights_only" in msg.lower() or "weights only" in msg.lower():
            what = f"it wants to import {m.group(1)!r}" if m else "it contains code objects"
            raise BackboneLoadError(
                f"{path}: refused to load: {what}, which a weights file never needs (a "
                f"pickle that runs code on load). Nothing from it was executed. Use a "
                f".safetensors file, or a plain state-dict .pth") from None
        raise BackboneLoadError(f"{path}: not a PyTorch weights file ({_first_line(e)})"
                                ) from None
    except Exception as e:  # noqa: BLE001 - zip errors, EOF, bad magic numbers, ...
        raise BackboneLoadError(f"{path}: not a PyTorch weights file (truncated or not a "
                                f"model: {type(e).__name__}: {_first_line(e)})") from None
    return obj, {}


def _as_state_dict(obj, path: Path) -> dict:
    from spandrel import canonicalize_state_dict
    if not isinstance(obj, Mapping):
        raise BackboneLoadError(f"{path}: holds a {type(obj).__name__}, not a state dict of "
                                f"weights")
    sd = canonicalize_state_dict(dict(obj))
    if not isinstance(sd, Mapping):
        raise BackboneLoadError(f"{path}: holds no state dict of weights")
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise BackboneLoadError(f"{path}: contains no weight tensors")
    return tensors


def read_state_dict(path) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of a weights file, never executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    ext = path.suffix.lower()
    if ext in SAFETENSORS_EXTENSIONS:
        obj, meta = _read_safetensors(path)
    elif ext in PICKLE_EXTENSIONS:
        obj, meta = _read_pickle(path)
    else:
        raise BackboneLoadError(f"{path}: unsupported file type {ext or '(none)'!r}; expected "
                                f"one of {list(MODEL_EXTENSIONS)}")
    return _as_state_dict(obj, path), meta


def _few(keys: Sequence[str], n: int = 4) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def backbone_from_state_dict(state_dict: Mapping, name: str = "model",
                             metadata: Optional[Mapping] = None,
                             handles=None, where: Optional[str] = None) -> Backbone:
    """Detect and build a backbone from an in-memory state dict (see :func:`load_backbone`)."""
    from ..network import ARCH_NAME, PriorRestorer, RestorerConfig, detect_restorer, infer_config
    where = where or name
    metadata = dict(metadata or {})
    if metadata.get("arch") == ARCH_NAME or detect_restorer(state_dict):
        try:
            import json
            config = (RestorerConfig.from_dict(json.loads(metadata["config"]))
                      if "config" in metadata else infer_config(state_dict))
            model = PriorRestorer(config)
            model.load_state_dict(dict(state_dict), strict=True)
        except Exception as e:  # noqa: BLE001
            raise BackboneLoadError(f"{where}: a ReasonRestore restorer whose weights do not "
                                    f"fit its config ({_first_line(e)})") from None
        backbone = prior_backbone(model.eval(), name)
    else:
        adapter = find_adapter(state_dict)
        if adapter is not None:
            try:
                backbone = adapter.build(state_dict, name)
            except BackboneLoadError:
                raise
            except Exception as e:  # noqa: BLE001
                raise BackboneLoadError(f"{where}: looks like {adapter.name} but the weights "
                                        f"do not fit it ({_first_line(e)})") from None
        else:
            backbone = _spandrel_backbone(state_dict, name, where, handles)
    if handles:
        backbone.handles = check_handles(handles, "handles")
    return backbone


def _spandrel_backbone(state_dict, name, where, handles) -> Backbone:
    from spandrel import MAIN_REGISTRY, ModelLoader, UnsupportedModelError
    from .spandrel_backbone import from_descriptor
    try:
        desc = ModelLoader().load_from_state_dict(dict(state_dict))
    except UnsupportedModelError:
        ours = ", ".join(a.name for a in ADAPTERS)
        raise BackboneLoadError(
            f"{where}: unsupported architecture: neither spandrel "
            f"({len(MAIN_REGISTRY.architectures())} architectures) nor the pack's adapters "
            f"({ours}, PriorRestorer) recognise these weights (keys: "
            f"{_few(sorted(state_dict))})") from None
    except Exception as e:  # noqa: BLE001 - a detected architecture whose shapes are odd
        raise BackboneLoadError(f"{where}: spandrel could not build the model "
                                f"({type(e).__name__}: {_first_line(e)})") from None
    try:
        return from_descriptor(desc, name, check_handles(handles) if handles else None)
    except ValueError as e:
        raise BackboneLoadError(f"{where}: {e}") from None


def load_backbone(path, handles=None, name: Optional[str] = None) -> Backbone:
    """Load a weights file as a :class:`~.base.Backbone`.

    ``handles`` overrides the taxonomy types the backbone is routed to (default: from its
    architecture). Raises ``FileNotFoundError`` for a missing file and
    :class:`BackboneLoadError` (a ``ValueError`` naming the file) for everything else."""
    path = Path(path)
    state_dict, meta = read_state_dict(path)
    backbone = backbone_from_state_dict(state_dict, name or path.name, meta, handles,
                                        where=str(path))
    backbone.extra["path"] = os.fspath(path)
    return backbone
