"""Where the haze rows lose: the diagnosis's airlight, and the veil's transmission fit.
One command, markdown out:

    python benchmarks/veil.py [--split train|natural|val] [--photos 2] [--size 512]
        [--out benchmarks/results/veil.md]

Cases: the benchmark's three haze levels and haze + JPEG (benchmarks/heldout.py). Each image
runs through the shipped network once per diagnosis, then the data step of
restorer/consistency.py, whose ``Veil`` fits the transmission ``t`` per window from the network
output, raises it to the shipped restorer's depth stretch (restorer/engine.py) and re-reads the
airlight where the veil is thick. Reported:

* per case: the predicted diagnosis, the same with the airlight taken as diagnosed (no
  re-read) or replaced by the true one, the true diagnosis, and the dark channel prior given the
  true airlight (benchmarks/classical.py), for scale;
* the raw fit's optical depth ``-ln t`` against the truth's (the synthesiser's transmission,
  recovered exactly from the veiled image and the clean photo);
* the stretch ``t -> t ** k`` at a few ``k``, with and without the re-read, also on clean photos
  given a false haze finding (what a deeper veil costs when the analyzer is wrong).

``--split train`` is where the settings were chosen; ``natural`` is the check (see
``heldout.NATURAL``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import platform
import statistics
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import heldout  # noqa: E402  (imports the pack)

from reason_restore.reasoner.diagnosis import Diagnosis, Finding  # noqa: E402
from reason_restore.reasoner.synthesis import degrade, quantise  # noqa: E402
from reason_restore.restorer import consistency  # noqa: E402
from reason_restore.restorer.engine import SHIPPED_VEIL_DEPTH_STRETCH  # noqa: E402

DEFAULT_OUT = HERE / "results" / "veil.md"
STRETCHES = (1.1, 1.2, 1.3, 1.4)
FALSE_HAZE = ({"beta": 0.5, "airlight": 0.9}, {"beta": 1.5, "airlight": 0.8})


def true_transmission(clean: np.ndarray, veiled: np.ndarray, airlight: float) -> np.ndarray:
    """``t`` per pixel from ``veiled = clean t + airlight (1 - t)``: least squares over the
    colours of ``airlight - veiled = t (airlight - clean)``. Where the clean pixel sits at the
    airlight in every colour ``t`` is undetermined and comes out 0."""
    gap = airlight - clean
    return ((airlight - veiled) * gap).sum(2) / np.maximum((gap * gap).sum(2), 1e-8)


def with_params(diagnosis: Diagnosis, truth: Diagnosis, keys) -> Diagnosis:
    """``diagnosis`` with its haze finding's ``keys`` taken from ``truth`` (no haze: as is)."""
    found = diagnosis.finding("haze")
    if found is None or not keys:
        return diagnosis
    true_params = truth.finding("haze").params
    params = dict(found.params, **{k: true_params[k] for k in keys})
    new = dataclasses.replace(found, params=params)
    return dataclasses.replace(diagnosis, findings=[new if f is found else f
                                                    for f in diagnosis.findings])


@contextmanager
def reread(on: bool):
    """The veil's thick-window airlight re-read on (as shipped) or off."""
    saved = consistency.THICK_FRACTION
    consistency.THICK_FRACTION = saved if on else math.inf
    try:
        yield
    finally:
        consistency.THICK_FRACTION = saved


def refined(net, x, diagnosis, stretch: float, reread_on: bool):
    """The data step's output with the veil's depth stretch and airlight re-read as given."""
    with reread(reread_on):
        return consistency.refine(net, x, diagnosis, depth_stretch=stretch)


def _tensor(img):
    import torch
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


