"""Command line: the same reasoner, prior and restorer functions the ComfyUI nodes call.

    python -m reason_restore restore photo.jpg scans/ -o restored/
    python -m reason_restore diagnose photo.jpg [--json]
    python -m reason_restore degrade clean.png -o noisy.png --spec "noise: sigma=25" --seed 0

``restore`` writes, for every input ``X.ext``: ``X.png`` (restored), ``X.diagnosis.json``,
``X.cot.txt`` (chain of thought) and ``X.compare.png`` (input | restored, with the diagnosis
and the residual severity before -> after underneath). A file that fails is reported on one
line and the others are still processed; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A problem with the command as a whole (bad model path, no inputs): exit status 2."""


# --- helpers ----------------------------------------------------------------------------

def collect_inputs(paths: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files as given, folders expanded to the images inside (non-recursive, sorted).
    Returns (files, one-line problems)."""
    files, problems = [], []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    return files, problems


class Progress:
    """A minimal stderr progress bar (no dependency); silent when stderr is not a tty
    unless forced."""

    def __init__(self, total: int, stream=None, width: int = 28, enabled: bool | None = None):
        self.total, self.width = max(1, total), width
        self.stream = stream or sys.stderr
        self.enabled = (total > 1) if enabled is None else enabled
        self.start = time.time()

    def update(self, done: int, label: str = "") -> None:
        if not self.enabled:
            return
        filled = int(self.width * done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.time() - self.start
        end = "\n" if done >= self.total else ""
        self.stream.write(f"\r[{bar}] {done}/{self.total} {elapsed:5.1f}s {label[:40]:<40}"
                          + end)
        self.stream.flush()


def _one_line(err: BaseException) -> str:
    text = str(err).strip().replace("\n", " ") or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _device(choice: str):
    from .nodes.comfy import get_device
    try:
        return get_device(choice)
    except ValueError as e:
        raise CliError(str(e)) from None


def _load_reasoner(path, device):
    from .reasoner.engine import DEFAULT_ANALYZER, load_reasoner
    try:
        return load_reasoner(path, device=device)
    except (OSError, ValueError) as e:
        hint = "" if path else f" (built-in weights expected at {DEFAULT_ANALYZER}; pass " \
                               f"--analyzer PATH)"
        raise CliError(f"analyzer: {_one_line(e)}{hint}") from None


def _load_restorer(path, device):
    from .restorer.engine import DEFAULT_RESTORER, load_default_restorer
    try:
        return load_default_restorer(path, device=device)
    except (OSError, ValueError) as e:
        hint = "" if path else f" (built-in weights expected at {DEFAULT_RESTORER}; pass " \
                               f"--restorer PATH)"
        raise CliError(f"restorer: {_one_line(e)}{hint}") from None


def _output_names(files: Sequence[Path]) -> list[str]:
    """``X`` for ``X.ext``; inputs sharing a stem keep their suffix (``X.jpg``) apart."""
    stems = [f.stem for f in files]
    return [f.stem if stems.count(f.stem) == 1 else f.name for f in files]


# --- compare image ----------------------------------------------------------------------

def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines = []
    for para in text.split("\n"):
        words, line = para.split(" "), ""
        for w in words:
            trial = (line + " " + w).strip()
            if line and draw.textlength(trial, font=font) > width:
                lines.append(line)
                line = w
            else:
                line = trial
        lines.append(line)
    return lines


def compare_image(before, after, text: str):
    """PIL image: ``before | after`` side by side (``before`` resized to ``after``'s size
    when they differ), with ``text`` in a band underneath."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from .nodes.common import resize_to

    h, w = after.shape[-2:]
    before = resize_to(before, h, w)
    row = np.concatenate([before[0].permute(1, 2, 0).cpu().numpy(),
                          np.ones((h, 4, 3), np.float32),
                          after[0].permute(1, 2, 0).cpu().numpy()], axis=1)
    row = Image.fromarray((np.clip(row, 0, 1) * 255 + 0.5).astype(np.uint8))
    font = ImageFont.load_default()
    canvas_w = max(row.width, 480)
    probe = ImageDraw.Draw(Image.new("RGB", (canvas_w, 10)))
    lines = _wrap(probe, text, font, canvas_w - 12)
    line_h = 14
    band = 10 + line_h * len(lines)
    canvas = Image.new("RGB", (canvas_w, row.height + band), (255, 255, 255))
    canvas.paste(row, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((6, row.height + 5 + i * line_h), line, fill=(0, 0, 0), font=font)
    return canvas


def _severity_line(before_per, before_all, after_per, after_all) -> str:
    from .reasoner.taxonomy import TYPE_NAMES
    parts = [f"{n} {float(before_per[i]):.2f}->{float(after_per[i]):.2f}"
             for i, n in enumerate(TYPE_NAMES)
             if float(before_per[i]) >= 0.05 or float(after_per[i]) >= 0.05]
    text = f"residual severity {float(before_all):.2f} -> {float(after_all):.2f}"
    return text + (f" ({', '.join(parts)})" if parts else "")


# --- commands ---------------------------------------------------------------------------

def report_inputs(inputs):
    """collect_inputs, with a one-line error for each unusable input (and for none at all)."""
    files, problems = collect_inputs(inputs)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if not files:
        print("error: no input images", file=sys.stderr)
    return files, problems


def cmd_restore(args) -> int:
    import torch

    from .nodes.common import guided_prior, upscale_factor
    from .reasoner.images import load_image_file, save_image_file

    files, problems = report_inputs(args.inputs)
    if not files:
        return EXIT_FAILED
    if not 1.0 <= args.upscale <= 4.0:
        raise CliError(f"--upscale: expected a factor in [1, 4], got {args.upscale}")
    if not 0.0 <= args.strength <= 1.0:
        raise CliError(f"--strength: expected a value in [0, 1], got {args.strength}")
    if args.tile < 64 or not 0 <= args.overlap < args.tile / 2:
        raise CliError(f"--tile/--overlap: need tile >= 64 and 0 <= overlap < tile/2, got "
                       f"{args.tile}/{args.overlap}")
    try:  # a malformed --overrides is the command's fault, not each file's
        guided_prior([None], args.overrides or "", args.instruction or "")
    except ValueError as e:
        raise CliError(f"--overrides: {_one_line(e)}") from None
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"-o: cannot create {out_dir} ({e.strerror or e})") from None
    device = _device(args.device)
    reasoner = _load_reasoner(args.analyzer, device)
    restorer = _load_restorer(args.restorer, device)

    failed = len(problems)
    progress = Progress(len(files), enabled=None if not args.quiet else False)
    for n, (path, name) in enumerate(zip(files, _output_names(files))):
        try:
            target = out_dir / f"{name}.png"
            if target.resolve() == path.resolve():
                raise ValueError(f"writing {target} would overwrite the input; choose another "
                                 f"-o folder")
            image = load_image_file(path)
            diagnosis = reasoner.diagnose(image)[0]
            prior = guided_prior([diagnosis], args.overrides or "", args.instruction or "")
            guided = prior.diagnoses[0]
            factor = upscale_factor([guided], args.upscale, args.force_upscale)
            restored = restorer.restore(image, [guided], upscale=factor,
                                        strength=args.strength, tile=args.tile,
                                        overlap=args.overlap,
                                        consistency=not args.no_consistency)
            before_per, before_all = reasoner.score(image)
            after_per, after_all = reasoner.score(restored)
            save_image_file(restored, target)
            (out_dir / f"{name}.diagnosis.json").write_text(guided.to_json() + "\n")
            plan = prior.prompts[0]
            (out_dir / f"{name}.cot.txt").write_text(
                f"Diagnosis: {guided.summary()}\n{guided.chain_of_thought()}\n\n"
                f"Prompts for a diffusion sampler (denoise {plan.denoise}, steps {plan.steps}, "
                f"cfg {plan.cfg}):\npositive: {plan.positive}\nnegative: {plan.negative}\n"
                + "".join(f"Restore: {note}\n" for note in _airlight_notes(restorer)))
            text = (f"left: input, right: restored. {path.name}: {guided.summary()}"
                    + (f"; upscaled x{factor:g}" if factor > 1 else "") + "\n"
                    + _severity_line(before_per[0], before_all[0], after_per[0], after_all[0]))
            compare_image(image, restored, text).save(out_dir / f"{name}.compare.png")
            if not progress.enabled and not args.quiet:
                print(f"{path} -> {target}: {guided.summary()}")
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            failed += 1
            if progress.enabled:
                sys.stderr.write("\n")
            print(f"error: {path}: {_one_line(e)}", file=sys.stderr)
        progress.update(n + 1, path.name)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    total = len(files) + len(problems)
    if not args.quiet:
        print(f"{total - failed} of {total} image(s) restored into {out_dir}",
              file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _airlight_notes(restorer) -> list[str]:
    from .restorer.engine import airlight_note
    notes = (airlight_note(said, used) for _, said, used in getattr(restorer, "last_airlight", []))
    return [n for n in notes if n]


def cmd_diagnose(args) -> int:
    import json

    from .reasoner.images import load_image_file

    files, problems = report_inputs(args.inputs)
    if not files:
        return EXIT_FAILED
    reasoner = _load_reasoner(args.analyzer, _device(args.device))
    failed = len(problems)
    results = []
    for path in files:
        try:
            d = reasoner.diagnose(load_image_file(path))[0]
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
            failed += 1
            print(f"error: {path}: {_one_line(e)}", file=sys.stderr)
            continue
        if args.json:
            results.append({"file": str(path), "diagnosis": d.to_dict()})
        else:
            print(f"== {path}\nDiagnosis: {d.summary()}\n{d.chain_of_thought()}\n")
    if args.json:
        print(json.dumps(results[0]["diagnosis"] if len(files) == 1 and results else results,
                         indent=2))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_degrade(args) -> int:
    import numpy as np
    import torch

    from .reasoner.images import load_image_file, save_image_file
    from .reasoner.synthesis import degrade, parse_spec

    try:
        parse_spec(args.spec)
    except ValueError as e:
        raise CliError(f"--spec: {e}") from None
    try:
        image = load_image_file(args.input)
    except (OSError, ValueError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILED
    out, truth = degrade(image[0].permute(1, 2, 0).numpy(), args.spec, seed=args.seed)
    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_image_file(torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)[None], target)
    if args.truth:
        Path(args.truth).write_text(truth.to_json() + "\n")
    print(f"{args.input} -> {target}: {truth.summary()}")
    return EXIT_OK


# --- argument parsing -------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .reasoner.taxonomy import TAXONOMY
    types = "; ".join(f"{t.name} ({', '.join(t.keys)})" for t in TAXONOMY)
    parser = argparse.ArgumentParser(
        prog="python -m reason_restore",
        description="Reason-then-restore universal image restoration: diagnose what is wrong "
                    "with a photo (and explain it), then restore it with one network "
                    "conditioned on that diagnosis.",
        epilog="Examples:\n"
               "  python -m reason_restore restore photo.jpg -o restored/\n"
               "  python -m reason_restore diagnose photo.jpg --json\n"
               "  python -m reason_restore degrade clean.png -o noisy.png "
               "--spec 'noise: sigma=25; jpeg: quality=30'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def models(p, restorer: bool):
        p.add_argument("--analyzer", metavar="PATH",
                       help="analyzer weights (.safetensors); default: the built-in ones")
        if restorer:
            p.add_argument("--restorer", metavar="PATH",
                           help="restorer weights (.safetensors); default: the built-in ones")
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where to compute (default: auto = CUDA if available)")

    r = sub.add_parser(
        "restore", help="diagnose and restore images",
        description="Diagnose and restore images. For each INPUT X.ext writes OUTDIR/X.png, "
                    "X.diagnosis.json, X.cot.txt and X.compare.png.")
    r.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files or folders (images inside, not recursive, sorted)")
    r.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    models(r, restorer=True)
    r.add_argument("--upscale", type=float, default=1.0, metavar="F",
                   help="enlarge by F (1-4) when the diagnosis shows low resolution")
    r.add_argument("--force-upscale", action="store_true",
                   help="enlarge by --upscale even without diagnosed low resolution")
    r.add_argument("--overrides", default="", metavar="STR",
                   help="correct the diagnosis: '<type>: off|on|severity=x|key=value; ...' "
                        f"(types and keys: {types}), or a whole diagnosis JSON")
    r.add_argument("--instruction", default="", metavar="STR",
                   help="free-text wish added to the prompts stored with the prior")
    r.add_argument("--strength", type=float, default=1.0, metavar="S",
                   help="1 = full restoration, lower blends with the input (default 1)")
    r.add_argument("--tile", type=int, default=512, metavar="N",
                   help="tile size for large images (default 512)")
    r.add_argument("--overlap", type=int, default=32, metavar="N",
                   help="tile overlap in pixels (default 32)")
    r.add_argument("--no-consistency", action="store_true",
                   help="skip the data-consistency step after the network "
                        "(restorer/consistency.py)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    r.set_defaults(func=cmd_restore)

    d = sub.add_parser("diagnose", help="print what is wrong with images",
                       description="Print the diagnosis (summary and chain of thought, or "
                                   "JSON) of each image.")
    d.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    d.add_argument("--json", action="store_true",
                   help="print JSON (one object for one image, else a list)")
    models(d, restorer=False)
    d.set_defaults(func=cmd_diagnose)

    g = sub.add_parser("degrade", help="apply a known degradation to an image",
                       description="Apply a degradation spec to a clean image, "
                                   "deterministically for a seed.")
    g.add_argument("input", metavar="INPUT", help="clean image file")
    g.add_argument("-o", "--output", required=True, metavar="OUT.png", help="output image")
    g.add_argument("--spec", required=True,
                   help="'noise: sigma=25; jpeg: quality=30' or JSON; types (keys): " + types)
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--truth", metavar="OUT.json",
                   help="also write the ground-truth diagnosis JSON here")
    g.set_defaults(func=cmd_degrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
