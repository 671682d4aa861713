"""Benchmark of reason-then-restore against the classical method for each degradation. One
command, markdown out:

    python -m reason_restore.tools.data            # once: the photos (held-out source "mate")
    python benchmarks/restoration.py [--photos 4] [--size 512] [--cases SUBSTR ...]
        [--analyzer PATH] [--restorer PATH] [--ablation NAME=PATH ...] [--float-inputs]
        [--out benchmarks/results/restoration.md] [--figure PATH.jpg]

Cases (``benchmarks/heldout.py``): every taxonomy type at three levels (mild / moderate /
severe, fixed severities), the fixed mixtures, and one extra row, pure Gaussian noise of
sigma 25 (the classic denoising benchmark, where BM3D is the reference). Each case is applied
to ``--photos`` held-out photos, centre-cropped to ``--size``; the degraded images are rounded
to 8 bits as a saved photo is (``--float-inputs`` skips that).

Methods per case:

* **ours**: the shipped analyzer diagnoses the degraded image (*predicted* diagnosis) and the
  shipped restorer restores with it (``Reasoner.diagnose`` + ``Restorer.restore``, the same
  calls as the nodes); also the restorer given the *true* diagnosis;
* **classical** (``benchmarks/classical.py``): for a single type, each classical method the
  issue names for it (BM3D and OpenCV NLM for noise, Wiener and Richardson-Lucy for blur, the
  dark channel prior for haze, NLM for JPEG, gamma and CLAHE for low light, bicubic for low
  resolution, a directional median for rain); for a mixture, the chain of each component's
  first method in reverse formation order, and each of those methods alone. They are given
  the *true* degradation parameters (an oracle, generous to them). "Best classical" is the
  one with the highest mean PSNR on that row;
* **ablation** (``--ablation NAME=PATH``, repeatable): other restorer weights (e.g. with and
  without the reward stage), restoring with the same predicted diagnoses; a second table gives
  their mean PSNR / SSIM / residual severity over all cases.

Metrics: PSNR on RGB and SSIM on the BT.601 luma (``restorer/metrics.py``), mean over
photos; residual severity = the analyzer's overall severity of the output (lower is better).
Time: process CPU seconds of the restoring call(s) per image, torch / OpenCV on one thread
(on a shared machine CPU time, not wall time, measures the work); for ours, analyzer +
restorer. Targets (the issue): ours beats the best classical method on every row; on Gaussian
noise sigma 25 ours >= BM3D in PSNR while >= 30x faster. ``--figure`` writes a JPEG grid
(one row per type at the moderate level: input | ours | best classical | clean).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # heldout.py and classical.py, also when imported by the tests

import classical  # noqa: E402
import heldout  # noqa: E402  (imports the pack)

from reason_restore.reasoner.synthesis import Step, quantise  # noqa: E402
from reason_restore.reasoner.taxonomy import TYPE_NAMES, get_type  # noqa: E402

DEFAULT_OUT = HERE / "results" / "restoration.md"
SIGMA25 = heldout.Case("noise sigma 25 (Gaussian)", ("noise",), "extra",
                       (Step("noise", {"sigma": 25.0, "shot": 0.0}),))
SPEEDUP_TARGET = 30.0
# The classical method that is the exact inverse of a synthetic degradation (see NOTES).
ORACLE_INVERSE = "gamma (true curve)"
OURS, OURS_TRUE = "ours", "ours (true diagnosis)"
FIGURE_CROP = 192  # px of each figure tile (native resolution: restoration detail shows)


# --- metrics --------------------------------------------------------------------------------

def _batch(img: np.ndarray):
    """H x W x 3 array -> [1, 3, H, W] float64 tensor."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, np.float64)
                                                 .transpose(2, 0, 1)))[None]


