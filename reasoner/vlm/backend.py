"""The VLM reasoner: a local Qwen3-VL / Qwen2.5-VL checkpoint that writes the diagnosis.

Loading uses transformers' own classes (``AutoModelForImageTextToText`` + ``AutoProcessor``)
with ``local_files_only=True``, ``trust_remote_code=False`` and ``use_safetensors=True``:
nothing is downloaded, no code from the checkpoint runs, no pickle is read. The family comes
from ``config.json``'s ``model_type`` (:mod:`.folders`).

:class:`VLMReasoner` has the interface of :class:`~..engine.Reasoner` (``kind``,
``diagnose(images, progress)``, ``offload``, ``keep_loaded``) and subclasses it so the nodes
that take a reasoner accept it; it has no analyzer heads, so ``score`` (residual severity)
explains that Severity Score needs the analyzer (see :class:`~.fusion.FusedReasoner`).

Decoding is greedy (``do_sample=False``, one beam): the same image and prompt give the same
text. Whatever the model writes goes through :func:`~.parse.parse_vlm_answer`, so it cannot
break the node: garbage becomes an empty, low-confidence diagnosis with the raw text attached.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Callable, Optional

import torch

from ..diagnosis import Diagnosis
from ..engine import Reasoner
from ..images import as_rgb_batch
from .folders import SUPPORTED, VLMFolderError, check_model_folder
from .parse import ParseResult, parse_vlm_answer
from .prompt import build_messages

log = logging.getLogger("reason_restore")

__all__ = ["VLMReasoner", "VLMLoadError", "load_vlm", "load_vlm_reasoner", "ATTENTIONS",
           "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_MAX_PIXELS", "resolve_dtype"]

ATTENTIONS = ("sdpa", "eager")
DEFAULT_MAX_NEW_TOKENS = 512
# Pixels handed to the vision tower (~1 MP). Larger images are resized down: the VLM judges
# content and coarse degradations; the analyzer measures fine ones at native resolution.
DEFAULT_MAX_PIXELS = 1024 * 1024
MIN_SIDE = 64  # the processors refuse images smaller than a merged patch (28 or 32 px)
MAX_ASPECT = 100  # and aspect ratios beyond 200


class VLMLoadError(VLMFolderError):
    """The folder or the installed transformers cannot provide the model."""


def resolve_dtype(dtype, device) -> torch.dtype:
    """``"auto"``/None: bfloat16 on a GPU that supports it, else float16 there; float32 on
    the CPU. Names ("bfloat16") and torch dtypes pass through."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dev = torch.device(device or "cpu")
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"dtype: expected 'auto' or one of {list(table)}, got {dtype!r}")
    return table[dtype]


def _transformers_version() -> tuple[int, ...]:
    import transformers
    parts = []
    for p in transformers.__version__.split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def load_vlm(folder, dtype=torch.float32, attn_implementation: str = "sdpa"):
    """(model on the CPU, processor, model_type) from a local checkpoint folder."""
    import transformers
    from transformers import AutoModelForImageTextToText, AutoProcessor
    if attn_implementation not in ATTENTIONS:
        raise ValueError(f"attention: expected one of {list(ATTENTIONS)}, got "
                         f"{attn_implementation!r}")
    folder, family = check_model_folder(folder)
    label, cls_name = SUPPORTED[family]
    if not hasattr(transformers, cls_name):
        raise VLMLoadError(f"{folder}: {label} needs a newer transformers than the installed "
                           f"{transformers.__version__} (no {cls_name}); upgrade it with "
                           f"pip install -U \"transformers>=4.57\"")
    common = dict(local_files_only=True, trust_remote_code=False)
    dtype_key = "dtype" if _transformers_version() >= (4, 56) else "torch_dtype"
    try:
        processor = AutoProcessor.from_pretrained(str(folder), **common)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError...
        raise VLMLoadError(f"{folder}: the processor/tokenizer could not be loaded "
                           f"({type(e).__name__}: {str(e)[:300]})") from None
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            str(folder), use_safetensors=True, attn_implementation=attn_implementation,
            **{dtype_key: dtype}, **common)
    except Exception as e:  # noqa: BLE001
        raise VLMLoadError(f"{folder}: the {label} weights could not be loaded "
                           f"({type(e).__name__}: {str(e)[:300]})") from None
    if not hasattr(processor, "apply_chat_template") or not hasattr(processor,
                                                                     "image_processor"):
        raise VLMLoadError(f"{folder}: the processor ({type(processor).__name__}) is not an "
                           f"image-text processor; copy the complete checkpoint folder")
    return model.eval(), processor, family


