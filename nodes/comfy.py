"""The one module that touches ComfyUI (``comfy.*``, ``folder_paths``), with fallbacks.

ComfyUI is used only when it is already running in this process (its modules are already in
``sys.modules``): importing ``comfy.model_management`` from a plain Python session would parse
the command line and initialise devices, so the CLI and the tests never trigger it by
accident. Nothing here imports torch at module level.

Model files (safetensors only, never pickles)::

    <ComfyUI>/models/reason_restore/analyzer/*.safetensors   -> "Load Reasoner"
    <ComfyUI>/models/reason_restore/restorer/*.safetensors   -> "Load Restorer"

registered with ``folder_paths`` as ``reason_restore_analyzer`` / ``reason_restore_restorer``
(so ``extra_model_paths.yaml`` can add more folders under those keys) and the parent as
``reason_restore``. Without ComfyUI the parent is ``$REASON_RESTORE_MODELS`` or
``<pack>/models/reason_restore``. Dropdowns list ``"default (built-in)"`` (the weights shipped
inside the pack) first.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Callable

log = logging.getLogger("reason_restore")

DEFAULT_CHOICE = "default (built-in)"
MODEL_KINDS = ("analyzer", "restorer")
MODEL_EXTENSIONS = (".safetensors",)
PACK_ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "DEFAULT_CHOICE", "MODEL_KINDS", "in_comfyui", "model_folder", "model_folders",
    "list_models", "resolve_model_path", "get_device", "progress_bar", "check_interrupt",
    "soft_empty_cache", "free_memory",
]


# --- ComfyUI detection ------------------------------------------------------------------

def in_comfyui() -> bool:
    """True inside a running ComfyUI (its ``comfy`` package and ``folder_paths`` loaded)."""
    return "comfy" in sys.modules and "folder_paths" in sys.modules


def _comfy(name: str):
    """``comfy.<name>`` when running inside ComfyUI, else None (never raises)."""
    if "comfy" not in sys.modules:
        return None
    try:
        return importlib.import_module(f"comfy.{name}")
    except Exception:  # noqa: BLE001 - a broken or foreign "comfy" means: no ComfyUI
        return None


def _folder_paths():
    return sys.modules.get("folder_paths")


# --- model folders ----------------------------------------------------------------------

def _check_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind: expected one of {list(MODEL_KINDS)}, got {kind!r}")


def _folder_key(kind: str) -> str:
    return f"reason_restore_{kind}"


def _base_dir() -> Path:
    fp = _folder_paths()
    if fp is not None and getattr(fp, "models_dir", None):
        return Path(fp.models_dir) / "reason_restore"
    env = os.environ.get("REASON_RESTORE_MODELS")
    if env:
        return Path(env)
    return PACK_ROOT / "models" / "reason_restore"


def model_folder(kind: str) -> Path:
    """The main folder for ``kind`` ("analyzer" or "restorer"); registers it with ComfyUI's
    ``folder_paths`` (and creates it there, so users see where to put files)."""
    _check_kind(kind)
    folder = _base_dir() / kind
    fp = _folder_paths()
    if fp is not None:
        try:
            fp.add_model_folder_path("reason_restore", str(folder.parent))
            fp.add_model_folder_path(_folder_key(kind), str(folder))
            entry = fp.folder_names_and_paths.get(_folder_key(kind))
            if entry is not None and isinstance(entry[1], set):
                entry[1].update(MODEL_EXTENSIONS)
            folder.mkdir(parents=True, exist_ok=True)
        except Exception as e:  # noqa: BLE001 - a read-only models dir must not break start-up
            log.debug("reason_restore: could not register %s: %s", folder, e)
    return folder


def model_folders(kind: str) -> list[Path]:
    """Every folder searched for ``kind``: the main one plus any extra_model_paths entries."""
    main = model_folder(kind)
    folders = [main]
    fp = _folder_paths()
    if fp is not None:
        try:
            folders += [Path(p) for p in fp.get_folder_paths(_folder_key(kind))]
        except Exception:  # noqa: BLE001
            pass
    unique = []
    for f in folders:
        if f not in unique:
            unique.append(f)
    return unique


def list_models(kind: str) -> list[str]:
    """Dropdown entries: ``"default (built-in)"`` then every safetensors file found
    (relative paths with "/", sorted)."""
    names: set[str] = set()
    fp = _folder_paths()
    if fp is not None:
        model_folder(kind)
        try:
            names.update(n for n in fp.get_filename_list(_folder_key(kind))
                         if n.lower().endswith(MODEL_EXTENSIONS))
        except Exception:  # noqa: BLE001
            pass
    for folder in model_folders(kind):
        if folder.is_dir():
            for p in folder.rglob("*"):
                if p.suffix.lower() in MODEL_EXTENSIONS and p.is_file():
                    names.add(p.relative_to(folder).as_posix())
    return [DEFAULT_CHOICE] + sorted(names)


def safe_parts(rel: str, name: str, input_name: str, folder_label: str) -> list[str]:
    """Split a dropdown entry into path parts, refusing anything that could leave a model
    folder: absolute paths, drive letters, ``..``, empty parts and NUL bytes."""
    parts = rel.replace("\\", "/").split("/")
    if ("\x00" in name or rel.startswith(("/", "\\")) or os.path.isabs(rel)
            or (len(rel) > 1 and rel[1] == ":") or ".." in parts or "" in parts):
        raise ValueError(f"{input_name}: {name!r} is not allowed; pick a file inside the "
                         f"{folder_label} model folder (no absolute paths or '..')")
    return parts


def find_inside(folders, parts: list[str], name: str, input_name: str, folder_label: str,
                accept: Callable[[Path], bool] = Path.is_file) -> Path | None:
    """The first ``folder/parts`` that exists and is accepted, resolved. A symlink whose
    target leaves its folder is an error, not a skip: the user should know why."""
    for folder in folders:
        try:
            base = folder.resolve()
        except OSError:
            continue
        candidate = folder / Path(*parts)
        if not (candidate.exists() or candidate.is_symlink()):
            continue
        target = candidate.resolve()
        if target != base and base not in target.parents:
            raise ValueError(f"{input_name}: {name!r} points outside the {folder_label} model "
                             f"folder ({base}); copy the file there instead of linking it")
        if accept(target):
            return target
    return None


def resolve_model_path(kind: str, name, input_name: str = "model_name") -> Path | None:
    """The file behind a dropdown entry, or None for ``"default (built-in)"``.

    Never leaves the model folders: absolute paths, ``..`` parts and symlinks pointing outside
    are refused with an error naming the input."""
    _check_kind(kind)
    if name is None or name == "" or name == DEFAULT_CHOICE:
        return None
    if not isinstance(name, str):
        raise TypeError(f"{input_name}: expected a file name, got {type(name).__name__}")
    parts = safe_parts(name, name, input_name, kind)
    folders = model_folders(kind)
    target = find_inside(folders, parts, name, input_name, kind)
    if target is not None:
        return target
    where = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(f"{input_name}: {name!r} not found in the {kind} model folder(s) "
                            f"{where}; put a .safetensors file there or choose "
                            f"{DEFAULT_CHOICE!r}")


# --- devices, progress, interrupts, memory ----------------------------------------------

def get_device(choice: str = "auto"):
    """torch device for "auto" / "cpu" / "cuda" ("auto": ComfyUI's device, else CUDA if
    available, else the CPU)."""
    import torch
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {choice!r}")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: 'cuda' was chosen but no CUDA device is available; "
                             "choose 'auto' or 'cpu'")
        return torch.device("cuda")
    mm = _comfy("model_management")
    if mm is not None:
        try:
            return torch.device(mm.get_torch_device())
        except Exception:  # noqa: BLE001
            pass
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress_bar(total: int) -> Callable[[int, int], None]:
    """A ``(done, total)`` callable driving ComfyUI's progress bar (whose updates also stop
    the run on a user interrupt), or a no-op outside ComfyUI."""
    utils = _comfy("utils")
    if utils is None or not hasattr(utils, "ProgressBar"):
        return lambda done, total=None: None
    bar = utils.ProgressBar(max(1, int(total)))

    def update(done: int, total: int | None = None) -> None:
        bar.update_absolute(int(done), None if total is None else max(1, int(total)))
    return update


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel; no-op outside it."""
    mm = _comfy("model_management")
    if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
        mm.throw_exception_if_processing_interrupted()


