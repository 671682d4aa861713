"""Checking and normalising images at the boundary, so bad input fails loudly and early.

The core works on ``[B, 3, H, W]`` float tensors in [0, 1]. ComfyUI hands ``[B, H, W, C]``;
files can be grayscale, RGBA, palette or 16-bit. Everything funnels through ``as_rgb_batch``
so each entry point gives the same clear message naming the input.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

MAX_PIXELS = 80_000_000  # ~ 10000 x 8000: beyond this we refuse rather than exhaust memory


def as_rgb_batch(image, name: str = "image", channels_last: bool = False) -> torch.Tensor:
    """Validate and convert to ``[B, 3, H, W]`` float32 in [0, 1].

    Accepts [H, W], [H, W, C] / [C, H, W] or batches of them; 1 channel is repeated to 3,
    4 channels (RGBA) drop alpha, 2 channels (gray + alpha) keep gray. NaN/inf raise.
    """
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name}: expected an image tensor, got {type(image).__name__}")
    x = image
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif str(x.dtype) == "torch.uint16":
        x = x.float() / 65535.0
    elif not x.is_floating_point():
        raise TypeError(f"{name}: expected a float or uint8 image, got dtype {x.dtype}")
    if x.dim() == 2:
        x = x[None, None] if not channels_last else x[None, :, :, None]
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"{name}: expected [B, H, W, C] (or [H, W, C]), got shape "
                         f"{list(image.shape)}")
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    c = x.shape[1]
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif c == 2:
        x = x[:, :1].expand(-1, 3, -1, -1)
    elif c == 4:
        x = x[:, :3]
    elif c != 3:
        raise ValueError(f"{name}: expected 1, 3 or 4 channels, got {c} (shape "
                         f"{list(image.shape)})")
    b, _, h, w = x.shape
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"{name}: empty image (shape {list(image.shape)})")
    if h * w > MAX_PIXELS:
        raise ValueError(f"{name}: {w}x{h} is larger than the {MAX_PIXELS // 1_000_000} MP "
                         f"this pack accepts")
    x = x.float()
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: contains {bad} NaN/inf values; fix the upstream node")
    return x.clamp(0.0, 1.0).contiguous()


def dct_matrix(n: int, dtype=torch.float32) -> torch.Tensor:
    """The orthonormal n-point DCT-II matrix (its rows are the basis vectors); for n = 8, JPEG's
    forward DCT of a block ``x`` is ``d @ x @ d.T``."""
    k = torch.arange(n, dtype=torch.float64)
    d = torch.cos(math.pi * (2 * k[None] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.to(dtype)


def luma(image: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``[H, W]`` of one ``[3, H, W]`` image, in its dtype."""
    return 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


def load_image_file(path) -> torch.Tensor:
    """Read a file as a [1, 3, H, W] tensor, with an error naming the file if it is not one."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(im, dtype=np.float32) / 65535.0
            else:
                arr = np.asarray(im.convert("RGBA" if "A" in im.getbands() else "RGB"),
                                 dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    return as_rgb_batch(arr, name=str(path), channels_last=True)


def save_image_file(x: torch.Tensor, path) -> None:
    """Save a single image [1, 3, H, W] (callers save batches image by image)."""
    from PIL import Image
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"{path}: expected one image [1, 3, H, W], got {list(x.shape)}")
    arr = (x[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path)
