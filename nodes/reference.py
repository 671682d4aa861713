"""Load Diffusion Reference Model: the user's own image-to-image diffusion model (a single-file
checkpoint from ComfyUI's ``models/checkpoints`` or a diffusers folder from
``models/diffusers``) for Reference Synthesize.

Dropdown entries are ``"checkpoints/<file>"`` and ``"diffusers/<folder>"``; a name from a
workflow is resolved inside those folders only (no absolute paths, no ``..``, no symlink
pointing outside). Outside ComfyUI the folders are ``$REASON_RESTORE_CHECKPOINTS`` /
``$REASON_RESTORE_DIFFUSERS`` or ``checkpoints`` / ``diffusers`` beside the pack's model
folder. No torch or diffusers at import: listing the folders is plain ``pathlib``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import comfy
from .comfy import _base_dir, _folder_paths  # the folder plumbing shared with the other loaders
# pipeline.py imports torch/diffusers only inside its functions: safe at ComfyUI start-up.
from ..restorer.reference.pipeline import (CONFIG_ROOT, OFFLOAD_MODES, SINGLE_FILE_EXTENSIONS,
                                           load_pipeline, resolve_offload)
from .common import DEVICES, DTYPES, blame, check_choice, node_errors, torch_dtype
from .types import CATEGORY, RR_DIFFUSION

SOURCES = ("checkpoints", "diffusers")
CHECKPOINT_EXTENSIONS = SINGLE_FILE_EXTENSIONS
DTYPE_CHOICES = ("auto",) + DTYPES
CONFIG_AUTO = "auto"
BUILTIN_CONFIGS = {"sd15 (built-in)": "sd15", "sdxl (built-in)": "sdxl"}
NONE_FOUND = "none found: put a checkpoint in models/checkpoints"
_MAX_DEPTH = 3  # diffusers folders are looked for this deep under models/diffusers


# --- folders -----------------------------------------------------------------------------------

def source_folders(source: str) -> list[Path]:
    """ComfyUI's folders for ``checkpoints`` / ``diffusers`` (extra_model_paths included);
    outside ComfyUI ``$REASON_RESTORE_<SOURCE>`` or ``<source>`` beside the pack's models."""
    fp = _folder_paths()
    if fp is not None:
        try:
            folders = [Path(p) for p in fp.get_folder_paths(source)]
            if folders:
                return folders
        except Exception:  # noqa: BLE001 - an unknown key: fall back to models_dir
            pass
        if getattr(fp, "models_dir", None):
            return [Path(fp.models_dir) / source]
    env = os.environ.get(f"REASON_RESTORE_{source.upper()}")
    if env:
        return [Path(env)]
    return [_base_dir().parent / source]


def _diffusers_dirs(folder: Path):
    """Sub-folders holding a ``model_index.json``, at most ``_MAX_DEPTH`` deep."""
    stack = [(folder, 0)]
    while stack:
        d, depth = stack.pop()
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir())
        except OSError:
            continue
        for c in children:
            if (c / "model_index.json").is_file():
                yield c
            elif depth + 1 < _MAX_DEPTH:
                stack.append((c, depth + 1))


def _has_weights(folder: Path) -> bool:
    try:
        return any(p.suffix == ".safetensors" for p in folder.rglob("*.safetensors"))
    except OSError:
        return False


def list_models() -> list[str]:
    names: set[str] = set()
    for folder in source_folders("checkpoints"):
        try:
            if folder.is_dir():
                for p in folder.rglob("*"):
                    if p.suffix.lower() in CHECKPOINT_EXTENSIONS and p.is_file():
                        names.add(f"checkpoints/{p.relative_to(folder).as_posix()}")
        except OSError:
            continue
    for folder in source_folders("diffusers"):
        if folder.is_dir():
            for d in _diffusers_dirs(folder):
                if _has_weights(d):
                    names.add(f"diffusers/{d.relative_to(folder).as_posix()}")
    return sorted(names) or [NONE_FOUND]


def list_configs() -> list[str]:
    names = set()
    for folder in source_folders("diffusers"):
        if folder.is_dir():
            names.update(f"diffusers/{d.relative_to(folder).as_posix()}"
                         for d in _diffusers_dirs(folder))
    return [CONFIG_AUTO] + list(BUILTIN_CONFIGS) + sorted(names)


