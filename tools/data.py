"""Clean training photographs, obtained from Debian wallpaper packages.

No dataset hub is reachable from the build machines, but several Debian packages
ship real photographs as wallpapers. This module downloads those packages with
``apt-get download`` (nothing is vendored into git), unpacks them with ``dpkg -x``,
picks the photographs (the packages also hold illustrations and renders, which
the SOURCES table leaves out), area-downscales them and cuts them into patches.

Split: the ``mate`` source (HELD_OUT) is the held-out validation set; every other
source is the train split. Whole sources are held out, not random photos, so that
validation photos share no photographer, camera or JPEG encoder with training.

Layout under the cache (default ``~/.cache/reason_restore/data``; ``--cache`` or
env ``REASON_RESTORE_DATA`` override it)::

    debs/<pkg>_<ver>.deb, debs/<pkg>/...   downloaded and unpacked packages
    photos/<source>/<name>.png              prepared photographs
    manifest.json                           provenance + hashes of every photo
    patches_<split>_<size>.npy              uint8 [N, size, size, 3] patches

Run:  python -m reason_restore.tools.data [--cache DIR] [--size 256] [--stride 192]
 or:  python tools/data.py ...   (from the repo root; stdlib + numpy + PIL only)
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import math
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Source:
    name: str
    files: tuple  # (debian package, glob inside the package), ...
    exclude: tuple = ()  # skip files whose name contains any of these

    @property
    def packages(self) -> tuple:
        return tuple(dict.fromkeys(pkg for pkg, _ in self.files))

    def wants(self, package: str, path: str) -> bool:
        """Whether a file (path inside its package, no leading /) belongs to this source."""
        name = path.rsplit("/", 1)[-1]
        if any(word in name for word in self.exclude):
            return False
        # Globs are per package: lomiri-20.04 has many other backgrounds/*.jpg.
        return any(pkg == package and fnmatch.fnmatchcase(path, pattern)
                   for pkg, pattern in self.files)


_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_LXQT = "usr/share/lxqt/wallpapers/{}"

# Photographs only: illustrations, logos and renders in the same packages are left
# out by listing files explicitly where a package mixes them (lxqt, plasma).
SOURCES = (
    Source("lomiri", (
        ("lomiri-wallpapers-16.04", "usr/share/backgrounds/*.jpg"),
        ("lomiri-wallpapers-20.04", "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"),
    ), exclude=("umang",)),  # "umang" is an illustration, not a photo
    Source("mate", (("mate-backgrounds", "usr/share/backgrounds/mate/nature/*"),)),
    Source("lxqt", tuple(("lxqt-themes", _LXQT.format(f)) for f in (
        "Butterfly-Kenneth-Wimer.jpg", "Valendas.png", "after-the-rain.jpg",
        "appleflower.png", "beam.png", "butterfly.png", "cloud.png", "drop.png",
        "flowers.png", "fog.jpg", "this-is-not-windows.jpg"))),
    Source("plasma", tuple(("plasma-workspace-wallpapers", _PLASMA.format(n)) for n in (
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
        "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am"))
        # Debian ships the Plasma "Next" wallpaper in the `breeze` package.
        + (("breeze", "usr/share/wallpapers/Next/contents/images/5120x2880.png"),)),
)
HELD_OUT = "mate"  # validation source; all others are train
MAX_SIDE = 1280  # long side of a prepared photo
MIN_FACTOR = 2  # always area-downscale at least 2x: it averages away JPEG artefacts


def split_of(source: str) -> str:
    return "val" if source == HELD_OUT else "train"


def default_cache() -> Path:
    env = os.environ.get("REASON_RESTORE_DATA")
    return Path(env) if env else Path.home() / ".cache" / "reason_restore" / "data"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- obtain

def _apt_download(pkg: str, debs: Path) -> None:
    cmd = ["apt-get", "download", pkg]
    try:
        if subprocess.run(cmd, cwd=debs, capture_output=True).returncode == 0:
            return
        # The usual failure is stale package lists (old version no longer on the mirror).
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(cmd, cwd=debs, check=True, capture_output=True)
    except FileNotFoundError:
        raise RuntimeError("apt-get not found: the training photos come from Debian "
                           "packages, run this on a Debian/Ubuntu machine") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"`{' '.join(e.cmd)}` failed: {e.stderr.decode(errors='replace')}")


def fetch_package(pkg: str, cache: Path) -> Path:
    """Download (once) and unpack (once) a Debian package; return its root dir."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        _apt_download(pkg, debs)
        found = sorted(debs.glob(f"{pkg}_*.deb"))
    root, marker = debs / pkg, debs / pkg / ".extracted"
    if not marker.exists():  # marker written last, so an interrupted unpack is redone
        root.mkdir(exist_ok=True)
        subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], check=True)
        marker.write_text(found[-1].name)
    return root


