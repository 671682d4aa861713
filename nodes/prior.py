"""Build Prior Prompt (diagnosis -> restoration prior + the diffusion controller's settings for
any sampler) and Reference Synthesize (the reference image Restore may look at, synthesised
with a diffusion model when one is connected)."""

from __future__ import annotations

from dataclasses import replace

from ..reasoner.taxonomy import TAXONOMY
from ..restorer.controller import (AUTO_SEED, CFG_RANGE, DEFAULT_SEED, DENOISE_RANGE, MAX_SEED,
                                   STEPS_RANGE)
from . import comfy
from .common import (check_instance, check_number, diagnosis_list, from_comfy, guided_prior,
                     match_batch, node_errors, resize_to, to_comfy)
from .types import CATEGORY, RR_DIAGNOSIS, RR_DIFFUSION, RR_PRIOR, RR_RESTORER

MAX_SIDE = 4096


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
    DESCRIPTION = ("The diffusion controller. Turns a diagnosis into the restoration prior "
                   "(what Restore is conditioned on) and into everything a diffusion sampler "
                   "takes: a positive prompt naming the scene and the qualities to recover, a "
                   "negative one naming exactly the diagnosed artefacts, and denoise, steps, "
                   "cfg growing with severity (light damage: low denoise), plus a seed. Wire "
                   "them into CLIP Text Encode and KSampler (img2img) to restore with your own "
                   "checkpoint. Overrides let you correct the diagnosis by hand.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (RR_PRIOR, "STRING", "STRING", "FLOAT", "INT", "FLOAT", "INT")
    RETURN_NAMES = ("prior", "positive", "negative", "denoise", "steps", "cfg", "seed")
    OUTPUT_TOOLTIPS = (
        "Restoration prior (diagnoses after overrides, instruction, sampler settings): connect "
        "to Restore or Reference Synthesize.",
        "Positive prompt for a sampler: scene/objects, then the qualities to recover for "
        "exactly the diagnosed types, most severe first (for a batch: that of its most "
        "degraded image, since one sampler pass must handle the worst case).",
        "Negative prompt naming exactly the diagnosed artefacts, most severe first.",
        f"img2img denoise: {DENOISE_RANGE[0]} + {DENOISE_RANGE[1] - DENOISE_RANGE[0]:g} x "
        f"overall severity ({DENOISE_RANGE[0]} for a clean image up to {DENOISE_RANGE[1]} for "
        f"the worst). Connect to KSampler's denoise.",
        f"Sampler steps: {STEPS_RANGE[0]} + {STEPS_RANGE[1] - STEPS_RANGE[0]} x severity "
        f"(rounded).",
        f"CFG scale: {CFG_RANGE[0]:g} + {CFG_RANGE[1] - CFG_RANGE[0]:g} x severity.",
        "Seed for the sampler: the seed input, or (seed -1) one derived from the diagnosis.",
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
                "seed": ("INT", {
                    "default": DEFAULT_SEED, "min": AUTO_SEED, "max": MAX_SEED,
                    "control_after_generate": True,
                    "tooltip": "Seed passed to the sampler (and used by Reference Synthesize). "
                               "-1 derives one from the diagnosis: the same picture always "
                               "gets the same seed, different pictures different ones. Keep "
                               "'control after generate' on fixed for reproducible results."}),
            },
        }

    @node_errors(DISPLAY_NAME)
    def build(self, diagnosis, overrides="", instruction="", seed=DEFAULT_SEED):
        from ..restorer.controller import control_batch
        check_number("seed", seed, AUTO_SEED, MAX_SEED, integer=True)
        diagnoses = diagnosis_list(diagnosis, None, "diagnosis")
        prior = guided_prior(diagnoses, overrides, instruction)
        prior = replace(prior, prompts=control_batch(prior.diagnoses, prior.instruction,
                                                     int(seed)))
        worst = max(range(len(prior.prompts)),
                    key=lambda i: 0.0 if prior.diagnoses[i] is None
                    else prior.diagnoses[i].overall_severity)
        plan = prior.prompts[worst]
        return (prior, plan.positive, plan.negative, float(plan.denoise), int(plan.steps),
                float(plan.cfg), int(plan.seed))