def resolve(name, input_name: str = "model_name") -> Path:
    """The file or folder behind a dropdown entry, never outside the model folders."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"{input_name}: expected an entry of the list, got {name!r}")
    if name == NONE_FOUND:
        raise ValueError(f"{input_name}: no diffusion model found; put a Stable Diffusion "
                         f"1.5/SDXL checkpoint in {source_folders('checkpoints')[0]} or a "
                         f"diffusers folder in {source_folders('diffusers')[0]}")
    source, _, rel = name.replace("\\", "/").partition("/")
    if source not in SOURCES or not rel:
        raise ValueError(f"{input_name}: {name!r} is not allowed; pick an entry of the list "
                         f"(it starts with one of {list(SOURCES)})")
    parts = comfy.safe_parts(rel, name, input_name, source)
    folders = source_folders(source)
    if source == "diffusers":
        target = comfy.find_inside(folders, parts, name, input_name, source,
                                   accept=lambda t: (t / "model_index.json").is_file())
    else:
        target = comfy.find_inside(folders, parts, name, input_name, source)
        if target is not None and target.suffix.lower() not in CHECKPOINT_EXTENSIONS:
            raise ValueError(f"{input_name}: {name!r} is not a checkpoint file "
                             f"({', '.join(CHECKPOINT_EXTENSIONS)})")
    if target is not None:
        return target
    where = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(f"{input_name}: {name!r} not found in {where}")


def _config_path(config: str):
    """None for "auto", a shipped skeleton, or a diffusers folder."""
    if config == CONFIG_AUTO:
        return None
    if config in BUILTIN_CONFIGS:
        return CONFIG_ROOT / BUILTIN_CONFIGS[config]
    if not str(config).startswith("diffusers/"):
        raise ValueError(f"config: expected 'auto', a built-in config or a diffusers folder "
                         f"entry, got {config!r}")
    return resolve(config, "config")


def comfy_tokenizer_dirs() -> list[Path]:
    """ComfyUI ships the CLIP tokenizer SD 1.x/SDXL use (``comfy/sd1_tokenizer``); the
    shipped config skeletons take their vocabulary from there."""
    mod = sys.modules.get("comfy")
    if mod is None:
        return []
    return [Path(p) / "sd1_tokenizer" for p in getattr(mod, "__path__", []) or []]


def _stamp(model_name) -> str:
    try:
        path = resolve(model_name)
        target = path / "model_index.json" if path.is_dir() else path
        stat = target.stat()
        return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
    except Exception:  # noqa: BLE001 - the load reports the problem
        return str(model_name)


class RRLoadDiffusionReference:
    DISPLAY_NAME = "Load Diffusion Reference Model"
    DESCRIPTION = ("Loads your own image-to-image diffusion model for Reference Synthesize: a "
                   "Stable Diffusion 1.5 or SDXL single-file checkpoint from models/checkpoints, "
                   "or any diffusers folder from models/diffusers (other families through "
                   "diffusers' auto pipelines). Local files only, nothing is downloaded.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (RR_DIFFUSION,)
    RETURN_NAMES = ("diffusion",)
    OUTPUT_TOOLTIPS = ("The loaded image-to-image pipeline: connect to Reference Synthesize.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        models = list_models()
        return {"required": {
            "model_name": (models, {
                "default": models[0],
                "tooltip": "checkpoints/...: a single-file SD 1.5/SDXL checkpoint from ComfyUI's "
                           "models/checkpoints (safetensors preferred; .ckpt is read as tensors "
                           "only). diffusers/...: a diffusers folder from models/diffusers "
                           "(safetensors weights)."}),
            "config": (list_configs(), {
                "default": CONFIG_AUTO,
                "tooltip": "For a single-file checkpoint: 'auto' detects SD 1.5 or SDXL from "
                           "the file and uses the config shipped with the pack; or pick a "
                           "built-in one, or a diffusers folder (configs are enough) for other "
                           "families. Ignored for diffusers folders."}),
            "device": (list(DEVICES), {
                "default": "auto",
                "tooltip": "auto: ComfyUI's device (else CUDA if available, else CPU). "
                           "cpu/cuda force one."}),
            "dtype": (list(DTYPE_CHOICES), {
                "default": "auto",
                "tooltip": "auto: float16 on a GPU, float32 on the CPU. bfloat16 suits recent "
                           "GPUs; float32 is slowest but exact."}),
            "offload": (list(OFFLOAD_MODES), {
                "default": "auto",
                "tooltip": "auto: model_cpu_offload on CUDA (needs accelerate), else none. "
                           "model_cpu_offload: each part moves to the GPU only while it runs "
                           "(least VRAM). after_run: the whole model on the device during a run, "
                           "back to the CPU after. none: stays on the device."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model_name, **_):
        return _stamp(model_name)

    @node_errors(DISPLAY_NAME)
    def load(self, model_name, config=CONFIG_AUTO, device="auto", dtype="auto",
             offload="auto"):
        check_choice("device", device, DEVICES)
        check_choice("dtype", dtype, DTYPE_CHOICES)
        check_choice("offload", offload, OFFLOAD_MODES)
        with blame("device"):
            dev = comfy.get_device(device)
        if dtype == "auto":
            import torch
            torch_type = torch.float16 if dev.type == "cuda" else torch.float32
        else:
            torch_type = torch_dtype(dtype)
        with blame("offload"):
            resolve_offload(offload, dev)
        path = resolve(model_name, "model_name")
        config_path = _config_path(config) if path.is_file() else None
        with blame("model_name"):
            model = load_pipeline(path, config=config_path, device=dev, dtype=torch_type,
                                  offload=offload, vocab_dirs=comfy_tokenizer_dirs(),
                                  name=model_name)
        return (model,)
