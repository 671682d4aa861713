"""The prior-conditioned restorer: a small NAFNet-style U-Net whose blocks read the diagnosis.

Three kinds of conditioning, each neutral until trained so that an untrained branch never
changes the output and later work can plug signals in without changing the interface:

* **degradation-aware** (always on): the diagnosis prior vector ``[B, prior_dim]`` (from the
  prior encoder; an all-zero vector means "no diagnosis") goes through an MLP
  (``prior_dim -> 4*width -> 2*width``) to an embedding that FiLM-modulates every
  :class:`DegradationAwareBlock` (``LN(x) * (1 + scale) + shift``, projection
  zero-initialised).
* **content-aware** (``text_dim > 0``): :class:`ContentAwareBlock` cross-attends from image
  features at the lowest resolution to text/semantic tokens ``[B, T, text_dim]`` (e.g. a VLM's
  hidden states), zero-initialised output projection.
* **reference-aware** (``use_reference=True``): a light conv encoder turns a reference image
  (e.g. a diffusion restoration of the same picture) into a feature pyramid; each encoder level
  fuses it by a gated concat -> 1x1 conv (gate zero-initialised) and the lowest level also
  cross-attends to pooled reference tokens.

Images are ``[B, 3, H, W]`` floats in [0, 1] (channels first -- ComfyUI's ``IMAGE`` is
``[B, H, W, C]`` and must be permuted by the caller). The output is the input plus a predicted
residual and is *not* clamped; callers clamp to [0, 1].

Weights are stored as safetensors (never pickle) with the config JSON in the file metadata; see
:func:`save_restorer` / :func:`load_restorer` / :func:`detect_restorer`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ARCH_NAME", "RestorerConfig", "LayerNorm2d", "DegradationAwareBlock", "ContentAwareBlock",
    "ReferenceAwareBlock", "ReferenceEncoder", "PriorRestorer", "save_restorer", "load_restorer",
    "detect_restorer", "infer_config", "grown_copy",
]

ARCH_NAME = "reason_restore.PriorRestorer"
_RESERVED_METADATA = ("config", "arch")
# Reference features are average-pooled to at most this many tokens per side for the
# lowest-level cross-attention (keeps it cheap at any resolution).
_REF_TOKENS_PER_SIDE = 16


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------

@dataclass
class RestorerConfig:
    """Architecture hyper-parameters of :class:`PriorRestorer`.

    ``enc_blocks`` lists blocks per encoder level from full resolution down; ``dec_blocks``
    lists blocks per decoder level from the lowest resolution up (NAFNet's convention); both
    have one entry per level, and each level halves the resolution and doubles the channels.
    """

    prior_dim: int
    width: int = 24
    enc_blocks: tuple[int, ...] = (1, 1, 2)
    middle_blocks: int = 2
    dec_blocks: tuple[int, ...] = (1, 1, 1)
    text_dim: int = 0
    use_reference: bool = False
    heads: int = 2

    def __post_init__(self):
        def _int(name, value, minimum):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"RestorerConfig.{name}: expected an int >= {minimum}, "
                                 f"got {value!r}")
            return value

        _int("prior_dim", self.prior_dim, 1)
        _int("width", self.width, 1)
        _int("middle_blocks", self.middle_blocks, 0)
        _int("text_dim", self.text_dim, 0)
        _int("heads", self.heads, 1)
        for name in ("enc_blocks", "dec_blocks"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"RestorerConfig.{name}: expected a sequence of ints, "
                                 f"got {value!r}")
            value = tuple(value)
            for v in value:
                _int(name + "[i]", v, 0)
            setattr(self, name, value)
        if not self.enc_blocks:
            raise ValueError("RestorerConfig.enc_blocks: needs at least one level")
        if len(self.dec_blocks) != len(self.enc_blocks):
            raise ValueError(f"RestorerConfig.dec_blocks: expected {len(self.enc_blocks)} "
                             f"entries (one per encoder level), got {len(self.dec_blocks)}")
        if not isinstance(self.use_reference, bool):
            raise ValueError(f"RestorerConfig.use_reference: expected a bool, "
                             f"got {self.use_reference!r}")
        if self.text_dim > 0 or self.use_reference:
            if self.bottom_channels % self.heads:
                raise ValueError(f"RestorerConfig.heads: {self.heads} does not divide the "
                                 f"lowest-level channel count {self.bottom_channels}")

    @property
    def levels(self) -> int:
        return len(self.enc_blocks)

    @property
    def multiple_of(self) -> int:
        return 2 ** self.levels

    @property
    def bottom_channels(self) -> int:
        return self.width * 2 ** self.levels

    @property
    def emb_dim(self) -> int:
        # Width of the degradation embedding (the prior MLP is prior_dim -> 4w -> 2w).
        return 2 * self.width

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["enc_blocks"] = list(self.enc_blocks)
        d["dec_blocks"] = list(self.dec_blocks)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RestorerConfig":
        if not isinstance(data, Mapping):
            raise ValueError(f"RestorerConfig.from_dict: expected a mapping, got "
                             f"{type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(k for k in data if k not in known)
        if unknown:
            raise ValueError(f"RestorerConfig: unknown key(s) {unknown}; expected some of "
                             f"{known}")
        if "prior_dim" not in data:
            raise ValueError("RestorerConfig: missing required key 'prior_dim'")
        return cls(**dict(data))


# ------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------

class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of ``[B, C, H, W]``."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalisation without the affine part."""
        mu = x.mean(1, keepdim=True)
        xc = x - mu
        var = xc.pow(2).mean(1, keepdim=True)
        return xc * torch.rsqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalise(x)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class DegradationAwareBlock(nn.Module):
    """NAFBlock whose spatial branch is FiLM-modulated by the degradation embedding.

    ``h = LN(x) * (1 + scale) + shift`` (the input of the depthwise-conv branch, where the
    degradation-specific filtering happens) with per-channel ``(scale, shift)`` from a
    zero-initialised linear projection of the embedding, so an untrained prior path is
    neutral. The residual scales ``beta``/``gamma`` start at 0 (the block starts as the
    identity), as in NAFNet. (Modulating only this branch, not the FFN's LayerNorm too, keeps
    the default model near 1 M parameters; the next block's branch sees the prior again.)
    """

    def __init__(self, channels: int, emb_dim: int, dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        c, dw, ffn = channels, channels * dw_expand, channels * ffn_expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.film = nn.Linear(emb_dim, 2 * c)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    @staticmethod
    def _modulate(norm: LayerNorm2d, x, scale, shift):
        # (LN(x) * w + b) * (1 + s) + t, folded into one multiply-add.
        one_s = 1.0 + scale
        mul = norm.weight.view(1, -1, 1, 1) * one_s
        add = norm.bias.view(1, -1, 1, 1) * one_s + shift
        return torch.addcmul(add, norm.normalise(x), mul)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self._modulate(self.norm1, x, scale, shift)
        h = self.gate(self.conv2(self.conv1(h)))
        h = self.conv3(h * self.sca(h))
        x = x + h * self.beta
        h = self.norm2(x)
        h = self.conv5(self.gate(self.conv4(h)))
        return x + h * self.gamma


class CrossAttention(nn.Module):
    """Multi-head attention from image positions (queries) to a token sequence.

    Output projection zero-initialised: the module returns zeros until trained.
    """

    def __init__(self, dim: int, kv_dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"CrossAttention: heads={heads} does not divide dim={dim}")
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(kv_dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` [B, C, H, W], ``tokens`` [B, T, kv_dim], ``mask`` [B, T] bool (True = use).

        Returns the attention output ``[B, C, H, W]`` (not added to ``x``). A sample whose
        tokens are all masked out gets a zero output.
        """
        b, c, h, w = x.shape
        hd = self.heads
        q = self.to_q(self.norm_q(x.flatten(2).transpose(1, 2)))            # B, N, C
        k, v = self.to_kv(self.norm_kv(tokens)).chunk(2, dim=-1)            # B, T, C
        q = q.view(b, -1, hd, c // hd).transpose(1, 2)
        k = k.reshape(b, -1, hd, c // hd).transpose(1, 2)
        v = v.reshape(b, -1, hd, c // hd).transpose(1, 2)
        attn_mask = None
        any_valid = None
        if mask is not None:
            any_valid = mask.any(dim=1)                                     # B
            # Rows with no valid token would be NaN: let them attend everywhere, zero later.
            safe = mask | ~any_valid[:, None]
            attn_mask = safe[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.proj(out.transpose(1, 2).reshape(b, -1, c))
        if any_valid is not None:
            out = out * any_valid[:, None, None].to(out.dtype)
        return out.transpose(1, 2).reshape(b, c, h, w)


class ContentAwareBlock(nn.Module):
    """Residual cross-attention to text/semantic tokens; the identity when tokens are None."""

    def __init__(self, channels: int, text_dim: int, heads: int):
        super().__init__()
        self.attn = CrossAttention(channels, text_dim, heads)

    def forward(self, x: torch.Tensor, tokens: Optional[torch.Tensor],
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if tokens is None:
            return x
        return x + self.attn(x, tokens, mask)


class ReferenceEncoder(nn.Module):
    """Light conv pyramid shared by all levels: features at every resolution of the U-Net."""

    def __init__(self, width: int, levels: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GELU())
        self.downs = nn.ModuleList()
        c = width
        for _ in range(levels):
            self.downs.append(nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
                                            nn.GELU()))
            c *= 2

    def forward(self, ref: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(ref)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        return feats


class ReferenceAwareBlock(nn.Module):
    """Fuses reference features of the same level where they agree with the image:
    ``x + gate * agree(x, ref) * conv1x1(cat(x, ref))``.

    ``agree`` is a per-pixel, per-channel map in (0, 1) computed from both features (1x1 conv,
    GELU, depthwise 3x3, sigmoid). It is what lets the block use a good reference and ignore
    an unrelated one: a fusion that is linear in ``(x, ref)`` cannot tell them apart, so it
    either copies both or neither (measured: an unrelated reference cost 0.7 dB without it).
    ``gate`` is a per-channel parameter initialised to 0. With ``attention=True`` (lowest
    level) it also cross-attends to the reference features average-pooled to at most 16x16
    tokens, scaled by the same agreement map. The identity when the reference is None.
    """

    def __init__(self, channels: int, heads: int, attention: bool = False):
        super().__init__()
        self.fuse = nn.Conv2d(2 * channels, channels, 1)
        self.agree = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels))
        self.gate = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.attn = CrossAttention(channels, channels, heads) if attention else None

    def forward(self, x: torch.Tensor, ref: Optional[torch.Tensor]) -> torch.Tensor:
        if ref is None:
            return x
        both = torch.cat([x, ref], dim=1)
        agree = torch.sigmoid(self.agree(both))
        out = x + self.gate * agree * self.fuse(both)
        if self.attn is not None:
            h, w = ref.shape[-2:]
            pooled = F.adaptive_avg_pool2d(
                ref, (min(h, _REF_TOKENS_PER_SIDE), min(w, _REF_TOKENS_PER_SIDE)))
            out = out + agree * self.attn(x, pooled.flatten(2).transpose(1, 2))
        return out


# ------------------------------------------------------------------------------------------
# The network
# ------------------------------------------------------------------------------------------

def _shape_str(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


class PriorRestorer(nn.Module):
    """Prior-conditioned U-Net restorer.

    ``forward(image, prior, text_tokens=None, text_mask=None, reference=None) -> image``

    * ``image``: ``[B, 3, H, W]`` float in [0, 1], any ``H x W`` >= 1 (padded internally to a
      multiple of :attr:`multiple_of` -- reflect where possible, replicate for tiny images --
      and cropped back).
    * ``prior``: ``[B, prior_dim]`` (or ``[1, prior_dim]``, broadcast over the batch). The
      all-zero vector means "no diagnosis" and is an ordinary input to the prior MLP (whose
      biases give it a learned unconditioned embedding); ``None`` is shorthand for it.
    * ``text_tokens``: ``[B, T, text_dim]`` (or batch 1), only if ``config.text_dim > 0``;
      ``text_mask``: ``[B, T]`` bool or 0/1, True/nonzero = a real token.
    * ``reference``: ``[B, 3, h, w]`` (or batch 1), only if ``config.use_reference``; resized
      bilinearly to ``H x W`` when its size differs.

    Returns ``image + residual`` in the image's dtype, *not* clamped (callers clamp).

    Receptive field: the 3x3 depthwise convolutions give a convolutional receptive field of
    roughly +-45 px at the default config (each level doubles the reach of its blocks), and
    the simplified channel attention pools *globally*, so every output pixel depends weakly
    on the whole (padded) image. Tiled inference (:func:`..tiling.tiled_apply`) with
    overlap >= 32 px is visually seamless but not bit-identical to a whole-image pass.
    """

    def __init__(self, config: Union[RestorerConfig, Mapping[str, Any]]):
        super().__init__()
        if isinstance(config, Mapping):
            config = RestorerConfig.from_dict(config)
        if not isinstance(config, RestorerConfig):
            raise TypeError(f"PriorRestorer: expected a RestorerConfig, got "
                            f"{type(config).__name__}")
        self.config = config
        self.multiple_of = config.multiple_of
        w, emb = config.width, config.emb_dim

        self.intro = nn.Conv2d(3, w, 3, padding=1)
        self.prior_embed = nn.Sequential(
            nn.Linear(config.prior_dim, 4 * w), nn.SiLU(), nn.Linear(4 * w, emb))

        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        c = w
        for n in config.enc_blocks:
            self.encoders.append(nn.ModuleList(DegradationAwareBlock(c, emb) for _ in range(n)))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2

        self.middle = nn.ModuleList(DegradationAwareBlock(c, emb)
                                    for _ in range(config.middle_blocks))
        self.content = (ContentAwareBlock(c, config.text_dim, config.heads)
                        if config.text_dim > 0 else None)
        if config.use_reference:
            self.ref_encoder = ReferenceEncoder(w, config.levels)
            self.ref_fusions = nn.ModuleList(
                [ReferenceAwareBlock(w * 2 ** i, config.heads) for i in range(config.levels)]
                + [ReferenceAwareBlock(c, config.heads, attention=True)])
        else:
            self.ref_encoder = None
            self.ref_fusions = None

        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for n in config.dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False),
                                          nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.ModuleList(DegradationAwareBlock(c, emb) for _ in range(n)))
        self.ending = nn.Conv2d(w, 3, 3, padding=1)

    # -- introspection -----------------------------------------------------------------

    def size_requirement(self) -> dict[str, Any]:
        """Spandrel-style size requirements. Any size works (forward pads); tiles that are a
        multiple of ``multiple_of`` avoid padding."""
        return {"minimum": 1, "multiple_of": self.multiple_of, "square": False}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- input checks ------------------------------------------------------------------

    def _batched(self, name: str, t: torch.Tensor, batch: int, tail: tuple, tail_str: str,
                 ndim: int) -> torch.Tensor:
        ok = (isinstance(t, torch.Tensor) and t.dim() == ndim and t.shape[0] in (1, batch)
              and all(e is None or s == e for s, e in zip(t.shape[1:], tail)))
        if not ok:
            got = _shape_str(t) if isinstance(t, torch.Tensor) else type(t).__name__
            if isinstance(t, torch.Tensor) and t.dim() == ndim and t.shape[0] == batch:
                got = "[B" + got[1 + len(str(batch)):]
            raise ValueError(f"{name}: expected shape [B, {tail_str}] with B={batch} (or 1), "
                             f"got {got}")
        if t.shape[0] != batch:
            t = t.expand(batch, *t.shape[1:])
        return t

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple_of
        ph, pw = (-h) % m, (-w) % m
        if ph == 0 and pw == 0:
            return x
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    # -- forward -----------------------------------------------------------------------

    def forward(self, image: torch.Tensor, prior: Optional[torch.Tensor],
                text_tokens: Optional[torch.Tensor] = None,
                text_mask: Optional[torch.Tensor] = None,
                reference: Optional[torch.Tensor] = None) -> torch.Tensor:
        cfg = self.config
        if not (isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[1] == 3):
            got = _shape_str(image) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image: expected shape [B, 3, H, W], got {got}")
        if not image.is_floating_point():
            raise ValueError(f"image: expected a float tensor in [0, 1], got {image.dtype}")
        b, _, h, w = image.shape
        if b == 0 or h == 0 or w == 0:
            raise ValueError(f"image: empty tensor {_shape_str(image)}")
        weight = self.intro.weight
        dtype, device = weight.dtype, weight.device

        if prior is None:
            prior = torch.zeros(b, cfg.prior_dim, dtype=dtype, device=device)
        prior = self._batched("prior", prior, b, (cfg.prior_dim,), str(cfg.prior_dim), 2)
        prior = prior.to(device=device, dtype=dtype)

        if text_tokens is not None:
            if self.content is None:
                raise ValueError("text_tokens: this restorer was built with text_dim=0 (no "
                                 "content-aware blocks); pass None")
            text_tokens = self._batched("text_tokens", text_tokens, b, (None, cfg.text_dim),
                                        f"T, {cfg.text_dim}", 3)
            text_tokens = text_tokens.to(device=device, dtype=dtype)
            if text_mask is not None:
                t = text_tokens.shape[1]
                text_mask = self._batched("text_mask", text_mask, b, (t,), str(t), 2)
                text_mask = (text_mask != 0).to(device)
        elif text_mask is not None:
            raise ValueError("text_mask: given without text_tokens")

        ref_feats = None
        if reference is not None:
            if self.ref_encoder is None:
                raise ValueError("reference: this restorer was built with use_reference=False;"
                                 " pass None")
            reference = self._batched("reference", reference, b, (3,), "3, H, W", 4)
            reference = reference.to(device=device, dtype=dtype)
            if reference.shape[-2:] != (h, w):
                down = reference.shape[-2] > h or reference.shape[-1] > w
                reference = F.interpolate(reference, size=(h, w), mode="bilinear",
                                          align_corners=False, antialias=down)
            ref_feats = self.ref_encoder(self._pad(reference))

        x = self._pad(image.to(device=device, dtype=dtype))
        emb = self.prior_embed(prior)

        feat = self.intro(x)
        skips = []
        for level, (blocks, down) in enumerate(zip(self.encoders, self.downs)):
            for blk in blocks:
                feat = blk(feat, emb)
            if ref_feats is not None:
                feat = self.ref_fusions[level](feat, ref_feats[level])
            skips.append(feat)
            feat = down(feat)

        if ref_feats is not None:
            feat = self.ref_fusions[-1](feat, ref_feats[-1])
        half = len(self.middle) // 2
        for blk in self.middle[:half]:
            feat = blk(feat, emb)
        if self.content is not None and text_tokens is not None:
            feat = self.content(feat, text_tokens, text_mask)
        for blk in self.middle[half:]:
            feat = blk(feat, emb)

        for up, blocks, skip in zip(self.ups, self.decoders, reversed(skips)):
            feat = up(feat) + skip
            for blk in blocks:
                feat = blk(feat, emb)

        out = self.ending(feat) + x
        return out[:, :, :h, :w].to(image.dtype)


# ------------------------------------------------------------------------------------------
# Detection, save / load
# ------------------------------------------------------------------------------------------

_SIGNATURE_KEYS = ("intro.weight", "prior_embed.0.weight", "prior_embed.2.weight",
                   "downs.0.weight", "ending.weight")


def detect_restorer(state_dict: Mapping[str, Any]) -> bool:
    """True when ``state_dict``'s key names are those of a :class:`PriorRestorer`."""
    if not isinstance(state_dict, Mapping):
        return False
    if not all(k in state_dict for k in _SIGNATURE_KEYS):
        return False
    return any(k.startswith(("encoders.", "middle.", "decoders.")) and k.endswith(".film.weight")
               for k in state_dict)


def _count_blocks(state_dict: Mapping[str, Any], prefix: str) -> int:
    n = 0
    while f"{prefix}{n}.norm1.weight" in state_dict:
        n += 1
    return n


def infer_config(state_dict: Mapping[str, Any], heads: int = 2) -> RestorerConfig:
    """Rebuild a :class:`RestorerConfig` from weight names and shapes (for files without the
    ``config`` metadata). ``heads`` is not recoverable from weights and must be given."""
    if not detect_restorer(state_dict):
        raise ValueError("infer_config: not a PriorRestorer state dict")
    levels = 0
    while f"downs.{levels}.weight" in state_dict:
        levels += 1
    kv = state_dict.get("content.attn.to_kv.weight")
    return RestorerConfig(
        prior_dim=int(state_dict["prior_embed.0.weight"].shape[1]),
        width=int(state_dict["intro.weight"].shape[0]),
        enc_blocks=tuple(_count_blocks(state_dict, f"encoders.{i}.") for i in range(levels)),
        middle_blocks=_count_blocks(state_dict, "middle."),
        dec_blocks=tuple(_count_blocks(state_dict, f"decoders.{i}.") for i in range(levels)),
        text_dim=int(kv.shape[1]) if kv is not None else 0,
        use_reference="ref_encoder.stem.0.weight" in state_dict,
        heads=heads,
    )


def grown_copy(model: PriorRestorer, **changes) -> PriorRestorer:
    """``model`` with extra conditioning branches (``use_reference=True``, ``text_dim=N``):
    every existing weight is copied and the new branches start neutral (zero gates and
    projections), so the copy's outputs equal the original's until it is trained. Only
    branches may be added; anything else that would drop or reshape weights is refused."""
    allowed = {"use_reference", "text_dim"}
    if set(changes) - allowed:
        raise ValueError(f"grown_copy: only {sorted(allowed)} can change, got "
                         f"{sorted(set(changes) - allowed)}")
    old = model.config
    if changes.get("text_dim", old.text_dim) != old.text_dim and old.text_dim:
        raise ValueError(f"grown_copy: text_dim is already {old.text_dim}")
    grown = PriorRestorer(RestorerConfig.from_dict({**old.to_dict(), **changes}))
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith(("ref_encoder.", "ref_fusions.", "content."))
                         for k in missing):
        raise ValueError(f"grown_copy: weights do not fit (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return grown.train(model.training)


def save_restorer(model: PriorRestorer, path: Union[str, os.PathLike],
                  metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``model`` as safetensors with ``config`` (JSON) and ``arch`` in the metadata.

    Extra ``metadata`` values that are not strings are JSON-encoded; the keys ``config`` and
    ``arch`` are reserved. The file is written to a temporary name and renamed, so an
    interrupted save never leaves a truncated file under ``path``.
    """
    from safetensors.torch import save_file

    if not isinstance(model, PriorRestorer):
        raise TypeError(f"save_restorer: expected a PriorRestorer, got {type(model).__name__}")
    meta: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str):
            raise ValueError(f"save_restorer: metadata keys must be strings, got {k!r}")
        if k in _RESERVED_METADATA:
            raise ValueError(f"save_restorer: metadata key {k!r} is reserved")
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    meta["config"] = json.dumps(model.config.to_dict())
    meta["arch"] = ARCH_NAME
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _few(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def load_restorer(path: Union[str, os.PathLike],
                  map_location: Union[str, torch.device] = "cpu") -> PriorRestorer:
    """Load a :class:`PriorRestorer` saved by :func:`save_restorer` (safetensors, no pickle).

    Returns the model in eval mode on ``map_location``; the file's extra metadata is on
    ``model.metadata``. Raises ``FileNotFoundError`` for a missing file and ``ValueError``
    naming the file for anything else wrong (not safetensors, truncated, another
    architecture, keys or shapes that do not match the config, non-finite weights).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: restorer weights file not found")
    try:
        state: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            for k in f.keys():
                state[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises its own error types (and OSError)
        raise ValueError(f"{path}: not a valid restorer weights file "
                         f"({type(e).__name__}: {e})") from e

    arch = meta.get("arch")
    if arch is not None and arch != ARCH_NAME:
        raise ValueError(f"{path}: weights are for architecture {arch!r}, expected "
                         f"{ARCH_NAME!r}")
    if "config" in meta:
        try:
            config = RestorerConfig.from_dict(json.loads(meta["config"]))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: invalid restorer config in metadata ({e})") from e
    elif detect_restorer(state):
        config = infer_config(state)
    else:
        raise ValueError(f"{path}: not a ReasonRestore restorer file (no 'config' metadata "
                         f"and the weight names do not match {ARCH_NAME})")

    model = PriorRestorer(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} (file {list(state[k].shape)}, model {list(expected[k].shape)})"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_few(mismatched)}")
    if problems:
        raise ValueError(f"{path}: weights do not match the restorer config; "
                         + "; ".join(problems))
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: non-finite values (NaN/Inf) in {_few(bad)}")

    model.load_state_dict(state, strict=True)
    model.metadata = {k: v for k, v in meta.items() if k not in _RESERVED_METADATA}
    return model.to(map_location).eval()
