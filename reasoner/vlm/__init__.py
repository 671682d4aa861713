"""The VLM reasoner: a Qwen3-VL / Qwen2.5-VL that writes the structured diagnosis.

* :mod:`.prompt` -- the prompt, generated from the taxonomy, and the answer format (also the
  target of the fine-tuning export)
* :mod:`.parse` -- a parser that turns anything a model writes into a valid
  :class:`~..diagnosis.Diagnosis` (low-confidence, with the raw text attached, at worst)
* :mod:`.backend` -- :class:`~.backend.VLMReasoner`: loads a local checkpoint with
  transformers' own classes and diagnoses images
* :mod:`.fusion` -- :class:`~.fusion.FusedReasoner`: the analyzer's calibrated numbers plus the
  VLM's semantics and factors, every field tagged with its source
* :mod:`.rewards` -- GRPO-style reward functions (TRL-compatible signatures)
* :mod:`.semantics` -- scene/object tags from an offline ImageNet classifier when no VLM runs

Importing this package imports neither torch nor transformers (ComfyUI builds the node list
from torch-free modules); :mod:`.backend`, :mod:`.fusion` and :mod:`.semantics` import them
when they run.
"""
