"""Build Prior Prompt (diagnosis -> restoration prior + sampler prompts) and Reference
Synthesize (the reference image the restorer may look at)."""

from __future__ import annotations

from ..reasoner.taxonomy import TAXONOMY
from .common import (check_instance, diagnosis_list, from_comfy, guided_prior, match_batch,
                     node_errors, resize_to, to_comfy)
from .types import CATEGORY, RR_DIAGNOSIS, RR_PRIOR


def _override_help() -> str:
    types = "; ".join(f"{t.name} ({', '.join(t.keys)})" for t in TAXONOMY)
    return ("User-guided restoration. Short form: '<type>: off | on | severity=0..1 | "
            "key=value, ...' joined by ';', e.g. 'noise: severity=0.8; blur: off; "
            "haze: beta=1.5'. 'off' removes a type, 'on' adds it at moderate severity, "
            "severity=x sets it (parameters follow), key=value sets one parameter. "
            f"Types (keys): {types}. Or paste a whole diagnosis JSON (e.g. an edited "
            "diagnosis_json output; a list gives one per image) to replace the diagnosis. "
            "Empty: use the diagnosis as it is.")


class RRBuildPriorPrompt:
    DISPLAY_NAME = "Build Prior Prompt"
    DESCRIPTION = ("Turns a diagnosis into the restoration prior (what Restore is conditioned "
                   "on) and into prompts and settings for a diffusion sampler: the positive "
                   "prompt names the qualities to recover, the negative one the diagnosed "
                   "artefacts, and denoise/steps/cfg grow with severity. Overrides let you "
                   "correct the diagnosis by hand.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (RR_PRIOR, "STRING", "STRING", "FLOAT", "INT", "FLOAT")
    RETURN_NAMES = ("prior", "positive", "negative", "denoise", "steps", "cfg")
    OUTPUT_TOOLTIPS = (
        "Restoration prior (diagnoses after overrides, instruction, prompts): connect to "
        "Restore.",
        "Positive prompt for a sampler (for a batch: that of its most degraded image, since "
        "one sampler pass must handle the worst case).",
        "Negative prompt naming the diagnosed artefacts.",
        "Suggested img2img denoise (0.15 for a clean image up to 0.65 for the worst).",
        "Suggested sampler steps.",
        "Suggested CFG scale.",
    )
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "diagnosis": (RR_DIAGNOSIS, {
                    "tooltip": "Diagnosis from Diagnose Degradation (or Degrade Image's "
                               "ground truth)."}),
                "overrides": ("STRING", {"default": "", "multiline": False,
                                         "tooltip": _override_help()}),
            },
            "optional": {
                "instruction": ("STRING", {
                    "default": "", "multiline": True,
                    "tooltip": "Optional free-text wish appended to the positive prompt, e.g. "
                               "'keep the film grain look, warm tones'."}),
            },
        }

    @node_errors(DISPLAY_NAME)
    def build(self, diagnosis, overrides="", instruction=""):
        diagnoses = diagnosis_list(diagnosis, None, "diagnosis")
        prior = guided_prior(diagnoses, overrides, instruction)
        worst = max(range(len(prior.prompts)),
                    key=lambda i: 0.0 if prior.diagnoses[i] is None
                    else prior.diagnoses[i].overall_severity)
        plan = prior.prompts[worst]
        return (prior, plan.positive, plan.negative, float(plan.denoise), int(plan.steps),
                float(plan.cfg))


class RRReferenceSynthesize:
    DISPLAY_NAME = "Reference Synthesize"
    DESCRIPTION = ("Provides the reference image Restore can look at. In this version it does "
                   "NOT synthesise anything: diffusion-based reference synthesis comes in a "
                   "later version. It passes a reference you connect through (resized to the "
                   "image size if needed), or returns the input image unchanged when none is "
                   "connected.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("reference",)
    OUTPUT_TOOLTIPS = ("The connected reference resized to the image size, or the input "
                       "image unchanged (no diffusion synthesis yet).",)
    FUNCTION = "synthesize"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prior": (RR_PRIOR, {
                    "tooltip": "Restoration prior from Build Prior Prompt (will drive the "
                               "diffusion synthesis of a later version; unused for now)."}),
                "image": ("IMAGE", {"tooltip": "The degraded image(s) being restored."}),
            },
            "optional": {
                "reference": ("IMAGE", {
                    "tooltip": "Optional reference (e.g. a diffusion restoration you made "
                               "with a sampler): passed through, resized to the image size. "
                               "Without it the input image is returned unchanged; built-in "
                               "diffusion synthesis comes in a later version."}),
            },
        }

    @node_errors(DISPLAY_NAME)
    def synthesize(self, prior, image, reference=None):
        from ..restorer.prior import RestorationPrior
        check_instance("prior", prior, RestorationPrior, "RR_PRIOR (Build Prior Prompt)")
        images = from_comfy(image, "image")
        if reference is None:
            return (image,)
        ref = from_comfy(reference, "reference")
        ref = match_batch(ref, images.shape[0], "reference")
        ref = resize_to(ref, images.shape[-2], images.shape[-1])
        return (to_comfy(ref),)