def _psnr(z, clean) -> float:
    return heldout.psnr(z[0].permute(1, 2, 0).numpy(), clean)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args, reasoner, restorer, photos, sources = heldout.selection_setup(ap, argv, DEFAULT_OUT)
    import torch
    from classical import dark_channel_dehaze
    cases = heldout.single_cases(["haze"]) + heldout.mixture_cases([("haze", "jpeg")])
    shipped = (SHIPPED_VEIL_DEPTH_STRETCH, True)
    before = (1.0, False)  # the veil as it was before the stretch and the re-read

    columns = ["input", "predicted", "predicted, its airlight", "predicted, true airlight",
               "true", "DCP (true airlight)"]
    table: dict[str, dict[str, list[float]]] = {}
    depth_ratio: dict[str, list[float]] = {}
    runs = []  # (kind, x, clean, diagnosis, network output) per image and diagnosis
    for case in cases:
        for i, clean in enumerate(photos):
            img, truth = heldout.degraded(case, clean, i)
            img = quantise(img)
            haze = next(s for s in case.steps if s.type == "haze")
            veiled, _ = degrade(clean, [haze], seed=heldout.case_seed(case, i))
            x = _tensor(img)
            predicted = reasoner.diagnose(x)[0]
            nets = {kind: restorer.restore(x, [diag], consistency=False)
                    for kind, diag in (("predicted", predicted), ("true", truth))}
            runs += [("predicted", x, clean, predicted, nets["predicted"]),
                     ("true", x, clean, truth, nets["true"])]
            row = table.setdefault(case.name, {})
            row.setdefault("input", []).append(heldout.psnr(img, clean))
            for name, diag, net, reread_on in (
                    ("predicted", predicted, nets["predicted"], True),
                    ("predicted, its airlight", predicted, nets["predicted"], False),
                    ("predicted, true airlight", with_params(predicted, truth, ("airlight",)),
                     nets["predicted"], False),
                    ("true", truth, nets["true"], True)):
                row.setdefault(name, []).append(
                    _psnr(refined(net, x, diag, SHIPPED_VEIL_DEPTH_STRETCH, reread_on), clean))
            airlight = haze.params["airlight"]
            row.setdefault(columns[-1], []).append(
                heldout.psnr(dark_channel_dehaze(img, airlight=airlight), clean))
            # The raw fit's optical depth against the truth (true diagnosis), at the 99th
            # percentile of the pixels whose clean value is off the airlight.
            with reread(False):
                fit = consistency.Veil.fit(truth.finding("haze"), x, nets["true"].clamp(0, 1)).t
            t = true_transmission(clean, veiled, airlight)
            off = np.abs(clean.mean(2) - airlight) > 0.15
            d_fit = np.quantile(-np.log(fit[0, 0].numpy()[off]), 0.99)
            d_true = np.quantile(-np.log(np.clip(t[off], 1e-3, 1.0)), 0.99)
            depth_ratio.setdefault(case.name, []).append(float(d_fit / d_true))
        print(case.name, {k: round(statistics.fmean(v), 2) for k, v in row.items()},
              file=sys.stderr, flush=True)

    for i, clean in enumerate(photos):
        x = _tensor(quantise(clean))
        for params in FALSE_HAZE:
            diag = Diagnosis(findings=[Finding.from_params("haze", params, confidence=0.5)])
            runs.append(("false haze", x, clean, diag,
                         restorer.restore(x, [diag], consistency=False)))

    settings = [before] + [(k, reread) for reread in (False, True) for k in STRETCHES]
    sweep: dict[str, dict[tuple, list[float]]] = {}
    for setting in settings:
        for kind, x, clean, diag, net in runs:
            sweep.setdefault(kind, {}).setdefault(setting, []).append(
                _psnr(refined(net, x, diag, *setting), clean))

    lines = ["# The veil: where the haze rows lose", "",
             f"Command: `python benchmarks/veil.py {' '.join(argv or sys.argv[1:])}`  ",
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"{platform.machine()}, torch {torch.__version__}, CPU, 1 thread  ",
             f"Photos: {len(photos)} ({args.photos} per source of split `{args.split}`: "
             f"{', '.join(sources)}), centre {args.size} crops; degraded images rounded to 8 "
             "bits. Mean PSNR (dB). Every column but the first and the last is the restorer as "
             f"shipped (network, then the data step; depth stretch {SHIPPED_VEIL_DEPTH_STRETCH:g})"
             " under that diagnosis; *its airlight* / *true airlight*: the airlight taken as "
             "given, not re-read from thick windows.", "",
             "| case | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{statistics.fmean(row[c]):.2f}" for c in columns) + " |")
    lines.append("| *mean* | " + " | ".join(
        f"{statistics.fmean(v for row in table.values() for v in row[c]):.2f}"
        for c in columns) + " |")
    lines += ["", "The raw fit's optical depth over the true one at their 99th percentiles "
              "(true diagnosis, no stretch; 1 = the fit reaches the farthest veil):", "",
              "| case | median | min | max |", "|---|---:|---:|---:|"]
    for name, r in depth_ratio.items():
        lines.append(f"| {name} | {statistics.median(r):.2f} | {min(r):.2f} | {max(r):.2f} |")
    lines += ["", "The veil's settings: depth stretch k (`t -> t ** k`) and the thick-window "
              "airlight re-read. *false haze*: the clean photos given a haze finding they do "
              f"not have ({len(FALSE_HAZE)} per photo). Lower: images more than 0.01 dB under "
              "the first row of their diagnosis (k = 1, no re-read: the veil before both).", "",
              "| diagnosis | k | re-read | mean PSNR | lower | worst change | |",
              "|---|---:|---|---:|---:|---:|---|"]
    for kind, by in sweep.items():
        base = by[before]
        for setting, vals in by.items():
            diffs = [v - b for v, b in zip(vals, base)]
            lines.append(f"| {kind} | {setting[0]:g} | {'yes' if setting[1] else 'no'} | "
                         f"{statistics.fmean(vals):.2f} | {sum(d < -0.01 for d in diffs)}/"
                         f"{len(diffs)} | {min(diffs):+.2f} | "
                         f"{'shipped' if setting == shipped else ''} |")
    heldout.publish(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
