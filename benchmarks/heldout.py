"""The held-out benchmark set shared by every benchmark: photos, levels and mixtures.

Photos are the source that tools/data.py holds out of training (``mate``), centre-cropped.
Each taxonomy type is synthesised at three levels whose *severity* is fixed (mild 0.25,
moderate 0.5, severe 0.8, parameters found by the taxonomy's ``params_for_severity``, so the
levels mean the same across types), plus a fixed list of mixtures. Degradation seeds derive
from (case, photo) so every benchmark and every run sees identical inputs.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def import_pack():
    """Import ``reason_restore`` whether installed or run from a checkout."""
    try:
        import reason_restore  # noqa: F401
    except ImportError:  # not installed: load the checkout by folder
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            "reason_restore", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["reason_restore"] = module
        spec.loader.exec_module(module)


import_pack()

from reason_restore.reasoner.synthesis import Step, degrade  # noqa: E402
from reason_restore.reasoner.taxonomy import TYPE_NAMES, get_type  # noqa: E402
from reason_restore.tools.data import default_cache, split_of  # noqa: E402

LEVELS = {"mild": 0.25, "moderate": 0.5, "severe": 0.8}

# Mixtures a camera or a messenger app really produces, in image-formation order (the
# synthesiser sorts them anyway). Each at the moderate level of every component.
MIXTURES = (
    ("noise", "jpeg"),
    ("blur", "noise"),
    ("low_light", "noise"),
    ("haze", "jpeg"),
    ("low_resolution", "noise", "jpeg"),
    ("rain", "blur", "jpeg"),
)


@dataclass(frozen=True)
class Case:
    name: str           # "noise/moderate", "blur+noise"
    types: tuple[str, ...]
    level: str          # "mild" | "moderate" | "severe" | "mixture"
    steps: tuple[Step, ...]

    @property
    def single(self) -> bool:
        return len(self.types) == 1


def step_at(type_name: str, severity: float) -> Step:
    return Step(type_name, get_type(type_name).params_for_severity(severity))


def single_cases(types=TYPE_NAMES) -> list[Case]:
    return [Case(f"{t}/{level}", (t,), level, (step_at(t, s),))
            for t in types for level, s in LEVELS.items()]


def mixture_cases(mixtures=MIXTURES) -> list[Case]:
    out = []
    for types in mixtures:
        steps = sorted((step_at(t, LEVELS["moderate"]) for t in types),
                       key=lambda s: get_type(s.type).formation_order)
        out.append(Case("+".join(types), tuple(types), "mixture", tuple(steps)))
    return out


def all_cases() -> list[Case]:
    return single_cases() + mixture_cases()


def heldout_dir(cache: Path | None = None) -> Path:
    cache = Path(cache) if cache else default_cache()
    names = [p.name for p in (cache / "photos").iterdir() if p.is_dir()] \
        if (cache / "photos").is_dir() else []
    held = [n for n in names if split_of(n) == "val"]
    if not held:
        raise SystemExit(f"No held-out photos under {cache / 'photos'}: run "
                         f"`python -m reason_restore.tools.data` first")
    return cache / "photos" / held[0]


def photos(n: int = 8, size: int = 512, cache: Path | None = None,
           folder: Path | None = None) -> list[np.ndarray]:
    """``n`` held-out photos (sorted by name; or of another ``folder``), centre-cropped to
    ``size`` (or smaller when a photo is), as H x W x 3 float32 in [0, 1]."""
    from PIL import Image
    out = []
    for p in sorted((folder or heldout_dir(cache)).glob("*.png"))[:n]:
        with Image.open(p) as img:
            out.append(_centre_crop(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0,
                                    size))
    return out


def _centre_crop(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    s = min(size, h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return np.ascontiguousarray(a[y:y + s, x:x + s])


# Natural photos that ship inside scikit-image (a [bench] dependency), in neither our training
# nor our held-out set. The training sources are desktop wallpapers, with more large smooth
# areas than natural scenes have, and a classical step chosen on them alone can fail on natural
# photos (the later noise rounds in restorer/consistency.py's docstring did: the numbers are
# there). Check a choice here as well.
# They are small (300-512 px) and not pristine: rocket, at dusk, reads as a moderate low light
# when clean, and none is known to be free of earlier compression.
NATURAL = ("astronaut", "coffee", "chelsea", "rocket")


def natural_photos(size: int) -> list[np.ndarray]:
    """The ``NATURAL`` photos, centre ``size`` crops (or smaller), H x W x 3 float32 in [0, 1]."""
    import skimage.data
    return [_centre_crop(getattr(skimage.data, name)().astype(np.float32) / 255.0, size)
            for name in NATURAL]


def split_photos(split: str, n: int, size: int) -> tuple[list[np.ndarray], list[str]]:
    """``n`` photos of *each* source of ``split`` ("train" or "val"), centre ``size`` crops, and
    the sources' names: where weights and hyper-parameters are chosen without the held-out set.
    ``"natural"``: the ``NATURAL`` photos, each its own source (so ``n`` does not matter)."""
    if split == "natural":
        return natural_photos(size), list(NATURAL)
    root = default_cache() / "photos"
    sources = sorted(p.name for p in root.iterdir() if p.is_dir() and split_of(p.name) == split)
    out = []
    for s in sources:
        out += photos(n, size, folder=root / s)
    return out, sources


def selection_setup(ap, argv, default_out: Path):
    """For a benchmark that chooses settings on the training photos: adds ``--split``,
    ``--photos``, ``--size`` and ``--out`` to the parser ``ap`` and parses ``argv``; loads the
    shipped reasoner (evidence checks on) and restorer on one CPU thread and the photos.
    Returns (args, reasoner, restorer, photos, sources)."""
    ap.add_argument("--split", choices=("train", "natural", "val"), default="train")
    ap.add_argument("--photos", type=int, default=2, help="photos per source (default 2)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", type=Path, default=default_out)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from reason_restore.reasoner.engine import load_reasoner
    from reason_restore.restorer.engine import load_default_restorer
    photos, sources = split_photos(args.split, args.photos, args.size)
    return args, load_reasoner(semantics=False), load_default_restorer(), photos, sources


def raw_reasoner_and_restorer():
    """The shipped analyzer with its evidence checks off (benchmarks of those checks apply them
    themselves, one way and another) and the shipped restorer, on one CPU thread."""
    import torch
    torch.set_num_threads(1)
    from reason_restore.reasoner.engine import load_reasoner
    from reason_restore.restorer.engine import load_default_restorer
    reasoner = load_reasoner(semantics=False)
    reasoner.detail_check = False
    return reasoner, load_default_restorer()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """The pack's PSNR (restorer/metrics.py) of two H x W x 3 arrays in [0, 1]."""
    import torch
    from reason_restore.restorer.metrics import psnr as _psnr
    return float(_psnr(*(torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1)[None]
                         for v in (a, b)))[0])


def case_seed(case: Case, photo_index: int) -> int:
    return zlib.crc32(f"{case.name}#{photo_index}".encode()) & 0x7FFFFFFF


def degraded(case: Case, clean: np.ndarray, photo_index: int):
    """The case applied to one photo: (degraded image, ground-truth Diagnosis)."""
    return degrade(clean, list(case.steps), seed=case_seed(case, photo_index))


def publish(lines: list[str], out: Path) -> str:
    """A benchmark's markdown report: printed, and written to ``out`` (folders made)."""
    text = "\n".join(lines) + "\n"
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
