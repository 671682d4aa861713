"""Load VLM Reasoner: a local Qwen3-VL / Qwen2.5-VL as the reasoner, alone or fused with the
analyzer. Glue only: folders come from :mod:`.comfy`, the work from ``reasoner/vlm``."""

from __future__ import annotations

from pathlib import Path

from ..reasoner.vlm.folders import (SUPPORTED, find_model_folders, folder_stamp,
                                    resolve_in_roots)
from . import comfy
from .common import DEVICES, blame, check_choice, check_number, node_errors
from .types import CATEGORY, RR_REASONER

AUTO = "auto (first Qwen-VL folder found)"
VLM_DTYPES = ("auto", "bfloat16", "float16", "float32")
ATTENTIONS = ("sdpa", "eager")  # same as reasoner.vlm.backend.ATTENTIONS (torch-free here)
MODES = ("fused", "vlm")
MAX_NEW_TOKENS = 4096
_FAMILY_ORDER = {"qwen3_vl": 0, "qwen3_vl_moe": 1, "qwen2_5_vl": 2}
_FAMILIES = " / ".join(label for label, _ in SUPPORTED.values())


def _found():
    found = find_model_folders(comfy.llm_folders())
    return sorted(found, key=lambda x: (_FAMILY_ORDER.get(x[2], 9), x[0]))


def _choices() -> list[str]:
    return [AUTO] + sorted(name for name, _, _ in find_model_folders(comfy.llm_folders()))


def resolve_folder(model_name, model_path="") -> Path:
    """The checkpoint folder a node's inputs name (errors name the input)."""
    if model_path is not None and not isinstance(model_path, str):
        raise TypeError(f"model_path: expected text, got {type(model_path).__name__}")
    path = (model_path or "").strip()
    if path:
        p = Path(path).expanduser()
        if not p.is_absolute():
            raise ValueError(f"model_path: expected an absolute path to a local model folder, "
                             f"got {path!r}; for folders inside models/LLM use model_name")
        if not p.is_dir():
            raise FileNotFoundError(f"model_path: {path!r} is not a folder")
        return p
    roots = comfy.llm_folders()
    if model_name in (None, "", AUTO):
        found = _found()
        if not found:
            where = ", ".join(str(r) for r in roots)
            raise FileNotFoundError(
                f"model_name: no {_FAMILIES} checkpoint folder found in {where}; put the "
                f"model folder there (config.json, *.safetensors, tokenizer and processor "
                f"files; see docs/vlm.md) or set model_path to a local folder")
        return found[0][1]
    return resolve_in_roots(model_name, roots, "model_name")