def free_memory(bytes_needed: int, device) -> None:
    """Ask ComfyUI to unload other models until ``bytes_needed`` fit on ``device`` (as its
    upscale-model node does); nothing on the CPU or outside ComfyUI."""
    if getattr(device, "type", str(device)) == "cpu":
        return
    mm = _comfy("model_management")
    if mm is not None and hasattr(mm, "free_memory"):
        try:
            mm.free_memory(int(bytes_needed), device)
        except Exception as e:  # noqa: BLE001 - an optimisation; the tiler handles OOM anyway
            log.debug("reason_restore: free_memory failed: %s", e)


def soft_empty_cache() -> None:
    """Give cached accelerator memory back (ComfyUI's way when it runs, else torch's)."""
    mm = _comfy("model_management")
    if mm is not None and hasattr(mm, "soft_empty_cache"):
        mm.soft_empty_cache()
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- restorer backbones ("Load Restorer Backbone") ---------------------------------------
# Weights files of any supported kind: pickles are read with torch.load(weights_only=True),
# never executed (restorer/backbones/loading.py).
BACKBONE_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin")
# Dropdown entries are "<source>/<path inside that folder>".
BACKBONE_SOURCES = ("upscale_models", "reason_restore")


def upscale_model_folders() -> list[Path]:
    """ComfyUI's ``upscale_models`` folders; outside ComfyUI ``$REASON_RESTORE_UPSCALE_MODELS``
    or ``upscale_models`` beside the pack's model folder."""
    fp = _folder_paths()
    if fp is not None:
        try:
            folders = [Path(p) for p in fp.get_folder_paths("upscale_models")]
            if folders:
                return folders
        except Exception:  # noqa: BLE001
            pass
        if getattr(fp, "models_dir", None):
            return [Path(fp.models_dir) / "upscale_models"]
    env = os.environ.get("REASON_RESTORE_UPSCALE_MODELS")
    if env:
        return [Path(env)]
    return [_base_dir().parent / "upscale_models"]


