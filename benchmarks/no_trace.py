"""The "no trace, no upscaling" rule (reasoner/resampling.py) on training-source photos: which
diagnoses it changes and what the restorer makes of them. One command, markdown out:

    python benchmarks/no_trace.py [--photos 6] [--random 10] [--seed 11]
        [--out benchmarks/results/no_trace.md]

Each photo (``--photos`` per training source, centre 512 crops) gets the analyzer benchmark's
cases (every type at three levels, the fixed mixtures), an enlargement by exactly 2 (which
leaves no trace; the rule must leave it alone) and ``--random`` random 1-3-type mixtures.
The analyzer diagnoses each; the diagnosis then goes through the evidence checks with the rule
off (``no_trace_limit=0``) and on (``check_evidence``, as the product runs them).
Where the two differ, the restorer (``Restorer.restore``, data step on) restores from each.
Training photos only: the rule's limits were set on them; the held-out benchmarks
(analyzer.py, restoration.py) report it.
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

from reason_restore.reasoner.synthesis import Step, degrade, quantise, random_spec  # noqa: E402

DEFAULT_OUT = HERE / "results" / "no_trace.md"


def reading(diagnosis) -> list[tuple[str, dict]]:
    """What a restorer sees of a diagnosis: each finding's type and parameters."""
    return [(f.type, dict(f.params)) for f in diagnosis.findings]


def summary(findings) -> str:
    return ", ".join(f"{f.type} {f.severity:.2f}" for f in findings) or "none"


def tally(rows: list[dict]) -> dict[str, float]:
    """Mean PSNR without / with the rule, how many images gained or lost, the worst loss."""
    if not rows:
        return {"images": 0}
    gains = [r["after"] - r["before"] for r in rows]
    return {"images": len(rows), "before": statistics.fmean(r["before"] for r in rows),
            "after": statistics.fmean(r["after"] for r in rows),
            "up": sum(g > 0 for g in gains), "down": sum(g < 0 for g in gains),
            "worst": min(gains)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=6, help="photos per training source")
    ap.add_argument("--random", type=int, default=10, help="random mixtures per photo")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import torch
    from reason_restore.reasoner.engine import check_evidence
    from reason_restore.reasoner.evidence import bound_by_detail
    from reason_restore.reasoner.psf import measure_blur
    from reason_restore.reasoner.resampling import bound_by_resampling
    reasoner, restorer = heldout.raw_reasoner_and_restorer()  # both evidence paths below
    photos, sources = heldout.split_photos("train", args.photos, args.size)
    rng = np.random.default_rng(args.seed)
    cases = heldout.single_cases() + heldout.mixture_cases()

    rows, images = [], 0
    for i, clean in enumerate(photos):
        specs = [(c.name, list(c.steps)) for c in cases]
        specs.append(("low_resolution x2", [Step("low_resolution", {"scale": 2.0})]))
        specs += [("random", random_spec(rng, int(rng.integers(1, 4))))
                  for _ in range(args.random)]
        for name, spec in specs:
            img, truth = degrade(clean, spec, seed=i)
            x = torch.from_numpy(quantise(img)).permute(2, 0, 1)
            raw = reasoner.diagnose(x[None])[0]
            images += 1
            before = bound_by_detail(x, measure_blur(
                x, bound_by_resampling(x, raw, no_trace_limit=0.0)))
            after = check_evidence(x, raw)
            if reading(before) == reading(after):
                continue
            row = {"case": name, "truth": summary(truth.findings),
                   "read_before": summary(before.findings), "read_after": summary(after.findings),
                   "upscaled": truth.finding("low_resolution") is not None}
            for key, d in (("before", before), ("after", after)):
                z = restorer.restore(x[None], [d])[0].permute(1, 2, 0).numpy()
                row[key] = heldout.psnr(z, clean)
            rows.append(row)
        print(f"photo {i + 1}/{len(photos)}: {len(rows)} changed so far", file=sys.stderr,
              flush=True)

    lines = ["# No trace, no upscaling: the rule on training-source photos", "",
             f"Command: `python benchmarks/no_trace.py {' '.join(argv or sys.argv[1:])}`  ",
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"{platform.machine()}, torch {torch.__version__}, CPU, 1 thread  ",
             f"Photos: {len(photos)} ({args.photos} per training source: {', '.join(sources)}), "
             f"centre {args.size} crops; {images} images (the analyzer benchmark's cases, an "
             f"enlargement by 2 and {args.random} random mixtures per photo), 8-bit.", "",
             "PSNR (dB) of `Restorer.restore` from the diagnosis without (*before*) and with "
             "(*after*) the rule, over the images whose diagnosis it changed.", "",
             "| images | changed | with a true low resolution | PSNR before | PSNR after | "
             "up / down | worst change |", "|---:|---:|---:|---:|---:|---|---:|"]
    t = tally(rows)
    if t["images"]:
        lines.append(f"| {images} | {t['images']} | {sum(r['upscaled'] for r in rows)} | "
                     f"{t['before']:.2f} | {t['after']:.2f} | {t['up']} / {t['down']} | "
                     f"{t['worst']:+.2f} |")
    else:
        lines.append(f"| {images} | 0 | 0 | - | - | - | - |")
    lines += ["", "| case | truth | read before | read after | PSNR before | PSNR after |",
              "|---|---|---|---|---:|---:|"]
    lines += [f"| {r['case']} | {r['truth']} | {r['read_before']} | {r['read_after']} | "
              f"{r['before']:.2f} | {r['after']:.2f} |" for r in rows]
    heldout.publish(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