class RRLoadVLMReasoner:
    DISPLAY_NAME = "Load VLM Reasoner"
    DESCRIPTION = (f"Loads a local {_FAMILIES} vision-language model as the degradation "
                   f"reasoner: it writes a structured chain of thought (degradation types, "
                   f"parameters, severity, likely causes, scene and objects). Fused mode "
                   f"keeps the analyzer's calibrated numbers (connect Load Reasoner) and adds "
                   f"the VLM's semantics and causes; disagreements show in the chain of "
                   f"thought. Reads models/LLM/<folder>; never downloads anything.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (RR_REASONER,)
    RETURN_NAMES = ("reasoner",)
    OUTPUT_TOOLTIPS = ("The VLM (or fused) reasoner: connect to Diagnose Degradation; with an "
                       "analyzer connected it also drives Severity Score.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        roots = ", ".join(str(r) for r in comfy.llm_folders())
        return {
            "required": {
                "model_name": (_choices(), {
                    "default": AUTO,
                    "tooltip": f"A {_FAMILIES} checkpoint folder from models/LLM (here: "
                               f"{roots}). 'auto' takes the first one found (Qwen3-VL "
                               f"first). Only folders whose config.json names a supported "
                               f"model are listed."}),
                "model_path": ("STRING", {
                    "default": "",
                    "tooltip": "Optional absolute path of a local checkpoint folder outside "
                               "models/LLM; when set it is used instead of model_name. "
                               "Nothing is ever downloaded."}),
                "device": (list(DEVICES), {
                    "default": "auto",
                    "tooltip": "auto: ComfyUI's device (else CUDA if available, else CPU). "
                               "A VLM on the CPU works but is slow."}),
                "dtype": (list(VLM_DTYPES), {
                    "default": "auto",
                    "tooltip": "auto: bfloat16 on a GPU that supports it (else float16), "
                               "float32 on the CPU. 16-bit halves memory."}),
                "attention": (list(ATTENTIONS), {
                    "default": "sdpa",
                    "tooltip": "Attention implementation: sdpa (PyTorch's fused attention, "
                               "faster, less memory) or eager (the reference, for debugging)."}),
                "max_new_tokens": ("INT", {
                    "default": 512, "min": 64, "max": MAX_NEW_TOKENS, "step": 64,
                    "tooltip": "Most tokens the VLM may write per image. A cut-off answer is "
                               "still read, marked low confidence; 'Thinking' models need "
                               "more."}),
                "keep_loaded": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "On: the VLM stays on the device between runs (fast). Off: it "
                               "moves back to the CPU after each diagnosis, freeing GPU "
                               "memory for other models."}),
                "mode": (list(MODES), {
                    "default": "fused",
                    "tooltip": "fused: the analyzer's calibrated numbers + the VLM's scene, "
                               "objects and causes, disagreements shown (needs the analyzer "
                               "input). vlm: the VLM's own, uncalibrated findings."}),
            },
            "optional": {
                "analyzer": (RR_REASONER, {
                    "tooltip": "The analyzer from Load Reasoner: required for fused mode; "
                               "also lets Severity Score work with this reasoner."}),
                "hint": ("STRING", {
                    "default": "", "multiline": True,
                    "tooltip": "Optional context for the VLM, e.g. 'scanned film photo' or "
                               "'night shot from a phone'. Treated as information, never as "
                               "instructions."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, model_name, model_path="", **_):
        try:
            return folder_stamp(resolve_folder(model_name, model_path))
        except Exception:  # noqa: BLE001 - the load itself reports the problem
            return f"{model_name}|{model_path}"

    @node_errors(DISPLAY_NAME)
    def load(self, model_name, model_path="", device="auto", dtype="auto", attention="sdpa",
             max_new_tokens=512, keep_loaded=True, mode="fused", analyzer=None, hint=""):
        from ..reasoner.engine import Reasoner
        from ..reasoner.vlm.backend import VLMReasoner, load_vlm_reasoner
        from ..reasoner.vlm.fusion import FusedReasoner
        check_choice("device", device, DEVICES)
        check_choice("dtype", dtype, VLM_DTYPES)
        check_choice("attention", attention, ATTENTIONS)
        check_choice("mode", mode, MODES)
        check_number("max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS, integer=True)
        if hint is not None and not isinstance(hint, str):
            raise TypeError(f"hint: expected text, got {type(hint).__name__}")
        if analyzer is not None and (not isinstance(analyzer, Reasoner)
                                     or isinstance(analyzer, (VLMReasoner, FusedReasoner))):
            raise TypeError(f"analyzer: expected the analyzer from Load Reasoner, got "
                            f"{type(analyzer).__name__}")
        if mode == "fused" and analyzer is None:
            raise ValueError("analyzer: mode 'fused' needs the analyzer; connect Load Reasoner "
                             "to the analyzer input, or choose mode 'vlm'")
        with blame("device"):
            dev = comfy.get_device(device)
        folder = resolve_folder(model_name, model_path)
        where = "model_path" if (model_path or "").strip() else "model_name"
        with blame(where):
            vlm = load_vlm_reasoner(folder, device=dev, dtype=dtype,
                                    attn_implementation=attention,
                                    max_new_tokens=int(max_new_tokens),
                                    keep_loaded=bool(keep_loaded), hint=hint or "",
                                    before_load=comfy.free_memory)
        return (FusedReasoner(analyzer, vlm, mode),)