def psnr(img: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB of two H x W x 3 images in [0, 1] (all channels, peak 1)."""
    from reason_restore.restorer.metrics import psnr as _psnr
    return float(_psnr(_batch(img), _batch(ref))[0])


def ssim(img: np.ndarray, ref: np.ndarray) -> float:
    """SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5) on the BT.601 luma."""
    from reason_restore.restorer.metrics import ssim as _ssim
    return float(_ssim(_batch(img), _batch(ref))[0])


def timed(fn):
    """(result, process CPU seconds) of one call."""
    c0 = time.process_time()
    out = fn()
    return out, time.process_time() - c0


# --- cases and classical candidates ---------------------------------------------------------

def select_cases(filters=None) -> list[heldout.Case]:
    cases = heldout.all_cases() + [SIGMA25]
    if not filters:
        return cases
    return [c for c in cases if any(f in c.name for f in filters)]


def chain_name(case: heldout.Case) -> str:
    order = sorted(case.steps, key=lambda s: -get_type(s.type).formation_order)
    return "chain: " + " -> ".join(classical.method(s.type).name for s in order)


def candidates(case: heldout.Case, clean: np.ndarray, float_inputs: bool = False
               ) -> list[tuple[str, object]]:
    """(name, image -> restored) for every classical method run on this case."""
    if case.single:
        step = case.steps[0]
        out = [(m.name, (lambda x, m=m: m.run(x, step.params))) for m in
               classical.METHODS[step.type]]
        if step.type == "low_resolution":
            # Bicubic from the genuine low-resolution picture (what an SR baseline is given):
            # equal to the input up to the interpolation code, which this row shows.
            small = classical.downsample_like_synthesis(clean, step.params["scale"])
            small = small if float_inputs else quantise(small)
            out.append(("bicubic (OpenCV, from the LR image)",
                        lambda x: classical.bicubic_upscale(small, x.shape[:2])))
        return out
    out = [(chain_name(case), lambda x: classical.chain(x, case.steps))]
    for step in case.steps:
        m = classical.method(step.type)
        out.append((f"{m.name} alone", (lambda x, m=m, step=step: m.run(x, step.params))))
    return out


# --- ours -----------------------------------------------------------------------------------

class Ours:
    """The shipped pipeline through its library entry points, plus ablation restorers."""

    def __init__(self, analyzer: Path, restorer: Path, ablation: dict[str, Path]):
        from reason_restore.reasoner.engine import load_reasoner
        from reason_restore.restorer.engine import load_default_restorer
        # The scene tagger only fills scene/objects, which the restorer's prior never reads.
        self.reasoner = load_reasoner(analyzer, semantics=False)
        self.restorer = load_default_restorer(restorer)
        self.ablation = {name: load_default_restorer(p) for name, p in ablation.items()}

    def diagnose(self, img: np.ndarray):
        return self.reasoner.diagnose(_batch(img).float())[0]

    def restore(self, img: np.ndarray, diagnosis, restorer=None) -> np.ndarray:
        out = (restorer or self.restorer).restore(_batch(img).float(), [diagnosis])
        return out[0].permute(1, 2, 0).numpy().astype(np.float32)

    def severity(self, img: np.ndarray) -> float:
        return float(self.reasoner.score(_batch(img).float())[1][0])


# --- running --------------------------------------------------------------------------------

@dataclass
class Score:
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    severity: list[float] = field(default_factory=list)

    def add(self, img, clean, seconds=math.nan, severity=math.nan):
        self.psnr.append(psnr(img, clean))
        self.ssim.append(ssim(img, clean))
        self.seconds.append(seconds)
        self.severity.append(severity)

    def mean(self, key: str) -> float:
        values = [v for v in getattr(self, key) if not math.isnan(v)]
        return statistics.fmean(values) if values else math.nan


@dataclass
class Row:
    case: heldout.Case
    scores: dict[str, Score] = field(default_factory=dict)  # "input", OURS, classical names
    classical: list[str] = field(default_factory=list)
    figure: dict[str, np.ndarray] = field(default_factory=dict)  # crops of one photo

    def score(self, key: str) -> Score:
        return self.scores.setdefault(key, Score())

    def best_classical(self) -> str:
        return max(self.classical, key=lambda k: self.scores[k].mean("psnr"))


def detail_box(clean: np.ndarray, side: int = FIGURE_CROP) -> tuple[int, int, int]:
    """(y, x, side) of the figure crop: of a 3 x 3 grid of windows, the one with the most
    detail (gradient energy) in the clean photo, so a row does not show a patch of sky."""
    h, w = clean.shape[:2]
    s = min(side, h, w)
    grad = (np.abs(np.diff(clean, axis=0))[:, :-1].sum(2)
            + np.abs(np.diff(clean, axis=1))[:-1].sum(2))
    boxes = [(round(i * (h - s) / 2), round(j * (w - s) / 2)) for i in range(3) for j in range(3)]
    y, x = max(boxes, key=lambda b: grad[b[0]:b[0] + s - 1, b[1]:b[1] + s - 1].sum())
    return y, x, s


def figure_photo(case: heldout.Case, n_photos: int) -> int | None:
    """Which photo a case contributes to the figure: moderate singles only, one type per row,
    cycling through the photos so the figure shows several."""
    if case.level != "moderate":
        return None
    return TYPE_NAMES.index(case.types[0]) % n_photos


def run_case(case, photos, ours: Ours, float_inputs: bool, log) -> Row:
    row = Row(case)
    fig_index = figure_photo(case, len(photos))
    for i, clean in enumerate(photos):
        img, truth = heldout.degraded(case, clean, i)
        img = img if float_inputs else quantise(img)
        keep = {"input": img} if i == fig_index else None
        row.score("input").add(img, clean, severity=ours.severity(img))
        diagnosis, t_diag = timed(lambda: ours.diagnose(img))
        out, t_restore = timed(lambda: ours.restore(img, diagnosis))
        row.score(OURS).add(out, clean, t_diag + t_restore, ours.severity(out))
        row.score("analyzer").seconds.append(t_diag)
        row.score("restorer").seconds.append(t_restore)
        out_true, t_true = timed(lambda: ours.restore(img, truth))
        row.score(OURS_TRUE).add(out_true, clean, t_true, ours.severity(out_true))
        if keep is not None:
            keep[OURS] = out
        for name, restorer in ours.ablation.items():
            res, t = timed(lambda r=restorer: ours.restore(img, diagnosis, r))
            row.score(f"ablation:{name}").add(res, clean, t_diag + t, ours.severity(res))
        for name, fn in candidates(case, clean, float_inputs):
            res, t = timed(lambda fn=fn: fn(img))
            row.score(name).add(res, clean, t, ours.severity(res))
            if name not in row.classical:
                row.classical.append(name)
            if keep is not None:
                keep[name] = res
        if keep is not None:
            keep["clean"] = clean
            y, x, s = detail_box(clean)
            row.figure = {k: v[y:y + s, x:x + s].copy() for k, v in keep.items()}
        log(f"{case.name} photo {i + 1}/{len(photos)}: input {row.scores['input'].psnr[-1]:.2f}"
            f" ours {row.scores[OURS].psnr[-1]:.2f} dB "
            f"({diagnosis.summary()})")
    return row


# --- report ---------------------------------------------------------------------------------

def _f(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _s(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def main_table(rows: list[Row]) -> list[str]:
    out = ["| case | input PSNR | ours PSNR (predicted diag.) | ours PSNR (true diag.) | "
           "best classical (true params) | its PSNR | ours - best (dB) | input SSIM | "
           "ours SSIM | best classical SSIM | ours s / image | best classical s / image |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = r.best_classical()
        s = r.scores
        diff = s[OURS].mean("psnr") - s[best].mean("psnr")
        out.append(
            f"| {r.case.name} | {_f(s['input'].mean('psnr'))} | **{_f(s[OURS].mean('psnr'))}** "
            f"| {_f(s[OURS_TRUE].mean('psnr'))} | {best} | {_f(s[best].mean('psnr'))} | "
            f"{diff:+.2f} | {_f(s['input'].mean('ssim'), 3)} | {_f(s[OURS].mean('ssim'), 3)} "
            f"| {_f(s[best].mean('ssim'), 3)} | {_s(s[OURS].mean('seconds'))} | "
            f"{_s(s[best].mean('seconds'))} |")
    for label, level in (("mean, single types", None), ("mean, mixtures", "mixture")):
        group = [r for r in rows if (r.case.level == "mixture") == (level == "mixture")
                 and r.case.level != "extra"]
        if not group:
            continue

        def m(key, metric="psnr", group=group):
            return statistics.fmean(r.scores[key(r)].mean(metric) for r in group)
        ours_p = m(lambda r: OURS)
        best_p = m(lambda r: r.best_classical())
        out.append(f"| *{label}* | {_f(m(lambda r: 'input'))} | **{_f(ours_p)}** | "
                   f"{_f(m(lambda r: OURS_TRUE))} | (per row) | {_f(best_p)} | "
                   f"{ours_p - best_p:+.2f} | {_f(m(lambda r: 'input', 'ssim'), 3)} | "
                   f"{_f(m(lambda r: OURS, 'ssim'), 3)} | "
                   f"{_f(m(lambda r: r.best_classical(), 'ssim'), 3)} | "
                   f"{_s(m(lambda r: OURS, 'seconds'))} | "
                   f"{_s(m(lambda r: r.best_classical(), 'seconds'))} |")
    return out


def classical_table(rows: list[Row]) -> list[str]:
    out = ["| case | method | PSNR | SSIM | residual severity | s / image |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        best = r.best_classical()
        for key in ["input", OURS, OURS_TRUE] + r.classical:
            s = r.scores[key]
            name = f"**{key}**" if key == best else key
            out.append(f"| {r.case.name} | {name} | {_f(s.mean('psnr'))} | "
                       f"{_f(s.mean('ssim'), 3)} | {_f(s.mean('severity'), 3)} | "
                       f"{_s(s.mean('seconds'))} |")
    return out


def speed_table(rows: list[Row]) -> list[str]:
    """Mean CPU seconds per image of every method over every call it made."""
    calls: dict[str, list[float]] = {}
    for r in rows:
        for key, s in r.scores.items():
            if key == "input":
                continue
            name = key.removesuffix(" alone")
            calls.setdefault(name, []).extend(v for v in s.seconds if not math.isnan(v))
    labels = {OURS: "ours: analyzer + restorer", "analyzer": "  analyzer alone",
              "restorer": "  restorer alone", OURS_TRUE: "restorer (true diagnosis)"}
    out = ["| method | s / image (mean) | min | max | calls |", "|---|---|---|---|---|"]
    for name, values in calls.items():
        if values:
            out.append(f"| {labels.get(name, name)} | {_s(statistics.fmean(values))} | "
                       f"{_s(min(values))} | {_s(max(values))} | {len(values)} |")
    return out


def ablation_table(rows: list[Row], models: dict[str, Path]) -> list[str]:
    from reason_restore.tools.data import sha256_file
    out = ["| restorer | file | mean PSNR (predicted diag.) | mean SSIM | mean residual "
           "severity | PSNR mild | PSNR moderate | PSNR severe | PSNR mixtures |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, path in models.items():
        key = OURS if name == "main" else f"ablation:{name}"

        def mean(metric, level=None, key=key):
            vals = [r.scores[key].mean(metric) for r in rows
                    if level is None or r.case.level == level]
            return statistics.fmean(vals) if vals else math.nan
        # Name and hash, not the path: ablation weights live outside the repository (a cache
        # folder of whoever ran it), and the hash is what ties a row to a training record.
        out.append(f"| {name} | `{Path(path).name}` (sha256 {sha256_file(path)[:12]}) | "
                   f"{_f(mean('psnr'))} | {_f(mean('ssim'), 3)} | "
                   f"{_f(mean('severity'), 3)} | {_f(mean('psnr', 'mild'))} | "
                   f"{_f(mean('psnr', 'moderate'))} | {_f(mean('psnr', 'severe'))} | "
                   f"{_f(mean('psnr', 'mixture'))} |")
    return out


def verdicts(rows: list[Row]) -> list[str]:
    """One line per target: met, or missed by how much."""
    out = []
    rated = [r for r in rows if r.case.level != "extra"]
    missed = []
    for r in rated:
        best = r.best_classical()
        diff = r.scores[OURS].mean("psnr") - r.scores[best].mean("psnr")
        if diff <= 0:
            missed.append(f"{r.case.name} by {-diff:.2f} dB (vs {best})")
    if rated:
        if missed:
            out.append(f"- Ours beats the best classical method on every type, level and "
                       f"mixture: **missed** on {len(missed)} of {len(rated)} rows: "
                       + "; ".join(missed) + ".")
        else:
            out.append(f"- Ours beats the best classical method on every type, level and "
                       f"mixture: **met** ({len(rated)} of {len(rated)} rows).")
    oracle = [r for r in rated if any(ORACLE_INVERSE in k for k in r.classical)]
    if oracle:
        parts = []
        for r in oracle:
            others = [k for k in r.classical if ORACLE_INVERSE not in k]
            best = max(others, key=lambda k: r.scores[k].mean("psnr"))
            diff = r.scores[OURS].mean("psnr") - r.scores[best].mean("psnr")
            parts.append(f"{r.case.name} {diff:+.2f} dB (vs {best})")
        out.append(f"- Without the exact inverse of the synthetic tone curve "
                   f"(\"{ORACLE_INVERSE}\"), ours minus the best remaining classical method: "
                   + "; ".join(parts) + ".")
    sigma = [r for r in rows if r.case is SIGMA25]
    if sigma:
        r = sigma[0]
        ours_p, bm3d_p = r.scores[OURS].mean("psnr"), r.scores["BM3D"].mean("psnr")
        speed = r.scores["BM3D"].mean("seconds") / r.scores[OURS].mean("seconds")
        quality = "met" if ours_p >= bm3d_p else f"missed by {bm3d_p - ours_p:.2f} dB"
        fast = ("met" if speed >= SPEEDUP_TARGET
                else f"missed: {speed:.1f}x, {SPEEDUP_TARGET / speed:.1f}x short")
        out.append(f"- Gaussian noise sigma 25: ours {ours_p:.2f} dB vs BM3D {bm3d_p:.2f} dB: "
                   f"**{quality}**; ours {speed:.1f}x faster than BM3D (target >= "
                   f"{SPEEDUP_TARGET:g}x): **{fast}**.")
    return out


def header(argv, args, photos) -> list[str]:
    import torch
    h, w = photos[0].shape[:2]
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        cpu = f"{model} ({cpu})"
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        "# Restoration benchmark: ours vs classical methods", "",
        f"Command: `python benchmarks/restoration.py{' ' + ' '.join(argv) if argv else ''}`  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} (load average at start {load}); "
        f"Python {platform.python_version()}, torch {torch.__version__}, CPU, "
        f"{torch.get_num_threads()} thread(s)  ",
        f"Analyzer: `{Path(args.analyzer).name}` (sha256 {args.analyzer_sha[:12]}); "
        f"restorer: `{Path(args.restorer).name}` (sha256 {args.restorer_sha[:12]}); code: "
        f"`{args.code_rev}`  ",
        f"Images: {len(photos)} held-out photos (source `{heldout.heldout_dir().name}`), "
        f"centre {w}x{h} crops; degraded images "
        + ("kept in float." if args.float_inputs else "rounded to 8 bits."), ""]


NOTES = [
    "Notes:",
    "",
    "- Classical methods get the **true** degradation parameters (an oracle no real photo "
    "offers): sigma for BM3D/NLM (with a shot-noise component, the std at the image's mean "
    "intensity), the synthesiser's exact PSF for Wiener/Richardson-Lucy, the true airlight "
    "for the dark channel prior, the quality factor for JPEG NLM, the exact tone curve for "
    "gamma. Ours gets only the image (predicted diagnosis); the true-diagnosis column is "
    "ours with the same oracle. Free hyper-parameters (NLM strength, Wiener balance, RL "
    "iterations, median length) were set on a training-split photo (`benchmarks/"
    "classical.py`).",
    "- \"gamma (true curve)\" inverts the synthesiser's y = exposure * x^gamma exactly: on "
    "pure low light it is the inverse of the degradation itself, limited only by 8-bit "
    "rounding, so no learned method can be expected to match it; CLAHE is the classical "
    "method that does not know the curve.",
    "- \"bicubic (= input)\": the synthesiser already upsampled the low-resolution picture "
    "with bicubic interpolation, so the bicubic baseline *is* the input; the OpenCV row "
    "re-interpolates the true low-resolution picture (rounded to 8 bits) with the standard "
    "cubic kernel (a = -0.75; the synthesiser's antialiased torch bicubic uses PIL's "
    "a = -0.5), and its output is not rounded: together about +0.25 dB over the input.",
    "- Rain has no classical method in the issue: a 1-D median (15 px) across the streak "
    "direction, given the true angle.",
    "- Mixtures: the chain of each component's first classical method in reverse formation "
    "order (codec -> sensor -> optics -> scene), and each of those methods alone; the best "
    "of these is reported.",
    "- SSIM on the BT.601 luma (`restorer/metrics.py`); PSNR on RGB. Times: process CPU "
    "seconds per image (torch, OpenCV, BM3D on one thread); ours includes the analyzer. "
    "Residual severity: the analyzer's overall severity of the output (0 = looks clean); "
    "it is our own analyzer's opinion, which the restorer's reward stage optimises and which "
    "never saw classical outputs in training, so it favours ours: use it to compare our "
    "restorers (the ablation), not ours against classical methods.",
]


def report(argv, args, photos, rows: list[Row], models) -> str:
    size = "x".join(str(v) for v in photos[0].shape[1::-1])
    lines = header(argv, args, photos)
    lines += ["## Ours vs the best classical method", "",
              f"PSNR (dB) and SSIM: mean over photos; seconds: CPU per {size} image.", ""]
    lines += main_table(rows) + [""]
    lines += ["## Targets", ""] + verdicts(rows) + [""]
    lines += ["## Reward-stage ablation", "",
              "Each restorer restores every case with the same predicted diagnoses; means "
              "over all cases. Add models with `--ablation NAME=PATH` (e.g. the same "
              "fine-tune with and without the reward stage).", ""]
    lines += ablation_table(rows, models) + [""]
    lines += [f"## Speed (CPU seconds per {size} image, one thread)", ""]
    lines += speed_table(rows) + [""]
    lines += NOTES + [""]
    lines += ["## Every method on every case", "", "<details><summary>table</summary>", ""]
    lines += classical_table(rows) + ["", "</details>", ""]
    return "\n".join(lines)


# --- figure ---------------------------------------------------------------------------------

def write_figure(rows: list[Row], path: Path, quality: int = 85) -> Path | None:
    """A JPEG grid, one row per type (moderate): input | ours | best classical | clean, each
    labelled with its PSNR on the crop shown."""
    from PIL import Image, ImageDraw, ImageFont
    rows = [r for r in rows if r.figure]
    if not rows:
        return None
    side = min(min(v.shape[:2]) for r in rows for v in r.figure.values())
    grid = Image.new("RGB", (4 * side, len(rows) * side), "white")
    draw = ImageDraw.Draw(grid)
    try:
        font = ImageFont.load_default(size=max(10, side // 14))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for y, r in enumerate(rows):
        best = r.best_classical()
        clean = r.figure["clean"]
        # Short names ("gamma (true curve)" -> "gamma"): the tables give the full ones.
        tiles = [("input", f"{r.case.types[0]}: input"), (OURS, "ours"),
                 (best, best.split(" (")[0]), ("clean", "clean")]
        for x, (key, label) in enumerate(tiles):
            img = r.figure[key][:side, :side]
            grid.paste(Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)),
                       (x * side, y * side))
            if key != "clean":
                label += f"\n{psnr(img, clean[:side, :side]):.1f} dB (crop)"
            at = (x * side + 3, y * side + 2)
            box = draw.multiline_textbbox(at, label, font=font)
            draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill="black")
            draw.multiline_text(at, label, fill="white", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=quality, optimize=True)
    return path


# --- main -----------------------------------------------------------------------------------

def code_revision() -> str:
    """The checkout's commit (and whether files differ from it), read at start: the report
    must name the code that ran, not what the tree holds when it ends."""
    import subprocess
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE.parent,
                              capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _named_path(text: str) -> tuple[str, Path]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    name, path = text.split("=", 1)
    if not name or name == "main":
        raise argparse.ArgumentTypeError(f"NAME must be non-empty and not 'main': {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{name}: no restorer weights at {path}")
    return name, Path(path)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from reason_restore.reasoner.engine import DEFAULT_ANALYZER
    from reason_restore.restorer.engine import DEFAULT_RESTORER
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=4, help="held-out photos (default 4)")
    ap.add_argument("--size", type=int, default=512, help="centre-crop side (default 512)")
    ap.add_argument("--cases", nargs="+", metavar="SUBSTR",
                    help="only cases whose name contains one of these (e.g. noise/ blur+)")
    ap.add_argument("--analyzer", type=Path, default=DEFAULT_ANALYZER)
    ap.add_argument("--restorer", type=Path, default=DEFAULT_RESTORER)
    ap.add_argument("--ablation", nargs="+", type=_named_path, default=[],
                    metavar="NAME=PATH", help="more restorer weights to compare")
    ap.add_argument("--float-inputs", action="store_true",
                    help="keep degraded images in float instead of rounding to 8 bits")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"markdown file (default {DEFAULT_OUT.relative_to(HERE.parent)})")
    ap.add_argument("--figure", type=Path, help="write a JPEG grid of examples here")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)  # CPU seconds then equal the work done, comparable across rows
    for p in (args.analyzer, args.restorer):
        if not p.is_file():
            raise SystemExit(f"No weights at {p}")
    cases = select_cases(args.cases)
    if not cases:
        raise SystemExit(f"No case matches {args.cases}")
    photos = heldout.photos(args.photos, args.size)
    if not photos:
        raise SystemExit(f"No photos in {heldout.heldout_dir()}")
    ablation = dict(args.ablation)
    # Hash the weights when they are loaded: a file replaced during the run must not be the
    # one the report names.
    from reason_restore.tools.data import sha256_file
    args.analyzer_sha, args.restorer_sha = sha256_file(args.analyzer), sha256_file(args.restorer)
    args.code_rev = code_revision()
    ours = Ours(args.analyzer, args.restorer, ablation)
    start = time.perf_counter()
    rows = [run_case(c, photos, ours, args.float_inputs,
                     lambda msg: print(msg, file=sys.stderr, flush=True)) for c in cases]
    text = report(argv, args, photos, rows, {"main": args.restorer, **ablation})
    text += f"Wall time of the run: {time.perf_counter() - start:.0f} s.\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.figure:
        fig = write_figure(rows, args.figure)
        if fig:
            print(f"wrote {fig} ({fig.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
