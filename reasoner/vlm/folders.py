"""Finding and checking VLM checkpoint folders (pure Python: no torch, no transformers).

A checkpoint is a folder as published on model hubs: ``config.json`` (whose ``model_type``
names the family), ``*.safetensors`` weights (pickled ``*.bin`` weights are refused), the
tokenizer (``tokenizer.json`` / ``tokenizer_config.json``) and the processor configuration
(``preprocessor_config.json`` or ``processor_config.json``). ComfyUI users keep them in
``models/LLM/<folder>`` (also ``models/LLM/<org>/<folder>`` as other packs do, and the hub
cache layout ``models--Org--Name/snapshots/<hash>``); :func:`find_model_folders` lists the
supported ones so a model the user already placed there is picked up, never re-downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

__all__ = ["SUPPORTED", "VLMFolderError", "read_config", "detect_family", "check_model_folder",
           "find_model_folders", "resolve_in_roots", "folder_stamp"]

# model_type -> (family label, transformers class that must exist)
SUPPORTED = {
    "qwen3_vl": ("Qwen3-VL", "Qwen3VLForConditionalGeneration"),
    "qwen3_vl_moe": ("Qwen3-VL MoE", "Qwen3VLMoeForConditionalGeneration"),
    "qwen2_5_vl": ("Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration"),
}
MAX_DEPTH = 4
MAX_ENTRIES = 2000  # directories visited per root: a huge models/LLM must not stall start-up


class VLMFolderError(ValueError):
    """A folder that is not a usable Qwen-VL checkpoint; the message says what is wrong."""


def _supported_text() -> str:
    return ", ".join(f"{label} ({mt})" for mt, (label, _) in SUPPORTED.items())


def read_config(folder) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise VLMFolderError(f"{folder}: not a folder (expected a model folder holding "
                             f"config.json, *.safetensors, the tokenizer and processor files)")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise VLMFolderError(f"{folder}: no config.json, so this is not a Hugging Face model "
                             f"folder; put the whole checkpoint folder there (config.json, "
                             f"*.safetensors, tokenizer.json, preprocessor_config.json, ...)")
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VLMFolderError(f"{cfg}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise VLMFolderError(f"{cfg}: expected a JSON object")
    return data


def detect_family(folder) -> str:
    """The ``model_type`` of a supported VLM folder, or :class:`VLMFolderError`."""
    mt = read_config(folder).get("model_type")
    if mt not in SUPPORTED:
        raise VLMFolderError(f"{folder}: model_type {mt!r} is not a supported VLM; this pack "
                             f"runs {_supported_text()} checkpoints")
    return mt


def check_model_folder(folder) -> tuple[Path, str]:
    """(resolved folder, model_type) after checking config, weights, tokenizer, processor."""
    folder = Path(folder)
    family = detect_family(folder)
    names = {p.name for p in folder.iterdir() if p.is_file() or p.is_symlink()}
    if not any(n.endswith(".safetensors") for n in names):
        pickled = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt")))
        if pickled:
            raise VLMFolderError(f"{folder}: only pickled weights ({', '.join(pickled[:3])}); "
                                 f"this pack loads .safetensors only (pickles can run code). "
                                 f"Use the checkpoint's safetensors release")
        raise VLMFolderError(f"{folder}: no *.safetensors weights found")
    if not names & {"tokenizer.json", "tokenizer_config.json", "vocab.json"}:
        raise VLMFolderError(f"{folder}: no tokenizer files (tokenizer.json / "
                             f"tokenizer_config.json); copy the complete checkpoint folder")
    if not names & {"preprocessor_config.json", "processor_config.json"}:
        raise VLMFolderError(f"{folder}: no image processor configuration "
                             f"(preprocessor_config.json); copy the complete checkpoint folder")
    return folder.resolve(), family


def _quiet_family(folder: Path) -> str | None:
    try:
        return detect_family(folder)
    except (VLMFolderError, OSError):
        return None


def find_model_folders(roots: Iterable[Path], max_depth: int = MAX_DEPTH
                       ) -> list[tuple[str, Path, str]]:
    """Supported checkpoints under ``roots``: (name relative to its root with "/", folder,
    model_type), sorted by name; the first root wins for duplicate names."""
    found: dict[str, tuple[str, Path, str]] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        try:
            base = root.resolve()
        except OSError:
            continue
        visited = 0
        stack = [(root, 0)]
        while stack and visited < MAX_ENTRIES:
            folder, depth = stack.pop()
            visited += 1
            if folder != root and (folder / "config.json").is_file():
                try:  # links out of the root are refused when resolving, so not listed
                    inside = base in folder.resolve().parents
                except OSError:
                    inside = False
                mt = _quiet_family(folder) if inside else None
                if mt is not None:
                    name = folder.relative_to(root).as_posix()
                    found.setdefault(name, (name, folder, mt))
                continue  # a model folder's subfolders are not other models
            if depth >= max_depth:
                continue
            try:
                children = sorted((p for p in folder.iterdir()
                                   if p.is_dir() and not p.name.startswith(".")),
                                  reverse=True)
            except OSError:
                continue
            stack += [(c, depth + 1) for c in children]
    return [found[k] for k in sorted(found)]


def resolve_in_roots(name, roots: Iterable[Path], input_name: str = "model_name") -> Path:
    """The folder behind a dropdown entry; never leaves the roots (absolute names, ``..`` and
    links pointing outside are refused with an error naming the input)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{input_name}: expected a folder name, got {name!r}")
    parts = name.replace("\\", "/").split("/")
    if ("\x00" in name or name.startswith(("/", "\\")) or os.path.isabs(name)
            or (len(name) > 1 and name[1] == ":") or ".." in parts):
        raise ValueError(f"{input_name}: {name!r} is not allowed; pick a folder inside "
                         f"models/LLM (no absolute paths or '..'; use model_path for a folder "
                         f"elsewhere)")
    roots = [Path(r) for r in roots]
    for root in roots:
        try:
            base = root.resolve()
        except OSError:
            continue
        candidate = root / Path(*[p for p in parts if p])
        if not candidate.is_dir():
            continue
        target = candidate.resolve()
        if target != base and base not in target.parents:
            raise ValueError(f"{input_name}: {name!r} points outside the LLM model folder "
                             f"({base}); move the checkpoint there instead of linking it")
        return target
    where = ", ".join(str(r) for r in roots) or "(no LLM folder)"
    raise FileNotFoundError(f"{input_name}: {name!r} not found in {where}")


def folder_stamp(folder) -> str:
    """For IS_CHANGED: changes when config or weights are replaced."""
    folder = Path(folder)
    parts = []
    for p in sorted(folder.glob("*.safetensors")) + [folder / "config.json"]:
        try:
            st = p.stat()
            parts.append(f"{p.name}:{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            continue
    return f"{folder}|" + "|".join(parts)
