"""Training-data script: filtering, downscale rule, patches, manifest hash, source table.

Fast and offline: nothing here calls apt-get or touches the real data cache.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

try:
    from reason_restore.tools import data
except ImportError:  # package not installed: load the file directly (it has no relative imports)
    _path = Path(__file__).resolve().parents[1] / "tools" / "data.py"
    _spec = importlib.util.spec_from_file_location("reason_restore_tools_data", _path)
    data = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(data)


def _textured(size=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(30, 220, (size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------- filtering

def test_is_informative_keeps_texture():
    assert data.is_informative(_textured())


def test_is_informative_drops_flat():
    flat = np.full((64, 64, 3), 128, np.uint8)
    flat[::8, ::8] += 1  # a tiny variation is still featureless
    assert not data.is_informative(flat)


def test_is_informative_drops_saturated():
    patch = _textured()
    patch[:48] = 255  # three quarters blown out, though the rest is textured
    assert patch.astype(np.float32).std() > 6
    assert not data.is_informative(patch)
    crushed = _textured()
    crushed[:, :48] = 0
    assert not data.is_informative(crushed)


# ---------------------------------------------------------------- downscale rule

@pytest.mark.parametrize("w,h,factor", [
    (800, 600, 2),      # already small: still at least 2x (JPEG artefacts)
    (2560, 1600, 2),    # 1280 exactly
    (2561, 1600, 3),
    (5120, 2880, 4),
    (1600, 4000, 4),    # portrait: the long side counts
])
def test_downscale_factor(w, h, factor):
    assert data.downscale_factor(w, h) == factor


def test_prepare_image_size_and_mode():
    img = Image.new("RGBA", (3000, 1000), (10, 20, 30, 128))
    out = data.prepare_image(img)
    assert out.mode == "RGB"
    assert max(out.size) <= data.MAX_SIDE
    assert out.size == (1000, 334)  # factor 3; reduce keeps the partial last row


def test_prepare_image_area_averages_checkerboard():
    # 1-pixel checkerboard, 2x area downscale: every 2x2 block averages to mid grey.
    board = (np.indices((4, 4)).sum(0) % 2 * 255).astype(np.uint8)
    img = Image.fromarray(np.repeat(board[..., None], 3, axis=2))
    out = np.asarray(data.prepare_image(img))
    assert out.shape == (2, 2, 3)
    assert np.all(np.abs(out.astype(int) - 128) <= 1)


# ---------------------------------------------------------------- patches

def test_extract_patches_grid():
    img = np.zeros((600, 1000, 3), np.uint8)
    img[..., 0] = np.arange(1000) % 256  # column index tags where each patch came from
    img[..., 1] = (np.arange(600) % 256)[:, None]
    patches = data.extract_patches(img, 256, 192)
    # tops 0,192 (384 > 600-256); lefts 0,192,384,576 (768 > 1000-256)
    assert patches.shape == (2 * 4, 256, 256, 3)
    assert patches.dtype == np.uint8
    assert [int(p[0, 0, 0]) for p in patches[:4]] == [0, 192, 384 % 256, 576 % 256]
    assert int(patches[4, 0, 0, 1]) == 192


def test_extract_patches_too_small():
    assert data.extract_patches(np.zeros((100, 100, 3), np.uint8), 256, 192).shape == (0, 256, 256, 3)


# ---------------------------------------------------------------- manifest

def _entries():
    return [
        {"name": "a", "source": "lxqt", "split": "train", "sha256": "11", "width": 10, "height": 8},
        {"name": "b", "source": "mate", "split": "val", "sha256": "22", "width": 12, "height": 9},
    ]


def test_manifest_hash_stable():
    h = data.manifest_hash({"photos": _entries(), "held_out": "mate"})
    assert h == data.manifest_hash({"photos": _entries()[::-1]})  # order-independent
    assert h == data.manifest_hash(_entries())  # a bare entry list works too
    assert len(h) == 64


def test_manifest_hash_changes():
    entries = _entries()
    h = data.manifest_hash(entries)
    entries[1]["sha256"] = "23"
    assert data.manifest_hash(entries) != h


def test_load_patches_without_photos_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data.load_patches("train", cache=tmp_path)
    assert str(tmp_path) in str(e.value) and "tools.data" in str(e.value)


def test_build_and_load_patch_cache(tmp_path):
    # A fake prepared photo + manifest, as prepare_photos() would write them.
    (tmp_path / "photos" / "mate").mkdir(parents=True)
    Image.fromarray(_textured(400)).save(tmp_path / "photos" / "mate" / "x.png")
    photos = [{"name": "x", "source": "mate", "split": "val", "file": "photos/mate/x.png"}]
    manifest = {"held_out": "mate", "photos": photos, "manifest_sha256": data.manifest_hash(photos)}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    patches = data.load_patches("val", size=128, cache=tmp_path)
    assert patches.shape == (4, 128, 128, 3) and patches.dtype == np.uint8  # default stride 192: tops/lefts 0,192
    assert (tmp_path / "patches_val_128.npy").exists()
    assert data.load_patches("train", size=128, cache=tmp_path).shape[0] == 0


# ---------------------------------------------------------------- source table

def _source(name):
    return next(s for s in data.SOURCES if s.name == name)


def test_held_out_split():
    assert data.HELD_OUT == "mate"
    assert {s.name for s in data.SOURCES} == {"lomiri", "mate", "lxqt", "plasma"}
    assert data.split_of("mate") == "val"
    assert {data.split_of(s.name) for s in data.SOURCES if s.name != "mate"} == {"train"}


def test_lomiri_rules():
    lomiri = _source("lomiri")
    assert lomiri.wants("lomiri-wallpapers-16.04", "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg")
    assert not lomiri.wants("lomiri-wallpapers-16.04", "usr/share/backgrounds/umang_by_Abhishek_Mudgal.jpg")
    # From 20.04 only Kleiber, though its other backgrounds match the 16.04 glob.
    assert lomiri.wants("lomiri-wallpapers-20.04", "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg")
    assert not lomiri.wants("lomiri-wallpapers-20.04", "usr/share/backgrounds/Other.jpg")


def test_lxqt_and_plasma_rules():
    lxqt, plasma = _source("lxqt"), _source("plasma")
    assert len(lxqt.files) == 11
    assert lxqt.wants("lxqt-themes", "usr/share/lxqt/wallpapers/fog.jpg")
    assert not lxqt.wants("lxqt-themes", "usr/share/lxqt/wallpapers/origami-dark.png")
    path = "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg"
    assert plasma.wants("plasma-workspace-wallpapers", path)
    assert not plasma.wants("plasma-workspace-wallpapers", path.replace("2560x1600", "1920x1080"))
    assert not plasma.wants("plasma-workspace-wallpapers", path.replace("Kite", "Autumn"))
    assert plasma.wants("breeze", "usr/share/wallpapers/Next/contents/images/5120x2880.png")
    assert set(plasma.packages) == {"plasma-workspace-wallpapers", "breeze"}
    assert sum(len(s.files) for s in data.SOURCES if s.name != "mate") == 2 + 11 + 12


def test_photo_names():
    assert data.photo_name("/usr/share/wallpapers/Kite/contents/images/2560x1600.jpg") == "Kite"
    assert data.photo_name("/usr/share/backgrounds/mate/nature/Dune.jpg") == "Dune"
