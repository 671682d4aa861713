"""Pick between candidate restorer weights without touching the held-out photos. One command,
markdown out:

    python benchmarks/selection.py --restorers shipped=restorer/weights/restorer.safetensors \
        p05=/tmp/p05.safetensors [--photos 2] [--jobs 2] [--out benchmarks/results/selection.md]

Every case of the held-out benchmark (benchmarks/heldout.py: each type at three levels, the
mixtures) is applied to ``--photos`` photos of *each training source* (centre 512 crops), and
each candidate restores it through the whole product path, ``Restorer.restore`` with the
data-consistency step, once from the analyzer's *predicted* diagnosis (what a user gets;
``--analyzer`` swaps in a candidate analyzer) and once from the true one (what an override
gives). The held-out table
(benchmarks/restoration.py) then reports the pick; picking there would tune on the test set.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import heldout  # noqa: E402  (imports the pack)

from reason_restore.reasoner.synthesis import quantise  # noqa: E402

DEFAULT_OUT = HERE / "results" / "selection.md"


def _named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{name}: no restorer weights at {path}")
    return name, Path(path)


def inputs(photos: list[np.ndarray], cases) -> list[tuple[str, np.ndarray, np.ndarray, object]]:
    """(case name, clean, degraded 8-bit, true diagnosis) for every case and photo."""
    out = []
    for case in cases:
        for i, clean in enumerate(photos):
            img, truth = heldout.degraded(case, clean, i)
            out.append((case.name, clean, quantise(img), truth))
    return out


def score(path: Path, items, predicted) -> dict[str, dict[str, list[float]]]:
    """PSNR per case and diagnosis kind for the restorer at ``path`` (one process each)."""
    import torch
    torch.set_num_threads(1)
    from reason_restore.restorer.engine import load_default_restorer
    restorer = load_default_restorer(path)
    result: dict[str, dict[str, list[float]]] = {"predicted": {}, "true": {}}
    for (name, clean, img, truth), pred in zip(items, predicted):
        x = torch.from_numpy(img).permute(2, 0, 1)[None]
        for kind, diagnosis in (("predicted", pred), ("true", truth)):
            z = restorer.restore(x, [diagnosis])[0].permute(1, 2, 0).numpy()
            result[kind].setdefault(name, []).append(heldout.psnr(z, clean))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--restorers", nargs="+", type=_named_path, required=True,
                    metavar="NAME=PATH")
    ap.add_argument("--analyzer", type=Path, default=None,
                    help="analyzer weights for the predicted diagnosis (default: the shipped "
                         "ones); how analyzer candidates are picked")
    ap.add_argument("--photos", type=int, default=2, help="photos per training source")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cases", nargs="+", metavar="SUBSTR", help="only cases naming these")
    ap.add_argument("--jobs", type=int, default=1, help="candidates scored in parallel")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    from reason_restore.reasoner.engine import load_reasoner
    reasoner = load_reasoner(args.analyzer, semantics=False)
    photos, sources = heldout.split_photos("train", args.photos, args.size)
    cases = [c for c in heldout.all_cases()
             if not args.cases or any(s in c.name for s in args.cases)]
    items = inputs(photos, cases)
    predicted = [reasoner.diagnose(torch.from_numpy(img).permute(2, 0, 1)[None])[0]
                 for _, _, img, _ in items]
    names = [n for n, _ in args.restorers]
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        scores = dict(zip(names, pool.map(score, [p for _, p in args.restorers],
                                          [items] * len(names), [predicted] * len(names))))

    lines = ["# Choosing restorer weights on training-source photos", "",
             f"Command: `python benchmarks/selection.py {' '.join(argv or sys.argv[1:])}`  ",
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"{platform.machine()}, torch {torch.__version__}, CPU, 1 thread per job  ",
             f"Photos: {len(photos)} ({args.photos} per training source: {', '.join(sources)}), "
             f"centre {args.size} crops, degraded images rounded to 8 bits; PSNR (dB) of "
             f"`Restorer.restore` (data-consistency step on), mean over photos.", "",
             "| case | " + " | ".join(f"{n} (predicted)" for n in names) + " | "
             + " | ".join(f"{n} (true)" for n in names) + " |",
             "|---" * (2 * len(names) + 1) + "|"]
    for case in cases:
        cells = [statistics.fmean(scores[n][kind][case.name])
                 for kind in ("predicted", "true") for n in names]
        lines.append(f"| {case.name} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    means = [statistics.fmean(statistics.fmean(v) for v in scores[n][kind].values())
             for kind in ("predicted", "true") for n in names]
    lines.append("| *mean* | " + " | ".join(f"**{v:.2f}**" for v in means) + " |")
    heldout.publish(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
