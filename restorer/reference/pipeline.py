"""Load an image-to-image diffusion pipeline from local files, never downloading anything.

Two sources, both resolved by the caller to a path inside the user's model folders:

* a **diffusers folder** (``model_index.json`` + component folders, safetensors weights):
  ``AutoPipelineForImage2Image.from_pretrained(folder, local_files_only=True,
  use_safetensors=True)``. Any family diffusers' auto pipelines know (SD 1.x/2.x, SDXL, ...).
* a **single-file checkpoint** (ComfyUI's ``models/checkpoints``):
  ``<Pipeline>.from_single_file(ckpt, config=<skeleton>, local_files_only=True)`` then
  ``AutoPipelineForImage2Image.from_pipe``. Without ``config`` the family is read off the
  checkpoint's key names (:func:`detect_family`) and the weights-free skeleton shipped in
  ``configs/<family>`` is used (``sd15``, ``sdxl``); any local diffusers folder (even one with
  only the configs) can be given as ``config`` for other families. Non-safetensors
  checkpoints go through diffusers' ``torch.load(weights_only=True)``: tensors only, no code.

The skeletons carry no CLIP vocabulary (1.5 MB of OpenAI's BPE tables): the tokenizer's
``vocab.json`` + ``merges.txt`` come from the first of ``vocab_dirs`` (inside ComfyUI: its own
``comfy/sd1_tokenizer``, the same CLIP tokenizer), ``$REASON_RESTORE_CLIP_TOKENIZER``, or files
put next to the skeleton's ``tokenizer_config.json``.

Safety: ``local_files_only=True`` everywhere, no ``trust_remote_code`` or custom pipelines,
and every component library named in ``model_index.json`` must be diffusers or transformers
(so a folder cannot make us import an arbitrary module).
"""

from __future__ import annotations

import gc
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

log = logging.getLogger("reason_restore")

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
FAMILIES = {"sd15": "Stable Diffusion 1.x", "sdxl": "Stable Diffusion XL"}
SINGLE_FILE_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth")
OFFLOAD_MODES = ("auto", "model_cpu_offload", "after_run", "none")
ALLOWED_LIBRARIES = ("diffusers", "transformers")
TOKENIZER_ENV = "REASON_RESTORE_CLIP_TOKENIZER"

# Key names that identify a checkpoint's family (the original LDM/SGM layouts).
_SDXL_KEY = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
_SDXL_REFINER_KEY = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"
_UNET_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"
_SD2_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
_SD1_TEXT_PREFIX = "cond_stage_model.transformer."
_SD2_TEXT_PREFIX = "cond_stage_model.model."

__all__ = ["CONFIG_ROOT", "FAMILIES", "SINGLE_FILE_EXTENSIONS", "OFFLOAD_MODES",
           "DiffusionReference", "detect_family", "read_model_index", "find_clip_vocab",
           "load_pipeline", "resolve_offload"]


# --- inspecting files -------------------------------------------------------------------------