class RRReferenceSynthesize:
    DISPLAY_NAME = "Reference Synthesize"
    DESCRIPTION = ("Makes the reference image Restore can look at. With a diffusion model "
                   "connected (Load Diffusion Reference Model) it re-draws each image with "
                   "img2img under the controller's settings from the prior: prompts naming the "
                   "diagnosed artefacts, denoise/steps/cfg from severity, the prior's seed "
                   "(deterministic). Optionally the image is first restored by a connected "
                   "restorer. Progress and Cancel work per step. Without a diffusion model it "
                   "passes a connected reference through (resized to the image), or returns "
                   "the image unchanged. Note: the built-in restorer has no trained "
                   "reference-aware blocks yet, so Restore ignores the reference (see "
                   "docs/diffusion.md).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("reference",)
    OUTPUT_TOOLTIPS = ("The synthesised reference (same size as the image), or without a "
                       "diffusion model the connected reference resized to the image, or the "
                       "image unchanged.",)
    FUNCTION = "synthesize"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prior": (RR_PRIOR, {
                    "tooltip": "Restoration prior from Build Prior Prompt: its prompts, "
                               "denoise, steps, cfg and seed drive the diffusion synthesis."}),
                "image": ("IMAGE", {"tooltip": "The degraded image(s) being restored."}),
            },
            "optional": {
                "diffusion": (RR_DIFFUSION, {
                    "tooltip": "Image-to-image diffusion model from Load Diffusion Reference "
                               "Model. Connected: the reference is synthesised with it. Not "
                               "connected: the old pass-through behaviour."}),
                "reference": ("IMAGE", {
                    "tooltip": "A reference you made yourself (e.g. with KSampler), passed "
                               "through resized to the image size. Use either this or a "
                               "diffusion model, not both."}),
                "restorer": (RR_RESTORER, {
                    "tooltip": "Optional restorer (Load Restorer): the image is restored first "
                               "and the diffusion model starts from the cleaner picture "
                               "(recommended for heavy noise or JPEG). Only used with a "
                               "diffusion model."}),
                "denoise": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "img2img denoise strength; 0 uses the controller's value from "
                               "the prior (grows with severity)."}),
                "steps": ("INT", {
                    "default": 0, "min": 0, "max": 200,
                    "tooltip": "Sampler steps; 0 uses the controller's value from the prior. "
                               "img2img runs about denoise x steps of them."}),
                "max_side": ("INT", {
                    "default": 1024, "min": 0, "max": MAX_SIDE, "step": 64,
                    "tooltip": "Longest side the diffusion model works at (the result is "
                               "resized back to the image size); 0 keeps the image size. "
                               "Sizes are rounded to a multiple of 8; large images use a "
                               "tiled VAE."}),
            },
        }

    @node_errors(DISPLAY_NAME)
    def synthesize(self, prior, image, diffusion=None, reference=None, restorer=None,
                   denoise=0.0, steps=0, max_side=1024):
        from ..restorer.prior import RestorationPrior
        check_instance("prior", prior, RestorationPrior, "RR_PRIOR (Build Prior Prompt)")
        check_number("denoise", denoise, 0.0, 1.0)
        check_number("steps", steps, 0, 200, integer=True)
        check_number("max_side", max_side, 0, MAX_SIDE, integer=True)
        images = from_comfy(image, "image")
        b = images.shape[0]
        if diffusion is None:
            if reference is None:
                return (image,)
            ref = from_comfy(reference, "reference")
            ref = match_batch(ref, b, "reference")
            ref = resize_to(ref, images.shape[-2], images.shape[-1])
            return (to_comfy(ref),)

        from ..restorer.reference.pipeline import DiffusionReference
        from ..restorer.reference.synthesize import synthesize_reference
        check_instance("diffusion", diffusion, DiffusionReference,
                       "RR_DIFFUSION (Load Diffusion Reference Model)")
        if reference is not None:
            raise ValueError("reference: connect either a reference or a diffusion model, not "
                             "both (with a diffusion model the reference is synthesised)")
        diagnoses = diagnosis_list(prior.diagnoses, b, "prior")
        plans = list(prior.prompts)
        if not plans:
            raise ValueError("prior: it carries no sampler settings; rebuild it with Build "
                             "Prior Prompt")
        if len(plans) not in (1, b):
            raise ValueError(f"prior: {len(plans)} images' settings for a batch of {b}")
        if restorer is not None:
            from ..restorer.backbones import BackboneRestorer
            from ..restorer.engine import Restorer
            check_instance("restorer", restorer, (Restorer, BackboneRestorer),
                           "RR_RESTORER (Load Restorer)")
            comfy.check_interrupt()
            images = restorer.restore(images, diagnoses, progress=comfy.progress_bar(b),
                                      check_interrupt=comfy.check_interrupt)
        comfy.check_interrupt()
        comfy.free_memory(int(diffusion.memory_bytes() * 1.2), diffusion.device)
        bar = comfy.progress_bar(1)
        out = synthesize_reference(diffusion, images, plans, denoise=float(denoise) or None,
                                   steps=int(steps) or None, max_side=int(max_side),
                                   progress=bar, check_interrupt=comfy.check_interrupt)
        return (to_comfy(out),)
