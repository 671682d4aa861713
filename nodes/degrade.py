"""Degrade Image: synthesise a known degradation (for testing, benchmarks and demos)."""

from __future__ import annotations

from ..reasoner.taxonomy import TAXONOMY
from . import comfy
from .common import blame, check_number, from_comfy, node_errors
from .types import CATEGORY, RR_DIAGNOSIS

SEED_MAX = 0xFFFFFFFFFFFFFFFF


def spec_help() -> str:
    """Tooltip text for the spec input: every type and key with its range, from the
    taxonomy."""
    parts = []
    for t in TAXONOMY:
        keys = ", ".join(f"{p.key} {p.low:g}-{p.high:g}" for p in t.params)
        parts.append(f"{t.name} ({keys})")
    return ("Degradations to apply, in order. Short form: 'noise: sigma=25; jpeg: quality=30' "
            "(type: key=value, ... joined by ';'; missing keys take their neutral value), "
            "or JSON: [{\"type\": \"noise\", \"params\": {\"sigma\": 25}}]. Types (keys and "
            "ranges): " + "; ".join(parts) + ".")


class RRDegradeImage:
    DISPLAY_NAME = "Degrade Image"
    DESCRIPTION = ("Applies a chosen mix of degradations to a clean image, deterministically "
                   "for a seed, and outputs the ground-truth diagnosis: try the reasoner and "
                   "the restorer on damage you control, and compare with Severity Score's "
                   "PSNR/SSIM against the clean image.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", RR_DIAGNOSIS)
    RETURN_NAMES = ("image", "ground_truth")
    OUTPUT_TOOLTIPS = ("The degraded image(s).",
                       "The exact diagnosis of what was applied (one per image).")
    FUNCTION = "degrade"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Clean image(s) to degrade."}),
            "spec": ("STRING", {"default": "noise: sigma=25; jpeg: quality=30",
                                "multiline": False, "tooltip": spec_help()}),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX,
                             "control_after_generate": True,
                             "tooltip": "Random seed: the same seed gives the same result. "
                                        "Image i of a batch uses seed + i."}),
        }}

    @node_errors(DISPLAY_NAME)
    def degrade(self, image, spec, seed=0):
        import numpy as np
        import torch
        from ..reasoner.synthesis import degrade, parse_spec
        check_number("seed", seed, 0, SEED_MAX, integer=True)
        if not isinstance(spec, str):
            raise TypeError(f"spec: expected text, got {type(spec).__name__}")
        with blame("spec"):
            parse_spec(spec)  # fail before any work, naming the bad part
        images = from_comfy(image, "image")
        bar = comfy.progress_bar(images.shape[0])
        outs, truths = [], []
        for i, img in enumerate(images):
            comfy.check_interrupt()
            arr = img.permute(1, 2, 0).cpu().numpy()
            out, truth = degrade(arr, spec, seed=int(seed) + i)
            outs.append(torch.from_numpy(np.ascontiguousarray(out)))
            truths.append(truth)
            bar(i + 1, images.shape[0])
        return (torch.stack(outs).clamp(0.0, 1.0), truths)
