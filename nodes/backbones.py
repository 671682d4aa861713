"""Load Restorer Backbone and Closed-Loop Restore: any restoration model, driven by the
diagnosis. Glue only; the work is in ``restorer/backbones``."""

from __future__ import annotations

from ..reasoner.taxonomy import TYPE_NAMES
from . import comfy
from .common import (DEVICES, DTYPES, blame, check_choice, check_instance, check_number,
                     from_comfy, node_errors, to_comfy, torch_dtype)
from .types import CATEGORY, RR_REASONER, RR_RESTORER

MIN_TILE, MAX_TILE = 64, 8192
AUTO = "auto"

_RESTORER_TIP = ("A restorer from Load Restorer Backbone or Load Restorer. Routing sends each "
                 "diagnosed degradation to the wired restorer that fixes it (the most "
                 "specialised one); the built-in fixes everything.")


def _restorer(name: str, value):
    from ..restorer.backbones import BackboneRestorer
    from ..restorer.engine import Restorer
    return check_instance(name, value, (Restorer, BackboneRestorer),
                          "RR_RESTORER (Load Restorer Backbone or Load Restorer)")


class RRLoadBackbone:
    DISPLAY_NAME = "Load Restorer Backbone"
    DESCRIPTION = ("Loads any restoration or upscaling model you own as a restorer: the files in "
                   "ComfyUI's models/upscale_models (ESRGAN, Compact, SPAN, SwinIR, HAT, "
                   "NAFNet, SCUNet, DnCNN, ... detected with spandrel) and in "
                   "models/reason_restore/restorer. Noise-level denoisers (DRUNet, FDnCNN, "
                   "FFDNet) take sigma from the diagnosis, FBCNN the JPEG quality. Files are "
                   "read safely (safetensors, or weights-only pickles). Connect it to Restore "
                   "or Closed-Loop Restore.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (RR_RESTORER, "STRING")
    RETURN_NAMES = ("restorer", "info")
    OUTPUT_TOOLTIPS = ("The loaded backbone, usable wherever a restorer is.",
                       "What was detected: architecture, scale, conditioning and the "
                       "degradations it is routed to.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (comfy.list_backbone_models(), {
                "default": comfy.DEFAULT_CHOICE,
                "tooltip": f"'{comfy.DEFAULT_CHOICE}' is the pack's own restorer; "
                           f"'upscale_models/...' are ComfyUI's upscale models, "
                           f"'reason_restore/...' the files in models/reason_restore/restorer/. "
                           f"Supported: {', '.join(comfy.BACKBONE_EXTENSIONS)}."}),
            "device": (list(DEVICES), {"default": "auto", "tooltip": (
                "auto: ComfyUI's device (else CUDA if available, else CPU). cpu/cuda force "
                "one.")}),
            "dtype": (list(DTYPES), {"default": "float32", "tooltip": (
                "Precision. float16/bfloat16 halve GPU memory; architectures that do not "
                "support one fall back to float32.")}),
            "keep_loaded": ("BOOLEAN", {"default": True, "tooltip": (
                "On: the model stays on the device between runs. Off: it returns to the CPU "
                "after each use.")}),
            "handles": ("STRING", {"default": AUTO, "tooltip": (
                f"Which degradations this model fixes, for routing: '{AUTO}' (from the "
                f"architecture and scale: x2/x4 -> low_resolution, DRUNet/FFDNet -> noise, "
                f"FBCNN -> jpeg, ...) or a comma list of {', '.join(TYPE_NAMES)}.")}),
        }}

    @classmethod
    def IS_CHANGED(cls, model_name, **_):
        try:
            path = comfy.resolve_backbone_path(model_name)
            if path is None:
                from ..restorer.engine import DEFAULT_RESTORER as path
            stat = path.stat()
            return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
        except Exception:  # noqa: BLE001 - the load reports the problem
            return str(model_name)

    @node_errors(DISPLAY_NAME)
    def load(self, model_name, device="auto", dtype="float32", keep_loaded=True,
             handles=AUTO):
        from ..restorer.backbones import load_backbone_restorer
        check_choice("device", device, DEVICES)
        torch_type = torch_dtype(dtype)
        if not isinstance(handles, str):
            raise TypeError(f"handles: expected text, got {type(handles).__name__}")
        chosen = None if handles.strip().lower() in ("", AUTO) else handles
        if chosen is not None:
            from ..restorer.backbones.base import check_handles
            with blame("handles"):
                chosen = check_handles(chosen, "handles")
        with blame("device"):
            dev = comfy.get_device(device)
        path = comfy.resolve_backbone_path(model_name, "model_name")
        try:
            r = load_backbone_restorer(path, device=dev, dtype=torch_type,
                                       keep_loaded=bool(keep_loaded), handles=chosen)
        except FileNotFoundError as e:
            if path is None:
                raise FileNotFoundError(
                    f"model_name: the built-in restorer weights are missing ({e}); pick a "
                    f"model file instead, or reinstall the pack") from None
            raise FileNotFoundError(f"model_name: {e}") from None
        except (ValueError, TypeError) as e:
            raise ValueError(f"model_name: {e}") from None
        info = r.describe()
        return {"ui": {"text": [info]}, "result": (r, info)}


