"""Test helpers for benchmarks/: load a benchmark script as a module, fake a held-out cache."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(filename: str, name: str):
    """``benchmarks/<filename>`` imported as module ``name`` (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def heldout_cache(cache: Path, images, monkeypatch) -> Path:
    """A data cache holding ``images`` (H x W x 3 uint8) as the held-out source's photos, made
    the cache of this test (env REASON_RESTORE_DATA)."""
    from PIL import Image
    folder = cache / "photos" / "mate"  # the held-out source (tools/data.py)
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(folder / f"photo{i}.png")
    monkeypatch.setenv("REASON_RESTORE_DATA", str(cache))
    return cache
