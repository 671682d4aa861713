"""Would per-type presence thresholds help the analyzer? A report, nothing is written.

A single 0.5 cut on every sigmoid looks wasteful where a type's probabilities run low (the
shipped analyzer finds low light in 29 % and haze in 63 % of held-out single-type images, at
100 % precision). This script degrades photos of the *training* sources (never the held-out
one), reads the analyzer's presence probabilities, picks per type the threshold of best F1,
and checks whether that generalises: leave one training source out, fit on the others,
score macro-F1 on it with the fitted thresholds and with 0.5. The shipped analyzer keeps 0.5
because that check came out at -0.007 on average for the analyzer before and +0.002 (+0.015,
+0.012, -0.021 per held-out source) for the current one (benchmarks/results/thresholds.json).

Calibration images, per photo and variant (seeded): clean (10 %), one type at a severity
drawn uniformly in [0.1, 0.9] (45 %: the taxonomy's ``params_for_severity``), or a
training-distribution mixture of 1-3 types (45 %: ``synthesis.random_spec``); centre crop,
8-bit rounded.

    python benchmarks/thresholds.py [--analyzer PATH] [--variants 12] [--size 384]
        [--out benchmarks/results/thresholds.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout  # noqa: E402,F401  (imports the pack, installed or not)

from analyzer import presence_prf  # noqa: E402  (benchmarks/analyzer.py)
from reason_restore.reasoner.analyzer import load_analyzer  # noqa: E402
from reason_restore.reasoner.diagnosis import PRESENCE_THRESHOLD  # noqa: E402
from reason_restore.reasoner.engine import DEFAULT_ANALYZER, Reasoner  # noqa: E402
from reason_restore.reasoner.synthesis import Step, degrade, quantise, random_spec  # noqa: E402
from reason_restore.reasoner.taxonomy import TYPE_NAMES, get_type  # noqa: E402
from reason_restore.tools.data import default_cache, split_of  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "thresholds.json"

CANDIDATES = tuple(round(0.05 * i, 2) for i in range(1, 19))  # 0.05 .. 0.90


def training_photos(size: int) -> list[tuple[str, np.ndarray]]:
    """(source, centre crop) of every photo of the training sources."""
    from PIL import Image
    root = default_cache() / "photos"
    if not root.is_dir():
        raise SystemExit(f"No photos under {root}: run `python -m reason_restore.tools.data`")
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and split_of(p.name) == "train"):
        for p in sorted(folder.glob("*.png")):
            with Image.open(p) as img:
                a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
            h, w = a.shape[:2]
            s = min(size, h, w)
            y, x = (h - s) // 2, (w - s) // 2
            out.append((folder.name, np.ascontiguousarray(a[y:y + s, x:x + s])))
    return out


def calibration_spec(rng: np.random.Generator) -> list[Step]:
    u = rng.random()
    if u < 0.10:
        return []
    if u < 0.55:
        t = TYPE_NAMES[int(rng.integers(len(TYPE_NAMES)))]
        return [Step(t, get_type(t).params_for_severity(float(rng.uniform(0.1, 0.9))))]
    return random_spec(rng)


def f1(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-column F1 of boolean [N, T] arrays (the analyzer benchmark's), 1.0 where a column
    has neither positives nor detections (nothing to find, nothing found)."""
    return np.nan_to_num(presence_prf(truth, pred)[2], nan=1.0)


def fit_thresholds(probs: np.ndarray, truth: np.ndarray) -> tuple[dict, dict, dict]:
    """Per type: the candidate threshold of best F1 (ties: the one nearest 0.5), that F1, and
    the F1 at the default 0.5."""
    scores = np.stack([f1(truth, probs >= c) for c in CANDIDATES])  # [candidate, type]
    default = f1(truth, probs >= PRESENCE_THRESHOLD)
    best, best_f1, default_f1 = {}, {}, {}
    for i, name in enumerate(TYPE_NAMES):
        top = scores[:, i].max()
        c = min((c for c, v in zip(CANDIDATES, scores[:, i]) if v == top),
                key=lambda c: abs(c - 0.5))
        best[name], best_f1[name] = c, round(float(top), 4)
        default_f1[name] = round(float(default[i]), 4)
    return best, best_f1, default_f1


def cross_check(probs: np.ndarray, truth: np.ndarray, sources: np.ndarray) -> dict:
    """Does fitting generalise to a source it has not seen? For each training source: fit on
    the others, then macro-F1 on it with those thresholds and with 0.5 everywhere."""
    out = {}
    for s in sorted(set(sources)):
        fit, _, _ = fit_thresholds(probs[sources != s], truth[sources != s])
        p, t = probs[sources == s], truth[sources == s]
        cut = np.array([fit[n] for n in TYPE_NAMES])
        out[s] = {"macro_f1_fitted": round(float(f1(t, p >= cut).mean()), 4),
                  "macro_f1_at_0.5": round(float(f1(t, p >= PRESENCE_THRESHOLD).mean()), 4)}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--analyzer", type=Path, default=DEFAULT_ANALYZER)
    ap.add_argument("--variants", type=int, default=12, help="degraded images per photo")
    ap.add_argument("--size", type=int, default=384, help="centre-crop side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    model = load_analyzer(args.analyzer)
    reasoner = Reasoner(model)
    photos = training_photos(args.size)
    probs, truth, sources = [], [], []
    for i, (source, clean) in enumerate(photos):
        for v in range(args.variants):
            rng = np.random.default_rng([args.seed, i, v])
            spec = calibration_spec(rng)
            img, _ = degrade(clean, spec, seed=int(rng.integers(2**31)))
            x = torch.from_numpy(quantise(img)).permute(2, 0, 1)[None]
            with torch.no_grad():
                p = reasoner.outputs(x)["presence"].sigmoid()[0].float().numpy()
            probs.append(p)
            truth.append([any(s.type == t for s in spec) for t in TYPE_NAMES])
            sources.append(source)
    probs, truth = np.array(probs), np.array(truth, dtype=bool)
    thresholds, tuned, default = fit_thresholds(probs, truth)
    report = {"thresholds": thresholds, "f1_fitted": tuned, "f1_at_0.5": default,
              "leave_one_source_out": (check := cross_check(probs, truth, np.array(sources))),
              "leave_one_source_out_mean_gain": round(float(np.mean(
                  [v["macro_f1_fitted"] - v["macro_f1_at_0.5"] for v in check.values()])), 4),
              "images": int(len(probs)), "photos": len(photos), "variants": args.variants,
              "size": args.size, "seed": args.seed,
              "photos_from": "training sources only (tools/data.py train split)",
              "wall_time_s": round(time.time() - start, 1),
              "command": "python benchmarks/thresholds.py "
                         f"--variants {args.variants} --size {args.size} --seed {args.seed}"}
    text = json.dumps(report, indent=2) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