def _backbone_folders(source: str) -> list[Path]:
    return upscale_model_folders() if source == "upscale_models" else model_folders("restorer")


def list_backbone_models() -> list[str]:
    """``"default (built-in)"`` then every weights file in ``upscale_models`` and the pack's
    restorer folder, as ``"upscale_models/<file>"`` / ``"reason_restore/<file>"``."""
    names: set[str] = set()
    for source in BACKBONE_SOURCES:
        for folder in _backbone_folders(source):
            try:
                if not folder.is_dir():
                    continue
                for p in folder.rglob("*"):
                    if p.suffix.lower() in BACKBONE_EXTENSIONS and p.is_file():
                        names.add(f"{source}/{p.relative_to(folder).as_posix()}")
            except OSError as e:  # an unreadable folder must not break the node list
                log.debug("reason_restore: cannot list %s: %s", folder, e)
    return [DEFAULT_CHOICE] + sorted(names)


def resolve_backbone_path(name, input_name: str = "model_name") -> Path | None:
    """The file behind a "Load Restorer Backbone" entry (None for the built-in). Like
    :func:`resolve_model_path`, never leaves the model folders."""
    if name is None or name == "" or name == DEFAULT_CHOICE:
        return None
    if not isinstance(name, str):
        raise TypeError(f"{input_name}: expected a file name, got {type(name).__name__}")
    source, _, rel = name.replace("\\", "/").partition("/")
    if source not in BACKBONE_SOURCES or not rel:
        raise ValueError(f"{input_name}: {name!r} is not allowed; pick an entry of the list "
                         f"(it starts with one of {list(BACKBONE_SOURCES)})")
    parts = safe_parts(rel, name, input_name, source)
    if Path(rel).suffix.lower() not in BACKBONE_EXTENSIONS:
        raise ValueError(f"{input_name}: {name!r} is not a model file; expected one of "
                         f"{list(BACKBONE_EXTENSIONS)}")
    folders = _backbone_folders(source)
    target = find_inside(folders, parts, name, input_name, source)
    if target is not None:
        return target
    where = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(f"{input_name}: {name!r} not found in {where}; put the file there "
                            f"or choose {DEFAULT_CHOICE!r}")


# --- VLM checkpoints ("Load VLM Reasoner") ------------------------------------------------
# Whole checkpoint folders under ComfyUI's models/LLM (the folder other VLM packs use),
# registered with folder_paths as "LLM" so extra_model_paths.yaml can add more.
LLM_FOLDER_KEY = "LLM"


def llm_folders() -> list[Path]:
    """Folders searched for VLM checkpoint folders: ComfyUI's ``models/LLM`` plus any
    ``LLM`` entries of extra_model_paths; outside ComfyUI ``$REASON_RESTORE_LLM`` or ``LLM``
    beside the pack's model folder."""
    fp = _folder_paths()
    if fp is None:
        env = os.environ.get("REASON_RESTORE_LLM")
        return [Path(env) if env else _base_dir().parent / LLM_FOLDER_KEY]
    folders = []
    if getattr(fp, "models_dir", None):
        main = Path(fp.models_dir) / LLM_FOLDER_KEY
        folders.append(main)
        try:
            fp.add_model_folder_path(LLM_FOLDER_KEY, str(main))
            main.mkdir(parents=True, exist_ok=True)
        except Exception as e:  # noqa: BLE001 - a read-only models dir must not break start-up
            log.debug("reason_restore: could not register %s: %s", main, e)
    try:
        folders += [Path(p) for p in fp.get_folder_paths(LLM_FOLDER_KEY)]
    except Exception:  # noqa: BLE001
        pass
    unique = []
    for f in folders:
        if f not in unique:
            unique.append(f)
    return unique