def source_files(source: Source, cache: Path) -> list:
    """[(package, path inside package, absolute path)] of a source's photos, sorted."""
    out = []
    for pkg in source.packages:
        root = fetch_package(pkg, cache)
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and source.wants(pkg, rel):
                out.append((pkg, "/" + rel, p))
    return out


def photo_name(path: str) -> str:
    """Output stem. Plasma names files by resolution, so use the wallpaper's folder."""
    parts = path.rstrip("/").split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    if re.fullmatch(r"\d+x\d+", stem) and len(parts) >= 4:
        return parts[-4]  # <Name>/contents/images/<WxH>.jpg
    return stem


# ---------------------------------------------------------------- prepare

def downscale_factor(width: int, height: int, max_side: int = MAX_SIDE) -> int:
    return max(MIN_FACTOR, math.ceil(max(width, height) / max_side))


def prepare_image(img: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """RGB, area-downscaled by an integer factor >= 2 until the long side <= max_side.

    Image.reduce averages each factor x factor block (a box filter): it removes JPEG
    blocking and ringing instead of resampling it, and adds no new blur kernel.
    """
    img = img.convert("RGB")
    return img.reduce(downscale_factor(*img.size, max_side=max_side))


def prepare_photos(cache: Path, log=print) -> dict:
    """Obtain every source, write the prepared PNGs and manifest.json; return it."""
    photos = []
    for source in SOURCES:
        out_dir = cache / "photos" / source.name
        out_dir.mkdir(parents=True, exist_ok=True)
        files = source_files(source, cache)
        if not files:  # a package release moved its wallpapers: fail loudly, not silently
            raise RuntimeError(f"source {source.name!r}: no files matched in {source.packages}")
        for pkg, path, abs_path in files:
            out = out_dir / f"{photo_name(path)}.png"
            with Image.open(abs_path) as img:
                small = prepare_image(img)
            small.save(out)
            photos.append({
                "name": out.stem, "source": source.name, "split": split_of(source.name),
                "package": pkg, "path": path, "original_sha256": sha256_file(abs_path),
                "file": out.relative_to(cache).as_posix(), "sha256": sha256_file(out),
                "width": small.width, "height": small.height,
            })
        log(f"  {source.name}: {len(files)} photos")
    photos.sort(key=lambda e: (e["source"], e["name"]))
    manifest = {"held_out": HELD_OUT, "photos": photos}
    manifest["manifest_sha256"] = manifest_hash(manifest)
    (cache / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def manifest_hash(manifest) -> str:
    """Stable sha256 over the photo entries (order-independent); training records cite it."""
    entries = manifest["photos"] if isinstance(manifest, dict) else manifest
    rows = sorted(json.dumps(e, sort_keys=True, separators=(",", ":")) for e in entries)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


# ---------------------------------------------------------------- patches

def extract_patches(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """All size x size crops of an HWC uint8 image whose corners lie on a stride grid."""
    h, w = image.shape[:2]
    tops, lefts = range(0, h - size + 1, stride), range(0, w - size + 1, stride)
    patches = [image[t:t + size, l:l + size] for t in tops for l in lefts]
    if not patches:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(patches).astype(np.uint8, copy=False)


def is_informative(patch: np.ndarray, min_std: float = 6.0, max_clipped: float = 0.5) -> bool:
    """Drop featureless patches (sky, blur, black borders): they teach a restorer nothing.

    Flat: std of luminance (0..255) below min_std. Saturated: more than max_clipped of
    the pixels are blown out (>= 250) or crushed (<= 5), where no detail survives.
    """
    luma = patch[..., :3].astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    if luma.std() < min_std:
        return False
    return float(((luma >= 250) | (luma <= 5)).mean()) <= max_clipped


def _load_manifest(cache: Path) -> dict:
    path = cache / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(
            f"No prepared training photos in {cache} (missing {path.name}). Run:\n"
            f"  python -m reason_restore.tools.data --cache {cache}")
    return json.loads(path.read_text())


def build_patch_cache(cache, split: str, size: int = 256, stride: int = 192) -> Path:
    """Write patches_<split>_<size>.npy (uint8 [N,size,size,3]) plus a .json sidecar."""
    cache = Path(cache)
    manifest = _load_manifest(cache)
    kept, total = [], 0
    for entry in manifest["photos"]:
        if entry["split"] != split:
            continue
        image = np.asarray(Image.open(cache / entry["file"]).convert("RGB"))
        patches = extract_patches(image, size, stride)
        total += len(patches)
        kept += [p for p in patches if is_informative(p)]
    arr = np.stack(kept) if kept else np.zeros((0, size, size, 3), np.uint8)
    out = cache / f"patches_{split}_{size}.npy"
    np.save(out, arr)
    # The sidecar ties the patches to the photos they came from (stale-cache check).
    out.with_suffix(".json").write_text(json.dumps({
        "split": split, "size": size, "stride": stride, "patches": len(arr),
        "candidates": total, "manifest_sha256": manifest["manifest_sha256"]}) + "\n")
    return out


def load_patches(split: str, size: int = 256, cache=None) -> np.ndarray:
    """uint8 [N,size,size,3] patches of a split; builds the patch cache if missing/stale."""
    cache = Path(cache) if cache else default_cache()
    manifest = _load_manifest(cache)
    path = cache / f"patches_{split}_{size}.npy"
    meta = path.with_suffix(".json")
    fresh = path.exists() and meta.exists() and \
        json.loads(meta.read_text()).get("manifest_sha256") == manifest["manifest_sha256"]
    if not fresh:
        build_patch_cache(cache, split, size)
    return np.load(path)


# ---------------------------------------------------------------- CLI

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=None, help="default: %s" % default_cache())
    ap.add_argument("--size", type=int, default=256, help="patch size")
    ap.add_argument("--stride", type=int, default=192, help="patch grid stride")
    args = ap.parse_args(argv)
    cache = (args.cache or default_cache()).expanduser().resolve()
    t0 = time.time()
    print(f"cache: {cache}")
    manifest = prepare_photos(cache)
    print(f"photos (held-out val source: {HELD_OUT}):")
    for split in ("train", "val"):
        entries = [e for e in manifest["photos"] if e["split"] == split]
        mp = sum(e["width"] * e["height"] for e in entries) / 1e6
        by_source = {}
        for e in entries:
            by_source[e["source"]] = by_source.get(e["source"], 0) + 1
        print(f"  {split}: {len(entries)} photos, {mp:.1f} MP  {by_source}")
        path = build_patch_cache(cache, split, args.size, args.stride)
        meta = json.loads(path.with_suffix(".json").read_text())
        print(f"    patches {args.size}px stride {args.stride}: {meta['patches']} kept "
              f"of {meta['candidates']} -> {path.name}")
    print(f"manifest_sha256: {manifest['manifest_sha256']}")
    print(f"done in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
