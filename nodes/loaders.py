"""Load Reasoner / Load Restorer: pick a weights file, a device and a precision."""

from __future__ import annotations

from . import comfy
from .common import DEVICES, DTYPES, blame, check_choice, node_errors, torch_dtype
from .types import CATEGORY, RR_REASONER, RR_RESTORER

_KEEP_TIP = ("On: the model stays on the device between runs (fast). Off: it moves back to "
             "the CPU after each use, freeing GPU memory for other models.")
_DEVICE_TIP = ("auto: ComfyUI's device (else CUDA if available, else CPU). cpu/cuda force "
               "one.")
_DTYPE_TIP = ("Precision of the computation. float32 is the reference; float16/bfloat16 "
              "halve memory on a GPU (bfloat16 also runs on CPUs).")


def _model_inputs(kind: str, what: str) -> dict:
    folder = comfy.model_folder(kind)
    return {"required": {
        "model_name": (comfy.list_models(kind), {
            "default": comfy.DEFAULT_CHOICE,
            "tooltip": f"{what} weights (.safetensors). '{comfy.DEFAULT_CHOICE}' uses the "
                       f"weights shipped with the pack; other files come from "
                       f"models/reason_restore/{kind}/ (here: {folder})."}),
        "device": (list(DEVICES), {"default": "auto", "tooltip": _DEVICE_TIP}),
        "dtype": (list(DTYPES), {"default": "float32", "tooltip": _DTYPE_TIP}),
        "keep_loaded": ("BOOLEAN", {"default": True, "tooltip": _KEEP_TIP}),
    }}


def _file_stamp(kind: str, model_name) -> str:
    """For IS_CHANGED: reload when the chosen file is replaced under the same name."""
    try:
        path = comfy.resolve_model_path(kind, model_name)
        if path is None:  # runs inside ComfyUI at execution time: torch is loaded anyway
            if kind == "analyzer":
                from ..reasoner.engine import DEFAULT_ANALYZER as path
            else:
                from ..restorer.engine import DEFAULT_RESTORER as path
        stat = path.stat()
        return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
    except Exception:  # noqa: BLE001 - the load itself reports the problem
        return str(model_name)


def _load(kind: str, loader, model_name, device, dtype, keep_loaded):
    check_choice("device", device, DEVICES)
    torch_type = torch_dtype(dtype)
    with blame("device"):
        dev = comfy.get_device(device)
    path = comfy.resolve_model_path(kind, model_name, "model_name")
    try:
        return loader(path, device=dev, dtype=torch_type, keep_loaded=bool(keep_loaded))
    except FileNotFoundError as e:
        if path is None:
            raise FileNotFoundError(
                f"model_name: the built-in {kind} weights are missing ({e}); reinstall the "
                f"pack or put a .safetensors file in models/reason_restore/{kind}/") from None
        raise FileNotFoundError(f"model_name: {e}") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"model_name: {e}") from None


class RRLoadReasoner:
    DISPLAY_NAME = "Load Reasoner"
    DESCRIPTION = ("Loads the degradation reasoner (the analyzer network that diagnoses noise, "
                   "blur, JPEG, haze, rain, low light and low resolution and explains its "
                   "reasoning). Feed it to Diagnose Degradation and Severity Score.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (RR_REASONER,)
    RETURN_NAMES = ("reasoner",)
    OUTPUT_TOOLTIPS = ("The loaded reasoner.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return _model_inputs("analyzer", "Analyzer")

    @classmethod
    def IS_CHANGED(cls, model_name, **_):
        return _file_stamp("analyzer", model_name)

    @node_errors(DISPLAY_NAME)
    def load(self, model_name, device="auto", dtype="float32", keep_loaded=True):
        from ..reasoner.engine import load_reasoner
        return (_load("analyzer", load_reasoner, model_name, device, dtype, keep_loaded),)


class RRLoadRestorer:
    DISPLAY_NAME = "Load Restorer"
    DESCRIPTION = ("Loads the prior-conditioned restorer network used by Restore: one model "
                   "for every degradation type, steered by the diagnosis.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (RR_RESTORER,)
    RETURN_NAMES = ("restorer",)
    OUTPUT_TOOLTIPS = ("The loaded restorer.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return _model_inputs("restorer", "Restorer")

    @classmethod
    def IS_CHANGED(cls, model_name, **_):
        return _file_stamp("restorer", model_name)

    @node_errors(DISPLAY_NAME)
    def load(self, model_name, device="auto", dtype="float32", keep_loaded=True):
        from ..restorer.engine import load_default_restorer
        return (_load("restorer", load_default_restorer, model_name, device, dtype,
                      keep_loaded),)