def _checkpoint_shapes(path: Path) -> dict[str, tuple]:
    """Key -> shape of a checkpoint, reading as little as possible (safetensors: the header)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    import torch
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) pickle cannot be memory-mapped
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    while isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return {k: tuple(v.shape) for k, v in sd.items() if hasattr(v, "shape")}


def detect_family(path) -> str:
    """``"sd15"`` or ``"sdxl"`` from a single-file checkpoint's key names; anything else is a
    ``ValueError`` saying what it looks like and how to load it anyway."""
    path = Path(path)
    try:
        shapes = _checkpoint_shapes(path)
    except Exception as e:  # noqa: BLE001 - safetensors/torch raise their own types
        raise ValueError(f"{path.name}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    unet_in = shapes.get(_UNET_IN_KEY)
    if unet_in is None:
        raise ValueError(f"{path.name}: not a Stable Diffusion checkpoint (no "
                         f"'{_UNET_IN_KEY}'); only SD 1.x and SDXL single files have built-in "
                         f"configs -- use a diffusers folder in models/diffusers for others")
    if len(unet_in) == 4 and unet_in[1] != 4:
        raise ValueError(f"{path.name}: an inpainting/edit checkpoint ({unet_in[1]} input "
                         f"channels); pick a regular text-to-image checkpoint")
    if _SDXL_KEY in shapes:
        return "sdxl"
    if _SDXL_REFINER_KEY in shapes:
        raise ValueError(f"{path.name}: an SDXL refiner; pick an SDXL base checkpoint (or give "
                         f"a diffusers folder of the refiner as config)")
    if shapes.get(_SD2_KEY, (0,))[-1] == 1024 or any(k.startswith(_SD2_TEXT_PREFIX)
                                                      for k in shapes):
        raise ValueError(f"{path.name}: a Stable Diffusion 2.x checkpoint; no built-in config "
                         f"for it -- put its diffusers folder (configs are enough) in "
                         f"models/diffusers and choose it as config")
    if any(k.startswith(_SD1_TEXT_PREFIX) for k in shapes):
        return "sd15"
    raise ValueError(f"{path.name}: unrecognised checkpoint layout (UNet found, but no SD 1.x "
                     f"or SDXL text encoder); choose a config folder explicitly")


def read_model_index(folder) -> dict:
    """``model_index.json`` of a diffusers folder, checked: a known diffusers pipeline class and
    only diffusers/transformers components."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"{folder.name}: not a diffusers folder (no model_index.json)")
    try:
        index = json.loads(index_path.read_text())
    except ValueError as e:
        raise ValueError(f"{folder.name}/model_index.json: not valid JSON ({e})") from None
    import diffusers
    name = index.get("_class_name")
    if not isinstance(name, str) or not name.endswith("Pipeline") or not hasattr(diffusers,
                                                                                 name):
        raise ValueError(f"{folder.name}: model_index.json names pipeline {name!r}, which "
                         f"this diffusers ({diffusers.__version__}) does not provide")
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library = value[0]
        if library is not None and library not in ALLOWED_LIBRARIES:
            raise ValueError(f"{folder.name}: component {key!r} comes from library "
                             f"{library!r}; only {list(ALLOWED_LIBRARIES)} are loaded")
    return index


def _default_vocab_dirs() -> list[Path]:
    env = os.environ.get(TOKENIZER_ENV)
    return [Path(env)] if env else []


def find_clip_vocab(dirs: Iterable) -> Optional[Path]:
    """The first folder holding a CLIP BPE vocabulary (``vocab.json`` + ``merges.txt``)."""
    for d in dirs:
        if d is None:
            continue
        d = Path(d)
        if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
            return d
    return None


def _has_tokenizer_files(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())


def _missing_tokenizers(config_dir: Path, index: dict, vocab_dirs: Sequence) -> dict:
    """Tokenizers the config folder lacks the vocabulary of, built from ``vocab_dirs`` with the
    folder's own tokenizer settings (pad token, max length)."""
    out = {}
    for comp in ("tokenizer", "tokenizer_2"):
        entry = index.get(comp)
        if not (isinstance(entry, list) and entry[0] == "transformers"):
            continue
        folder = config_dir / comp
        if entry[1] not in ("CLIPTokenizer", "CLIPTokenizerFast") or _has_tokenizer_files(folder):
            continue  # complete, or not ours to fill in: diffusers loads (or reports) it
        vocab = find_clip_vocab(list(vocab_dirs) + _default_vocab_dirs())
        if vocab is None:
            raise ValueError(
                f"{config_dir.name}/{comp}: the CLIP tokenizer vocabulary (vocab.json + "
                f"merges.txt) was not found. Inside ComfyUI it comes from ComfyUI's own "
                f"comfy/sd1_tokenizer; elsewhere set ${TOKENIZER_ENV} to a folder holding "
                f"them, or copy them into {folder}")
        settings = {}
        cfg_path = folder / "tokenizer_config.json"
        if cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text())
            settings = {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token",
                                            "model_max_length") if k in cfg}
        from transformers import CLIPTokenizer
        out[comp] = CLIPTokenizer.from_pretrained(str(vocab), local_files_only=True, **settings)
    return out


