"""How much the built-in restorer's result depends on the tile size, per degradation type.
One command, markdown out:

    python benchmarks/tiling.py [--photos 1] [--size 768] [--tiles 512 256]
        [--out benchmarks/results/tiling.md]

Held-out photos (centre ``--size`` crops), each degraded once per spec with the true diagnosis
(so the analyzer's errors stay out of it), restored in one tile covering the whole image and in
each ``--tiles`` size (32-px overlap), with and without the data-consistency step. Scene-wide
degradations (haze: the veil thickens with depth across the frame) are where a tile's partial
view should cost most.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import heldout  # noqa: E402  (imports the pack)

from reason_restore.reasoner.synthesis import degrade, quantise  # noqa: E402

DEFAULT_OUT = HERE / "results" / "tiling.md"
SPECS = ("haze: beta=1.5, airlight=0.9",
         "low_light: exposure=0.4, gamma=1.6; blur: width=1.5",
         "noise: sigma=25",
         "rain: density=0.015, length=20")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=1)
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--tiles", type=int, nargs="+", default=[512, 256])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    from reason_restore.restorer.engine import load_default_restorer
    from reason_restore.restorer.metrics import psnr
    restorer = load_default_restorer()
    photos = heldout.photos(args.photos, args.size)
    sizes = [("whole", max(args.size, *args.tiles))] + [(f"tile {t}", t) for t in args.tiles]
    steps = (("network", False), ("+ data step", True))
    columns = ["input"] + [f"{name}, {label}" for name, _ in sizes for label, _ in steps]
    table: dict[str, dict[str, list[float]]] = {}
    for spec in SPECS:
        row = table.setdefault(spec, {c: [] for c in columns})
        for i, clean in enumerate(photos):
            img, truth = degrade(clean, spec, seed=i)
            x = torch.from_numpy(quantise(img)).permute(2, 0, 1)[None]
            c = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None]
            row["input"].append(float(psnr(x, c)[0]))
            for name, tile in sizes:
                for label, step in steps:
                    out = restorer.restore(x, [truth], tile=tile, overlap=32, consistency=step)
                    row[f"{name}, {label}"].append(float(psnr(out, c)[0]))
        print(spec, {k: round(statistics.fmean(v), 2) for k, v in row.items()}, file=sys.stderr,
              flush=True)

    lines = ["# Restoration vs tile size (built-in restorer, true diagnosis)", "",
             f"Command: `python benchmarks/tiling.py {' '.join(argv or sys.argv[1:])}`  ",
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"{platform.machine()}, torch {torch.__version__}, CPU, 1 thread  ",
             f"Photos: {len(photos)} held-out (`mate`), centre {args.size} crops; degraded "
             f"images rounded to 8 bits; overlap 32 px. PSNR in dB, mean over photos.", "",
             "| degradation | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for spec, row in table.items():
        lines.append(f"| {spec} | " + " | ".join(f"{statistics.fmean(row[c]):.2f}"
                                                 for c in columns) + " |")
    heldout.publish(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
