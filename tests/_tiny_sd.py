"""A tiny random Stable Diffusion pipeline for the reference-synthesis tests (not a test module).

Built from configs (UNet with channels (32, 64), a 4-level VAE so the VAE factor is 8 as in
real SD, a 2-layer CLIP text encoder, a DDIM scheduler, and a byte-level CLIP tokenizer whose
vocabulary the test writes itself), then written three ways:

* ``diffusers/<name>/``: a diffusers folder (``save_pretrained``, safetensors);
* ``checkpoints/<name>.safetensors``: a single file in the original LDM key layout
  (``model.diffusion_model.*``, ``first_stage_model.*``,
  ``cond_stage_model.transformer.text_model.*``) -- the inverse of diffusers' single-file
  conversion, written out here so loading it exercises the same path as a real checkpoint;
* ``diffusers/<name>-config/``: a weights-free config skeleton of it (like the shipped
  ``restorer/reference/configs/*``) *without* the tokenizer vocabulary, which lives in
  ``clip-tokenizer/`` instead (as ComfyUI's own ``comfy/sd1_tokenizer`` does in real use).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

NAME = "tiny-sd"
SIZE = 64  # test images: 64 px -> an 8 x 8 latent


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer(folder: Path) -> Path:
    """A CLIP BPE vocabulary with no merges: the 256 byte characters, the same with ``</w>``,
    and the two specials (514 tokens)."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "model_max_length": 77}))
    return folder


def build_pipeline(tokenizer_dir: Path, seed: int = 0):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, \
        UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8)
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
        in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- diffusers -> original (LDM) key layout ------------------------------------------------

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str) -> str:
    for a, b in (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                 ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
                 ("conv_shortcut", "skip_connection")):
        if rest.startswith(a + "."):
            return b + rest[len(a):]
    return rest


def unet_to_ldm(state: dict, config) -> dict:
    per = config["layers_per_block"] + 1
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for key, value in state.items():
        new = None
        for a, b in _UNET_TOP.items():
            if key.startswith(a + "."):
                new = b + key[len(a):]
        m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
        if m:
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            block = 1 + i * per + j
            new = (f"input_blocks.{block}.0.{_resnet(rest)}" if kind == "resnets"
                   else f"input_blocks.{block}.1.{rest}")
        m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
        if m:
            new = f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
        m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
        if m:
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            block = i * per + j
            new = (f"output_blocks.{block}.0.{_resnet(rest)}" if kind == "resnets"
                   else f"output_blocks.{block}.1.{rest}")
        m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)
        if m:
            i = int(m[1])
            new = f"output_blocks.{i * per + per - 1}.{2 if up_has_attn[i] else 1}.conv.{m[2]}"
        m = re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key)
        if m:
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        m = re.match(r"mid_block\.attentions\.0\.(.*)", key)
        if m:
            new = f"middle_block.1.{m[1]}"
        if new is None:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state: dict, config) -> dict:
    n = len(config["block_out_channels"])
    out = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out")
        m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)
        if m:
            rest = m[3].replace("conv_shortcut", "nin_shortcut")
            new = f"encoder.down.{m[1]}.block.{m[2]}.{rest}"
        m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
        if m:
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)
        if m:
            rest = m[3].replace("conv_shortcut", "nin_shortcut")
            new = f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{rest}"
        m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)
        if m:
            new = f"decoder.up.{n - 1 - int(m[1])}.upsample.conv.{m[2]}"
        m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key)
        if m:
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)$", key)
        if m:
            new = f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
            if m[2] != "group_norm" and m[3] == "weight":
                value = value[:, :, None, None]  # LDM stores them as 1x1 convolutions
        out["first_stage_model." + new] = value
    return out


def text_to_ldm(state: dict) -> dict:
    # transformers 5 names CLIPTextModel keys without "text_model."; the original layout has it.
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        key = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + key] = value
    return out


def single_file_state(pipe) -> dict:
    sd = {}
    sd.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    sd.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    sd.update(text_to_ldm(pipe.text_encoder.state_dict()))
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def write_skeleton(diffusers_dir: Path, out: Path) -> Path:
    """Copy only the JSON configs of a diffusers folder (no weights, no vocabulary)."""
    if out.exists():
        shutil.rmtree(out)
    for p in diffusers_dir.rglob("*.json"):
        if p.parent.name == "tokenizer" and p.name != "tokenizer_config.json":
            continue
        target = out / p.relative_to(diffusers_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    return out


def make_tiny_sd(root: Path) -> dict:
    """Write the tiny model every way the loader accepts under ``root`` (a ComfyUI-like
    ``models`` folder); returns the paths and the in-memory pipeline."""
    from safetensors.torch import save_file

    tok_dir = write_tokenizer(root / "clip-tokenizer")
    pipe = build_pipeline(tok_dir)
    folder = root / "diffusers" / NAME
    pipe.save_pretrained(folder, safe_serialization=True)
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    ckpt = root / "checkpoints" / f"{NAME}.safetensors"
    save_file(single_file_state(pipe), str(ckpt))
    skeleton = write_skeleton(folder, root / "diffusers" / f"{NAME}-config")
    return {"pipe": pipe, "folder": folder, "checkpoint": ckpt, "skeleton": skeleton,
            "tokenizer": tok_dir}