def resolve_offload(offload: str, device) -> str:
    """``auto`` -> ``model_cpu_offload`` on CUDA with accelerate installed, else ``none``."""
    import torch
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload: expected one of {list(OFFLOAD_MODES)}, got {offload!r}")
    device = torch.device(device)
    if offload == "auto":
        if device.type == "cuda" and _has_accelerate():
            return "model_cpu_offload"
        return "none"
    if offload == "model_cpu_offload":
        if device.type != "cuda":
            raise ValueError("offload: model_cpu_offload needs a CUDA device; choose 'none' or "
                             "'after_run' on the CPU")
        if not _has_accelerate():
            raise ValueError("offload: model_cpu_offload needs the accelerate package; "
                             "install it or choose 'after_run'")
    return offload


def _has_accelerate() -> bool:
    import importlib.util
    return importlib.util.find_spec("accelerate") is not None


# --- the loaded model -------------------------------------------------------------------------

@dataclass
class DiffusionReference:
    """An image-to-image pipeline plus where and how it runs (the RR_DIFFUSION socket value).

    ``offload_mode``: ``model_cpu_offload`` (accelerate moves each component to the GPU only
    while it runs), ``after_run`` (whole pipeline on the device for a run, back to the CPU
    after), ``none`` (moves to the device at the first run and stays there). Loading leaves
    the weights on the CPU, so a caller can first ask ComfyUI to free device memory."""

    pipe: Any
    name: str
    source: str  # "diffusers folder" | "single file"
    family: str
    device: Any
    dtype: Any
    offload_mode: str = "none"
    details: dict = field(default_factory=dict)
    kind = "diffusion_reference"

    @property
    def loaded(self) -> bool:
        return self.pipe is not None

    def _check(self):
        if self.pipe is None:
            raise ValueError(f"diffusion: the model {self.name!r} was unloaded; run the "
                             f"loader again")
        return self.pipe

    @property
    def vae_scale_factor(self) -> int:
        return int(getattr(self._check(), "vae_scale_factor", 8))

    def prepare(self):
        """Put the pipeline where it runs; returns it."""
        pipe = self._check()
        if self.offload_mode in ("none", "after_run") and pipe.device != self.device:
            pipe.to(self.device)
        return pipe

    def offload(self) -> None:
        """Give device memory back (the weights stay loaded, on the CPU)."""
        import torch
        if self.pipe is None:
            return
        if self.offload_mode == "model_cpu_offload":
            self.pipe.maybe_free_model_hooks()
        elif self.pipe.device.type != "cpu":
            self.pipe.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def after_run(self) -> None:
        if self.offload_mode in ("after_run", "model_cpu_offload"):
            self.offload()

    def unload(self) -> None:
        """Drop the pipeline entirely (CPU and device memory)."""
        import torch
        if self.pipe is None:
            return
        try:
            if self.offload_mode == "model_cpu_offload":
                self.pipe.remove_all_hooks()
        except Exception as e:  # noqa: BLE001 - best effort; the references go anyway
            log.debug("reason_restore: removing offload hooks failed: %s", e)
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def memory_bytes(self) -> int:
        """Bytes of all weights (what a run needs on the device without model offload; with
        it, the largest component)."""
        import torch
        sizes = []
        for comp in self._check().components.values():
            if isinstance(comp, torch.nn.Module):
                sizes.append(sum(p.numel() * p.element_size() for p in comp.parameters()))
        if not sizes:
            return 0
        return max(sizes) if self.offload_mode == "model_cpu_offload" else sum(sizes)

    def describe(self) -> str:
        pipeline = self.pipe.__class__.__name__ if self.pipe is not None else "unloaded"
        return (f"{self.name} ({self.source}, {self.family}, {pipeline}, {self.device}, "
                f"{str(self.dtype).replace('torch.', '')}, offload {self.offload_mode})")


