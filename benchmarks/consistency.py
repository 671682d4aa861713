"""How the data-consistency step (restorer/consistency.py) changes the restorer's PSNR, and the
sweep that chose its prior variance tau^2. One command, markdown out:

    python benchmarks/consistency.py [--split train] [--photos 2] [--variances 3e-5 1e-4 ...]
        [--out benchmarks/results/consistency.md]

``--split train`` (the default) takes ``--photos`` photos from *each training source* (centre
512 crops): tau^2 is chosen there, so the held-out photos of benchmarks/restoration.py never
see the choice. ``--split natural`` runs it on scikit-image's natural photos (in neither set;
see ``heldout.NATURAL``), ``--split val`` on the held-out source, for the record.
Cases: the benchmark's levels and mixtures of the types the step models (haze's veil, low
light's tone curve, blur, low resolution, noise, JPEG); rain skips the step by design. Per case:
the input, the network alone, and the network followed by the data step at each tau^2, with the
analyzer's predicted diagnosis
and with the true one. Everything runs through ``Restorer.restore`` (``consistency=...``).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import heldout  # noqa: E402  (imports the pack)

from reason_restore.reasoner.synthesis import quantise  # noqa: E402
from reason_restore.restorer import consistency  # noqa: E402

DEFAULT_OUT = HERE / "results" / "consistency.md"
MODELLED_TYPES = set(consistency.POINTWISE_TYPES + consistency.LINEAR_TYPES
                     + consistency.ADDITIVE_TYPES)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variances", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3])
    args, reasoner, restorer, photos, sources = heldout.selection_setup(ap, argv, DEFAULT_OUT)
    import torch
    cases = [c for c in heldout.all_cases() if set(c.types) <= MODELLED_TYPES]
    columns = ["input", "network"] + [f"tau2={v:g}" for v in args.variances]
    table: dict[str, dict[str, list[float]]] = {}
    for case in cases:
        for i, clean in enumerate(photos):
            img, truth = heldout.degraded(case, clean, i)
            img = quantise(img)
            x = torch.from_numpy(img).permute(2, 0, 1)[None]
            for diag_name, diag in (("predicted", reasoner.diagnose(x)[0]), ("true", truth)):
                row = table.setdefault(f"{case.name} ({diag_name})", {})
                row.setdefault("input", []).append(heldout.psnr(img, clean))
                net = restorer.restore(x, [diag], consistency=False)
                row.setdefault("network", []).append(
                    heldout.psnr(net[0].permute(1, 2, 0).numpy(), clean))
                for v in args.variances:
                    z = consistency.refine(net, x, diag, prior_variance=v)
                    row.setdefault(f"tau2={v:g}", []).append(
                        heldout.psnr(z[0].permute(1, 2, 0).numpy(), clean))
        print(case.name, {k: round(statistics.fmean(v), 2)
                          for k, v in table[f"{case.name} (predicted)"].items()},
              file=sys.stderr, flush=True)

    lines = ["# Data-consistency step: PSNR (dB) by prior variance", "",
             f"Command: `python benchmarks/consistency.py {' '.join(argv or sys.argv[1:])}`  ",
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"{platform.machine()}, torch {torch.__version__}, CPU, 1 thread  ",
             f"Photos: {len(photos)} ({args.photos} per source of split `{args.split}`: "
             f"{', '.join(sources)}), centre {args.size} crops; degraded images rounded to 8 "
             f"bits. Shipped: tau2={consistency.PRIOR_VARIANCE:g}.", "",
             "| case (diagnosis) | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    means: dict[str, dict[str, list[float]]] = {"predicted": {}, "true": {}}
    for name, row in table.items():
        kind = "predicted" if name.endswith("(predicted)") else "true"
        vals = {c: statistics.fmean(row[c]) for c in columns}
        for c, v in vals.items():
            means[kind].setdefault(c, []).append(v)
        best = max(columns[1:], key=vals.get)
        lines.append(f"| {name} | " + " | ".join(
            (f"**{vals[c]:.2f}**" if c == best else f"{vals[c]:.2f}") for c in columns) + " |")
    for kind, m in means.items():
        lines.append(f"| *mean ({kind})* | " + " | ".join(
            f"{statistics.fmean(m[c]):.2f}" for c in columns) + " |")
    heldout.publish(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
