"""The photo sets the benchmarks draw on."""

import numpy as np
import pytest

from _bench import load_benchmark

pytest.importorskip("skimage")
heldout = load_benchmark("heldout.py", "heldout_for_sets")


def test_natural_photos_are_centre_crops_in_the_unit_range():
    import skimage.data
    photos, names = heldout.split_photos("natural", 1, 256)
    assert names == list(heldout.NATURAL) and len(photos) == len(names)
    for photo, name in zip(photos, names):
        assert photo.shape == (256, 256, 3) and photo.dtype == np.float32
        full = getattr(skimage.data, name)()
        h, w = full.shape[:2]
        y, x = (h - 256) // 2, (w - 256) // 2
        np.testing.assert_array_equal(photo, full[y:y + 256, x:x + 256] / np.float32(255))


def test_natural_photos_keep_their_size_when_smaller():
    import skimage.data
    sides = [min(getattr(skimage.data, name)().shape[:2]) for name in heldout.NATURAL]
    assert [p.shape for p in heldout.natural_photos(4096)] == [(s, s, 3) for s in sides]