class RRClosedLoopRestore:
    DISPLAY_NAME = "Closed-Loop Restore"
    DESCRIPTION = ("Restoration plan + closed loop: diagnoses the image, routes each "
                   "degradation (JPEG -> noise -> low resolution -> blur -> low light -> rain -> "
                   "haze) to the wired restorer that fixes it, and after every step re-diagnoses "
                   "and scores the result, stopping when the residual severity is under the "
                   "threshold or stops falling. best_of_n > 1 tries several restorers/strengths "
                   "per step and keeps the lowest residual severity. The report shows the "
                   "chosen path and every intermediate severity.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING", "FLOAT")
    RETURN_NAMES = ("image", "report", "final_severity")
    OUTPUT_TOOLTIPS = (
        "The restored image(s), same size as the input.",
        "Why: the plan, each step's backbone, conditioning (sigma, JPEG quality) and residual "
        "severity before/after, rejected steps and candidates, and why the loop stopped.",
        "Residual overall severity of the result (batch mean), 0 = clean.",
    )
    FUNCTION = "restore"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reasoner": (RR_REASONER, {"tooltip": "The reasoner from Load Reasoner: it "
                                                      "diagnoses and scores every step."}),
                "image": ("IMAGE", {"tooltip": "Degraded image(s); any size."}),
                "restorer": (RR_RESTORER, {"tooltip": _RESTORER_TIP}),
                "threshold": ("FLOAT", {
                    "default": 0.15, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Stop once the residual overall severity is below this "
                               "(0 = clean, 1 = worst)."}),
                "max_steps": ("INT", {
                    "default": 3, "min": 1, "max": 8,
                    "tooltip": "At most this many restoration steps per image."}),
                "best_of_n": ("INT", {
                    "default": 1, "min": 1, "max": 8,
                    "tooltip": "Candidates per step: 1 runs the routed restorer; more also try "
                               "the other wired restorers that fix the step, then lower "
                               "strengths, keeping the lowest residual severity."}),
                "tile": ("INT", {
                    "default": 512, "min": MIN_TILE, "max": MAX_TILE, "step": 64,
                    "tooltip": "Tile size in pixels for every restorer; halved automatically "
                               "on out-of-memory."}),
                "overlap": ("INT", {
                    "default": 32, "min": 0, "max": 256, "step": 8,
                    "tooltip": "Pixels shared by neighbouring tiles, blended to hide seams; "
                               "less than half the tile."}),
            },
            "optional": {
                "restorer_2": (RR_RESTORER, {"tooltip": "Optional second restorer. "
                                                        + _RESTORER_TIP}),
                "restorer_3": (RR_RESTORER, {"tooltip": "Optional third restorer. "
                                                        + _RESTORER_TIP}),
            },
        }

    @node_errors(DISPLAY_NAME)
    def restore(self, reasoner, image, restorer, threshold=0.15, max_steps=3, best_of_n=1,
                tile=512, overlap=32, restorer_2=None, restorer_3=None):
        from ..reasoner.engine import Reasoner
        from ..restorer.backbones import closed_loop_restore_batch
        check_instance("reasoner", reasoner, Reasoner, "RR_REASONER (Load Reasoner)")
        restorers = [_restorer("restorer", restorer)]
        for name, r in (("restorer_2", restorer_2), ("restorer_3", restorer_3)):
            if r is not None:
                restorers.append(_restorer(name, r))
        check_number("threshold", threshold, 0.0, 1.0)
        check_number("max_steps", max_steps, 1, 8, integer=True)
        check_number("best_of_n", best_of_n, 1, 8, integer=True)
        check_number("tile", tile, MIN_TILE, MAX_TILE, integer=True)
        check_number("overlap", overlap, 0, 256, integer=True)
        if overlap >= tile / 2:
            raise ValueError(f"overlap: {overlap} must be less than half the tile ({tile})")
        images = from_comfy(image, "image")
        comfy.check_interrupt()
        bar = comfy.progress_bar(images.shape[0])
        out, reports = closed_loop_restore_batch(
            images, reasoner, restorers, threshold=float(threshold), max_steps=int(max_steps),
            best_of_n=int(best_of_n), tile=int(tile), overlap=int(overlap), progress=bar,
            check_interrupt=comfy.check_interrupt)
        if len(reports) == 1:
            text = reports[0].text()
        else:
            text = "\n\n".join(f"### image {i + 1} of {len(reports)}\n{r.text()}"
                               for i, r in enumerate(reports))
        final = float(sum(r.final_severity for r in reports) / len(reports))
        if not all(getattr(r, "keep_loaded", True) for r in restorers):
            comfy.soft_empty_cache()
        return {"ui": {"text": [text]}, "result": (to_comfy(out), text, final)}
