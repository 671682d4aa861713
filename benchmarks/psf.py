"""Blur parameters measured from the spectrum (reasoner/psf.py) against the analyzer's, on
training-source photos. One command, markdown out:

    python benchmarks/psf.py [--photos 2] [--blurs 2] [--seed 2] [--out benchmarks/results/psf.md]

Each photo (``--photos`` per training source, centre 512 crops) gets ``--blurs`` random blurs
of the synthesiser's kind (defocus, motion, or both, at any angle), alone and with Gaussian
noise (sigma 5-25). The analyzer diagnoses each; the diagnosis then goes through the evidence
checks without and with the spectrum's PSF (``check_evidence``). Where the analyzer found the
blur, the table compares the two readings of its parameters with the truth, and the restorer's
PSNR (``Restorer.restore``, data step on) from each and from the true diagnosis. The random
angles matter: the held-out table's blurs are all horizontal. Training photos only: the
measurement was designed on them, the held-out table (benchmarks/restoration.py) reports it.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import heldout  # noqa: E402  (imports the pack)

from reason_restore.reasoner.synthesis import Step, degrade, quantise, random_spec  # noqa: E402
from reason_restore.reasoner.taxonomy import get_type  # noqa: E402

DEFAULT_OUT = HERE / "results" / "psf.md"
KINDS = ("blur", "blur+noise")
MIN_MOTION = 2.0  # px: a shorter segment has no direction worth scoring


def errors(found, truth) -> dict[str, float]:
    """Absolute parameter errors of a blur finding against the true parameters, and whether
    each is within one step of the taxonomy's grid (the analyzer benchmark's measure)."""
    spec = get_type("blur")
    out = {}
    for key in ("width", "motion_length", "motion_angle"):
        if key == "motion_angle" and truth["motion_length"] < MIN_MOTION:
            continue
        diff = abs(found.params[key] - truth[key])
        if key == "motion_angle":
            diff = min(diff % 180.0, 180.0 - diff % 180.0)
        grid = spec.param(key).grid
        out[key] = diff
        out[key + "_step"] = float(diff <= (grid[1] - grid[0]) + 1e-6)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=2, help="photos per training source")
    ap.add_argument("--blurs", type=int, default=2, help="random blurs per photo and kind")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import torch
    from reason_restore.reasoner.engine import check_evidence
    from reason_restore.reasoner.evidence import bound_by_detail
    from reason_restore.reasoner.resampling import bound_by_resampling
    reasoner, restorer = heldout.raw_reasoner_and_restorer()  # both evidence paths below
    photos, sources = heldout.split_photos("train", args.photos, args.size)
    rng = np.random.default_rng(args.seed)

    rows = {k: [] for k in KINDS}
    seconds = []
    for i, clean in enumerate(photos):
        for kind in KINDS:
            for j in range(args.blurs):
                spec = random_spec(rng, 1, types=["blur"])
                if kind == "blur+noise":
                    spec.append(Step("noise", {"sigma": float(rng.uniform(5, 25)), "shot": 0.0}))
                img, truth = degrade(clean, spec, seed=1000 * i + 10 * j + len(kind))
                img = quantise(img)
                x = torch.from_numpy(img).permute(2, 0, 1)
                raw = reasoner.diagnose(x[None])[0]
                before = bound_by_detail(x, bound_by_resampling(x, raw))
                start = time.process_time()
                after = check_evidence(x, raw)
                seconds.append(time.process_time() - start)
                row = {"found": before.finding("blur") is not None}
                for name, d in (("before", before), ("after", after), ("true", truth)):
                    if name == "after" and after.finding("blur") == before.finding("blur"):
                        row["after"] = row["before"]
                        continue
                    z = restorer.restore(x[None], [d])[0].permute(1, 2, 0).numpy()
                    row[name] = heldout.psnr(z, clean)
                    if name != "true" and row["found"] and d.finding("blur") is not None:
                        row.update({f"{name}_{k}": v for k, v in
                                    errors(d.finding("blur"), spec[0].params).items()})
                rows[kind].append(row)
        print(f"photo {i + 1}/{len(photos)}", file=sys.stderr, flush=True)

    def mean(rs, key, scale=1.0):
        values = [r[key] * scale for r in rs if key in r]
        return f"{statistics.fmean(values):.2f}" if values else "-"

    lines = ["# Blur parameters from the spectrum vs the analyzer's", "",
             f"Command: `python benchmarks/psf.py {' '.join(argv or sys.argv[1:])}`  ",
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"{platform.machine()}, torch {torch.__version__}, CPU, 1 thread  ",
             f"Photos: {len(photos)} ({args.photos} per training source: {', '.join(sources)}), "
             f"centre {args.size} crops, {args.blurs} random blurs each per kind, 8-bit.", "",
             "Parameter errors over the images where the analyzer found the blur (motion angle "
             f"only where the true motion is at least {MIN_MOTION:g} px); PSNR (dB) of "
             "`Restorer.restore` over all images. *before*: the evidence checks without the "
             "spectrum's PSF; *after*: with it.", "",
             "| kind | images | blur found | width error before / after | within 0.5 px | "
             "motion length error | within 2 px | motion angle error (deg) | within 30 deg | "
             "PSNR before | PSNR after | PSNR true diagnosis |",
             "|---|---:|---:|---|---|---|---|---|---|---:|---:|---:|"]
    for kind, rs in rows.items():
        cells = [kind, str(len(rs)), f"{sum(r['found'] for r in rs)}"]
        for key in ("width", "motion_length", "motion_angle"):
            cells.append(f"{mean(rs, 'before_' + key)} / {mean(rs, 'after_' + key)}")
            cells.append(f"{mean(rs, f'before_{key}_step', 100)} / "
                         f"{mean(rs, f'after_{key}_step', 100)} %")
        cells += [mean(rs, "before"), mean(rs, "after"), mean(rs, "true")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Evidence checks with the PSF fit: {statistics.median(seconds):.3f} s CPU per "
              f"image (median), {max(seconds):.3f} s at most."]
    heldout.publish(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