# --- loading ----------------------------------------------------------------------------------

def _dtype_kwargs(dtype) -> dict:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (0.36+ warns about the old name)."""
    from diffusers.utils import deprecation_utils
    key = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    return {key: dtype}


def load_pipeline(path, *, config=None, device="cpu", dtype=None, offload: str = "auto",
                  vocab_dirs: Sequence = (), name: str | None = None) -> DiffusionReference:
    """Load ``path`` (a diffusers folder or a single-file checkpoint) as an image-to-image
    pipeline. ``config``: for a single file, the diffusers folder whose configs describe it
    (default: the shipped skeleton of its detected family). Errors are ``ValueError`` /
    ``FileNotFoundError`` with a message for the user."""
    import torch
    from diffusers import AutoPipelineForImage2Image
    import diffusers

    path = Path(path)
    device = torch.device(device)
    dtype = dtype or torch.float32
    offload_mode = resolve_offload(offload, device)
    name = name or path.name
    details: dict = {}
    if path.is_dir():
        index = read_model_index(path)
        extra = _missing_tokenizers(path, index, vocab_dirs)
        try:
            pipe = AutoPipelineForImage2Image.from_pretrained(
                str(path), local_files_only=True, use_safetensors=True, **_dtype_kwargs(dtype),
                **extra)
        except (OSError, EnvironmentError) as e:
            raise ValueError(f"{name}: could not load the diffusers folder ({e}). Only "
                             f"safetensors weights are loaded; convert .bin weights first")
        source, family = "diffusers folder", index["_class_name"]
    elif path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_EXTENSIONS:
            raise ValueError(f"{name}: expected a checkpoint file "
                             f"({', '.join(SINGLE_FILE_EXTENSIONS)})")
        if config is None:
            family = detect_family(path)
            config_dir = CONFIG_ROOT / family
        else:
            config_dir = Path(config)
            family = f"config {config_dir.name}"
        index = read_model_index(config_dir)
        cls = getattr(diffusers, index["_class_name"])
        if not hasattr(cls, "from_single_file"):
            raise ValueError(f"{name}: {index['_class_name']} cannot load single files; use a "
                             f"diffusers folder")
        extra = _missing_tokenizers(config_dir, index, vocab_dirs)
        if "safety_checker" in index and index["safety_checker"][0] is None:
            extra.update(safety_checker=None, requires_safety_checker=False)
        try:
            pipe = cls.from_single_file(str(path), config=str(config_dir),
                                        local_files_only=True, **_dtype_kwargs(dtype), **extra)
        except (OSError, EnvironmentError) as e:
            raise ValueError(f"{name}: could not load the checkpoint with config "
                             f"{config_dir.name} ({e})") from e
        pipe = AutoPipelineForImage2Image.from_pipe(pipe)
        source = "single file"
        details["config"] = str(config_dir)
    else:
        raise FileNotFoundError(f"{name}: no such file or folder ({path})")
    pipe.set_progress_bar_config(disable=True)
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_tiling"):
        # Tiles only above the VAE's sample size: large images decode in bounded memory.
        vae.enable_tiling()
    if offload_mode == "model_cpu_offload":
        pipe.enable_model_cpu_offload(device=device)
    # Otherwise the weights stay on the CPU until the first run (:meth:`prepare`), so the
    # caller can first ask ComfyUI to free device memory for them.
    return DiffusionReference(pipe=pipe, name=name, source=source, family=family, device=device,
                              dtype=dtype, offload_mode=offload_mode, details=details)
