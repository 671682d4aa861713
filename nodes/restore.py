"""Restore: the prior-conditioned restorer, tiled, with progress and interrupts."""

from __future__ import annotations

import logging

from . import comfy
from .common import (check_instance, check_number, diagnosis_list, from_comfy, node_errors,
                     to_comfy, upscale_factor)
from .types import CATEGORY, RR_DIAGNOSIS, RR_PRIOR, RR_RESTORER

log = logging.getLogger("reason_restore")

MAX_UPSCALE = 4.0
MIN_TILE, MAX_TILE = 64, 8192


def _memory_estimate(restorer, tile: int) -> int:
    """Rough device bytes for one tile: the weights plus ~24 full-resolution feature maps of
    the network's width (the widest activations live at full resolution)."""
    element = 2 if str(restorer.dtype) in ("torch.float16", "torch.bfloat16") else 4
    weights = sum(p.numel() for p in restorer.model.parameters()) * element
    width = getattr(getattr(restorer.model, "config", None), "width", 24)
    return weights + 24 * width * tile * tile * element


class RRRestore:
    DISPLAY_NAME = "Restore"
    DESCRIPTION = ("Restores the image(s) with one network for every degradation type, "
                   "conditioned on the diagnosis (through a prior from Build Prior Prompt, or a "
                   "diagnosis directly). With neither it restores blind, which the shipped "
                   "weights do poorly (see the README): wire a diagnosis. An image whose "
                   "diagnosis found nothing is passed through unchanged. Large images run in "
                   "overlapping tiles; the progress bar and Cancel work per tile.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The restored image(s), clamped to [0, 1] (enlarged when upscale "
                       "applies).",)
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "restorer": (RR_RESTORER, {"tooltip": "The restorer from Load Restorer."}),
                "image": ("IMAGE", {"tooltip": "Degraded image(s) to restore; any size."}),
                "upscale": ("FLOAT", {
                    "default": 1.0, "min": 1.0, "max": MAX_UPSCALE, "step": 0.25,
                    "tooltip": "Enlargement factor (1-4). Applied only when the diagnosis "
                               "shows low resolution (for any image of the batch), when "
                               "restoring blind, or when force_upscale is on."}),
                "strength": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                    "tooltip": "1 = full restoration; lower values blend the result with the "
                               "input (0 returns the input)."}),
                "tile": ("INT", {
                    "default": 512, "min": MIN_TILE, "max": MAX_TILE, "step": 64,
                    "tooltip": "Tile size in pixels; larger is faster but needs more memory. "
                               "On out-of-memory the tile is halved automatically. Haze "
                               "needs the whole scene: a tile at least the image's size "
                               "restores it best (0.7-1 dB better than 512-px tiles on "
                               "768-px photos)."}),
                "overlap": ("INT", {
                    "default": 32, "min": 0, "max": 256, "step": 8,
                    "tooltip": "Pixels shared by neighbouring tiles, blended smoothly to hide "
                               "seams; must be less than half the tile."}),
                "force_upscale": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Enlarge by upscale even when the diagnosis shows no low "
                               "resolution."}),
            },
            "optional": {
                "prior": (RR_PRIOR, {
                    "tooltip": "Restoration prior from Build Prior Prompt (includes your "
                               "overrides). Takes precedence over diagnosis."}),
                "diagnosis": (RR_DIAGNOSIS, {
                    "tooltip": "Diagnosis from Diagnose Degradation, used when no prior is "
                               "connected. With neither: blind restoration (much weaker: the "
                               "shipped restorer was trained mostly with a diagnosis)."}),
                "reference": ("IMAGE", {
                    "tooltip": "Optional reference image (e.g. from Reference Synthesize), "
                               "read by the built-in restorer's reference-aware blocks. "
                               "Weighted by how well it matches the picture: an unrelated "
                               "reference is ignored (the log says so); backbones ignore it."}),
                "data_consistency": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Pull the result back to what the input supports through the "
                               "diagnosed physics (haze veil, low-light tone curve, blur PSF, "
                               "resolution, noise and JPEG levels; diagnosed noise is first "
                               "filtered out of the input with the restoration as a guide; "
                               "skipped when rain is diagnosed). Worth several dB on mildly "
                               "degraded and noisy photos; built-in restorer only."}),
            },
        }

    @node_errors(DISPLAY_NAME)
    def restore(self, restorer, image, upscale=1.0, strength=1.0, tile=512, overlap=32,
                force_upscale=False, prior=None, diagnosis=None, reference=None,
                data_consistency=True):
        from ..restorer.backbones import BackboneRestorer
        from ..restorer.engine import Restorer, airlight_note
        from ..restorer.prior import RestorationPrior
        check_instance("restorer", restorer, (Restorer, BackboneRestorer),
                       "RR_RESTORER (Load Restorer)")
        check_number("upscale", upscale, 1.0, MAX_UPSCALE)
        check_number("strength", strength, 0.0, 1.0)
        check_number("tile", tile, MIN_TILE, MAX_TILE, integer=True)
        check_number("overlap", overlap, 0, 256, integer=True)
        if overlap >= tile / 2:
            raise ValueError(f"overlap: {overlap} must be less than half the tile ({tile})")
        images = from_comfy(image, "image")
        b = images.shape[0]
        if prior is not None:
            check_instance("prior", prior, RestorationPrior, "RR_PRIOR (Build Prior Prompt)")
            diagnoses = diagnosis_list(prior.diagnoses, b, "prior")
        else:
            diagnoses = diagnosis_list(diagnosis, b, "diagnosis")
        ref = None if reference is None else from_comfy(reference, "reference")
        factor = upscale_factor(diagnoses, float(upscale), bool(force_upscale))
        comfy.check_interrupt()
        comfy.free_memory(_memory_estimate(restorer, int(tile)), restorer.device)
        bar = comfy.progress_bar(b)
        extra = {"consistency": bool(data_consistency)} if isinstance(restorer, Restorer) else {}
        out = restorer.restore(images, diagnoses, reference=ref, upscale=factor,
                               strength=float(strength), tile=int(tile), overlap=int(overlap),
                               progress=bar, check_interrupt=comfy.check_interrupt, **extra)
        del images
        for i, trust in enumerate(getattr(restorer, "last_reference_trust", None) or []):
            log.info("ReasonRestore Restore: image %d: reference trust %.2f%s", i, trust,
                     " (does not match the picture: ignored)" if trust == 0 else "")
        for i, said, used in getattr(restorer, "last_airlight", None) or []:
            note = airlight_note(said, used)
            if note:
                log.info("ReasonRestore Restore: image %d: %s", i, note)
        if not restorer.keep_loaded:
            comfy.soft_empty_cache()
        return (to_comfy(out),)