def _to_pil(image: torch.Tensor, max_pixels: int):
    """One [3, H, W] image in [0, 1] -> an RGB PIL image the processors accept."""
    from PIL import Image
    arr = (image.permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype("uint8")
    pil = Image.fromarray(arr)
    w, h = pil.size
    if w * h > max_pixels:
        s = math.sqrt(max_pixels / (w * h))
        pil = pil.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BICUBIC)
        w, h = pil.size
    if max(w, h) > MAX_ASPECT * min(w, h):  # pad the short side: processors refuse > 200:1
        canvas = Image.new("RGB", (max(w, -(-h // MAX_ASPECT)), max(h, -(-w // MAX_ASPECT))),
                           (127, 127, 127))
        canvas.paste(pil, (0, 0))
        pil = canvas
        w, h = pil.size
    if min(w, h) < MIN_SIDE:  # enlarge tiny images (nearest: no invented detail)
        s = MIN_SIDE / min(w, h)
        pil = pil.resize((max(MIN_SIDE, round(w * s)), max(MIN_SIDE, round(h * s))),
                         Image.Resampling.NEAREST)
    return pil


class _Every:
    """A stopping criterion that never stops but calls ``fn`` every ``n`` tokens (so a
    ComfyUI interrupt lands during a long generation)."""

    def __init__(self, fn: Callable[[], None], n: int = 8):
        self.fn, self.n, self.count = fn, n, 0

    def __call__(self, input_ids, scores, **kwargs):
        self.count += 1
        if self.count % self.n == 0:
            self.fn()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class VLMReasoner(Reasoner):
    """A Qwen-VL checkpoint as a reasoner. Built by :func:`load_vlm_reasoner`."""

    kind = "vlm"

    def __init__(self, model, processor, family: str, device=None, dtype=None,
                 name: str = "vlm", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 keep_loaded: bool = True, hint: str = "",
                 max_pixels: int = DEFAULT_MAX_PIXELS, path=None,
                 before_load: Optional[Callable[[int, torch.device], None]] = None):
        # No Reasoner.__init__: there is no analyzer network here.
        self.model = model.eval()
        self.processor = processor
        self.family = family
        self.device = torch.device(device or "cpu")
        self.dtype = dtype or next(model.parameters()).dtype
        self.name = name
        self.max_new_tokens = int(max_new_tokens)
        self.keep_loaded = bool(keep_loaded)
        self.hint = hint or ""
        self.max_pixels = int(max_pixels)
        self.path = Path(path) if path else None
        self.before_load = before_load
        self.last_results: list[ParseResult] = []
        self.last_texts: list[str] = []
        self.generation_config = self._greedy_config()

    @property
    def label(self) -> str:
        return SUPPORTED.get(self.family, (self.family,))[0]

    def _greedy_config(self):
        gen = copy.deepcopy(self.model.generation_config)
        gen.do_sample = False
        gen.num_beams = 1
        # Sampling knobs back to their neutral defaults so greedy decoding raises no warnings.
        gen.temperature, gen.top_p, gen.top_k = 1.0, 1.0, 50
        gen.max_new_tokens = self.max_new_tokens
        gen.max_length = None
        tok = getattr(self.processor, "tokenizer", None)
        if gen.pad_token_id is None and tok is not None:
            gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None \
                else tok.eos_token_id
        return gen

    # --- memory -----------------------------------------------------------------------------
    def model_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def _to_device(self) -> None:
        param = next(self.model.parameters())
        if param.device != self.device and self.before_load is not None:
            self.before_load(self.model_bytes(), self.device)
        if param.device != self.device or param.dtype != self.dtype:
            self.model.to(self.device, self.dtype)

    def offload(self) -> None:
        """Give the accelerator memory back (the model stays usable; it moves on next use)."""
        self.model.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- the reasoner interface -------------------------------------------------------------
    def outputs(self, images):
        raise ValueError("reasoner: the VLM reasoner has no analyzer heads; connect Load "
                         "Reasoner (the analyzer) for residual severity")

    def score(self, images):
        raise ValueError("reasoner: Severity Score needs the analyzer (the VLM does not "
                         "measure residual severity); connect Load Reasoner to Load VLM "
                         "Reasoner's analyzer input, or Load Reasoner to Severity Score")

    @torch.no_grad()
    def generate_text(self, image: torch.Tensor, tick: Optional[Callable[[], None]] = None
                      ) -> str:
        """The model's raw answer for one [3, H, W] image in [0, 1]."""
        self._to_device()
        messages = build_messages(_to_pil(image, self.max_pixels), self.hint)
        inputs = self.processor.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=True,
            return_tensors="pt")
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point()
                      else v.to(self.device)) if hasattr(v, "to") else v
                  for k, v in inputs.items()}
        kwargs = {}
        if tick is not None:
            from transformers import StoppingCriteriaList
            kwargs["stopping_criteria"] = StoppingCriteriaList([_Every(tick)])
        out = self.model.generate(**inputs, generation_config=self.generation_config,
                                  **kwargs)
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)[0]

    def diagnose_detailed(self, images, progress: Optional[Callable[[int, int], None]] = None
                          ) -> list[ParseResult]:
        """Like :meth:`diagnose`, with the parser's findings on the way (factors, issues)."""
        images = as_rgb_batch(images)
        n = images.shape[0]
        results, texts = [], []
        try:
            for i, img in enumerate(images):
                tick = (lambda i=i: progress(i, n)) if progress else None
                text = self.generate_text(img, tick)
                texts.append(text)
                r = parse_vlm_answer(text)
                r.diagnosis.notes.append(f"VLM: {self.name} ({self.label}), greedy, "
                                         f"{len(text)} characters written")
                results.append(r)
                if progress:
                    progress(i + 1, n)
        finally:
            self.last_texts, self.last_results = texts, results
            if not self.keep_loaded:
                self.offload()
        return results

    def diagnose(self, images, progress: Optional[Callable[[int, int], None]] = None
                 ) -> list[Diagnosis]:
        return [r.diagnosis for r in self.diagnose_detailed(images, progress)]


def load_vlm_reasoner(path, device=None, dtype="auto", attn_implementation: str = "sdpa",
                      max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, keep_loaded: bool = True,
                      hint: str = "", max_pixels: int = DEFAULT_MAX_PIXELS,
                      before_load=None) -> VLMReasoner:
    """Load a local Qwen3-VL / Qwen2.5-VL folder as a reasoner (weights stay on the CPU until
    the first diagnosis moves them to ``device``)."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) \
            or not 1 <= max_new_tokens <= 32768:
        raise ValueError(f"max_new_tokens: expected an integer in [1, 32768], got "
                         f"{max_new_tokens!r}")
    device = torch.device(device or "cpu")
    torch_dtype = resolve_dtype(dtype, device)
    model, processor, family = load_vlm(path, torch_dtype, attn_implementation)
    return VLMReasoner(model, processor, family, device=device, dtype=torch_dtype,
                       name=Path(path).name, max_new_tokens=max_new_tokens,
                       keep_loaded=keep_loaded, hint=hint, max_pixels=max_pixels,
                       path=path, before_load=before_load)
