"""Tiny random-initialised Qwen3-VL / Qwen2.5-VL checkpoints for offline tests (not a test
module: no ``test_`` prefix).

Everything is built from configs: a byte-level BPE tokenizer with no merges (the 256 byte
characters plus the Qwen special tokens), a two-layer text model, a one-block vision tower,
and the real processor classes (image, video, chat template). ``save_tiny_vlm`` writes a
folder laid out exactly like a downloaded checkpoint (config.json, model.safetensors,
tokenizer, processor configs), well under 1 MB, so the tests go through the same
``from_pretrained`` path users hit. Random weights generate garbage, which is exactly what the
parser must survive.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

# A small Qwen-style chat template: text parts verbatim, image parts as the vision placeholder
# the processor expands to one <|image_pad|> per merged patch.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

FAMILIES = ("qwen3_vl", "qwen2_5_vl")


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": list(SPECIALS)})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _ids(tokenizer) -> dict:
    return {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIALS}


def make_tiny_vlm(family: str = "qwen3_vl", seed: int = 0):
    """(model, processor) of ``family`` with random weights."""
    import torch
    tokenizer = make_tokenizer()
    ids = _ids(tokenizer)
    vocab = len(tokenizer)
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"],
                  vision_end_token_id=ids["<|vision_end|>"])
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    torch.manual_seed(seed)
    if family == "qwen3_vl":
        from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig,
                                  Qwen3VLForConditionalGeneration, Qwen3VLProcessor,
                                  Qwen3VLVideoProcessor)
        patch = 16
        config = Qwen3VLConfig(
            text_config={**text, "head_dim": 16, "rope_parameters": {
                "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                "mrope_interleaved": True}},
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2,
                               patch_size=patch, spatial_merge_size=2, temporal_patch_size=2,
                               out_hidden_size=32, num_position_embeddings=64,
                               deepstack_visual_indexes=[0]),
            **tokens)
        model = Qwen3VLForConditionalGeneration(config)
        video_cls, proc_cls = Qwen3VLVideoProcessor, Qwen3VLProcessor
    elif family == "qwen2_5_vl":
        from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                                  Qwen2_5_VLProcessor, Qwen2VLImageProcessor,
                                  Qwen2VLVideoProcessor)
        patch = 14
        config = Qwen2_5_VLConfig(
            text_config={**text, "rope_parameters": {
                "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}},
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2,
                               patch_size=patch, spatial_merge_size=2, temporal_patch_size=2,
                               out_hidden_size=32, window_size=56, fullatt_block_indexes=[0]),
            **tokens)
        model = Qwen2_5_VLForConditionalGeneration(config)
        video_cls, proc_cls = Qwen2VLVideoProcessor, Qwen2_5_VLProcessor
    else:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    # Small images keep the vision tower cheap: at most 8x8 patches.
    size = {"shortest_edge": (2 * patch) ** 2, "longest_edge": (8 * patch) ** 2}
    image_processor = Qwen2VLImageProcessor(patch_size=patch, merge_size=2,
                                            temporal_patch_size=2, size=size)
    video_processor = video_cls(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                size=size)
    processor = proc_cls(image_processor=image_processor, tokenizer=tokenizer,
                         video_processor=video_processor, chat_template=CHAT_TEMPLATE)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model.eval(), processor


def save_tiny_vlm(folder: Path, family: str = "qwen3_vl", seed: int = 0) -> Path:
    """Write a tiny checkpoint of ``family`` into ``folder`` (created); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, processor = make_tiny_vlm(family, seed)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder
