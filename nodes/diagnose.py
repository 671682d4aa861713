"""Diagnose Degradation and Severity Score: the reasoner's two nodes."""

from __future__ import annotations

from ..reasoner.taxonomy import TAXONOMY
from . import comfy
from .common import (SEVERITY_NAMES, check_instance, describe_batch, from_comfy, node_errors,
                     severity_report)
from .types import CATEGORY, RR_DIAGNOSIS, RR_REASONER

_TYPES_TEXT = ", ".join(t.label.lower() for t in TAXONOMY)


def _reasoner(value):
    from ..reasoner.engine import Reasoner
    return check_instance("reasoner", value, Reasoner, "RR_REASONER (Load Reasoner)")


def _progress(total: int):
    bar = comfy.progress_bar(total)

    def update(done, n):
        bar(done, n)
        comfy.check_interrupt()
    return update


class RRDiagnoseDegradation:
    DISPLAY_NAME = "Diagnose Degradation"
    DESCRIPTION = (f"Reasons about what is wrong with each image ({_TYPES_TEXT}): which "
                   f"degradations are present, their physical parameters, severity and a "
                   f"restoration plan, written out as a chain of thought. Blur and low "
                   f"resolution are checked against the image itself (an upscaling's periodic "
                   f"trace or its absence, the blur's PSF in the spectrum, the fine detail it "
                   f"keeps). One diagnosis per image of the batch.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (RR_DIAGNOSIS, "STRING", "STRING")
    RETURN_NAMES = ("diagnosis", "chain_of_thought", "diagnosis_json")
    OUTPUT_TOOLTIPS = (
        "Structured diagnosis, one per image: connect to Build Prior Prompt or Restore.",
        "The reasoning in plain words (observation -> degradations -> severity -> plan); "
        "batches get one section per image.",
        "The diagnosis as JSON (a list for batches). Edit it and paste it into Build Prior "
        "Prompt's overrides to restore with your own diagnosis.",
    )
    FUNCTION = "diagnose"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "reasoner": (RR_REASONER, {"tooltip": "The reasoner from Load Reasoner."}),
            "image": ("IMAGE", {"tooltip": "Image(s) to diagnose; any size, RGB, RGBA or "
                                           "grayscale."}),
        }}

    @node_errors(DISPLAY_NAME)
    def diagnose(self, reasoner, image):
        reasoner = _reasoner(reasoner)
        images = from_comfy(image, "image")
        diagnoses = reasoner.diagnose(images, progress=_progress(images.shape[0]))
        cot, js = describe_batch(diagnoses)
        # The "ui" text lands in ComfyUI's /history (and API clients) without needing a
        # text-display node in the graph.
        return {"ui": {"text": [cot]}, "result": (diagnoses, cot, js)}


class RRSeverityScore:
    DISPLAY_NAME = "Severity Score"
    DESCRIPTION = ("Measures how much degradation is left in an image (0 = clean, 1 = the "
                   "worst level the pack synthesises), per degradation type and overall, with "
                   "the reasoner. Blur and low resolution are checked against the image itself "
                   "(an upscaling's periodic trace or its absence, the blur's PSF in the "
                   "spectrum, the fine detail it keeps), as Diagnose Degradation checks them. "
                   "With a clean_reference it also computes PSNR and SSIM. Batches report means "
                   "(and per-image lines in the report).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("FLOAT",) * len(SEVERITY_NAMES) + ("FLOAT", "STRING", "FLOAT", "FLOAT")
    RETURN_NAMES = SEVERITY_NAMES + ("overall", "report", "psnr", "ssim")
    OUTPUT_TOOLTIPS = tuple(
        f"Residual {t.label.lower()} severity in [0, 1] (batch mean)." for t in TAXONOMY) + (
        "Overall residual severity in [0, 1] (1 - prod(1 - per-type)), batch mean.",
        "Readable report: per-type severities with tiers, PSNR/SSIM, per-image lines.",
        "PSNR in dB against clean_reference (batch mean; inf when identical); -1.0 when no "
        "reference is connected.",
        "SSIM on luminance against clean_reference (batch mean); -1.0 when no reference is "
        "connected.",
    )
    FUNCTION = "score"
    # An output node so it runs (and reports) even when nothing uses its numbers.
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reasoner": (RR_REASONER, {"tooltip": "The reasoner from Load Reasoner."}),
                "image": ("IMAGE", {"tooltip": "Image(s) to score, e.g. the restored "
                                               "output."}),
            },
            "optional": {
                "clean_reference": ("IMAGE", {
                    "tooltip": "Optional clean (ground-truth) version of the same picture, same "
                               "size, for PSNR/SSIM. A batch of 1 is compared with every "
                               "image."}),
            },
        }

    @node_errors(DISPLAY_NAME)
    def score(self, reasoner, image, clean_reference=None):
        reasoner = _reasoner(reasoner)
        images = from_comfy(image, "image")
        clean = None if clean_reference is None else from_comfy(clean_reference,
                                                                "clean_reference")
        comfy.check_interrupt()
        r = severity_report(reasoner, images, clean)
        values = tuple(r["mean_per_type"][t.name] for t in TAXONOMY)
        result = values + (r["mean_overall"], r["report"], r["psnr"], r["ssim"])
        return {"ui": {"text": [r["report"]]}, "result": result}
