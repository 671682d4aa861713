"""Benchmark: the restorer with vs without a reference image. One command, markdown out:

    python benchmarks/reference.py [--restorer PATH] [--reference-restorer PATH]
                                   [--photos DIR] [--n-photos 6] [--crop 192] [--seed 0]

Held-out photos (``tools/data.py``'s cache, source ``mate``; never trained on) are centre-
cropped, degraded by a random mixture of up to three taxonomy types (fixed seeds), and restored
with the true diagnosis:

* **no reference** -- the restorer alone;
* **clean reference** -- the ground truth as a diffusion pass would return it: blurred,
  colour-shifted, misaligned by a few pixels, faintly noisy
  (:func:`tools.train_reference.good_reference`);
* **poor reference** -- an unrelated picture: another held-out photo of the set.

Rows: the shipped restorer (which has *no* reference-aware blocks: Restore ignores any
reference, so all three columns are equal by construction); the shipped weights inside a
reference-aware network whose new blocks are untrained (gates at zero: the identity, so again
equal -- checked, not assumed); and, when it exists, a fine-tuned reference-aware restorer
(``tools/train_reference.py``; ``restorer/weights/restorer_reference.safetensors``). The PSNR of
the references themselves is printed for context. Missing weights or photos are reported,
never downloaded. The shipped restorer's weights file is ``restorer.safetensors``; while it is
still training, ``--restorer`` may point at its training checkpoint (``restorer.ckpt``, read
with ``weights_only=True``), reported as interim.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


sys.path.insert(0, str(HERE))  # heldout.py
import heldout  # noqa: E402,F401  (imports the pack, installed or from this checkout)

from reason_restore.reasoner.synthesis import degrade, random_spec  # noqa: E402
from reason_restore.restorer.metrics import psnr  # noqa: E402
from reason_restore.restorer.network import (PriorRestorer, grown_copy,  # noqa: E402
                                             load_restorer)
from reason_restore.restorer.prior import encode_prior_batch  # noqa: E402
from reason_restore.tools.train_reference import good_reference  # noqa: E402

WEIGHTS = ROOT / "restorer" / "weights"
DEFAULT_RESTORER = WEIGHTS / "restorer.safetensors"
DEFAULT_REFERENCE_RESTORER = WEIGHTS / "restorer_reference.safetensors"
DEFAULT_PHOTOS = Path.home() / ".cache" / "reason_restore" / "data" / "photos" / "mate"


def load_any_restorer(path: Path) -> tuple[PriorRestorer | None, str]:
    """(model, note): safetensors as shipped, or a training checkpoint (interim)."""
    if not path.is_file():
        return None, f"missing ({path})"
    if path.suffix == ".safetensors":
        return load_restorer(path), path.name
    ck = torch.load(path, map_location="cpu", weights_only=True)
    state = ck["model"] if isinstance(ck, dict) and "model" in ck else ck
    from reason_restore.restorer.network import infer_config
    model = PriorRestorer(infer_config(state))
    model.load_state_dict(state)
    step = ck.get("step", "?") if isinstance(ck, dict) else "?"
    return model.eval(), f"{path.name} (INTERIM training checkpoint, step {step})"


def reference_aware_copy(model: PriorRestorer) -> PriorRestorer:
    if model.ref_encoder is not None:
        return model
    return grown_copy(model, use_reference=True).eval()


def photos(folder: Path, n: int, crop: int) -> list[np.ndarray]:
    from PIL import Image
    out = []
    for p in sorted(folder.glob("*.png"))[:n]:
        with Image.open(p) as img:
            a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        h, w = a.shape[:2]
        y, x = (h - crop) // 2, (w - crop) // 2
        out.append(np.ascontiguousarray(a[y:y + crop, x:x + crop]))
    return out


def make_set(clean_photos: list[np.ndarray], seed: int):
    rng = np.random.default_rng(seed)
    clean, degraded, truths = [], [], []
    for img in clean_photos:
        spec = random_spec(rng, max_types=3)
        deg, truth = degrade(img, spec, seed=int(rng.integers(2**31)))
        clean.append(torch.from_numpy(img).permute(2, 0, 1))
        degraded.append(torch.from_numpy(np.ascontiguousarray(deg)).permute(2, 0, 1))
        truths.append(truth)
    clean = torch.stack(clean).float()
    degraded = torch.stack(degraded).float()
    good = good_reference(clean, np.random.default_rng(seed + 1))
    # Poor reference: another photo of the set (rolled by one), never the same picture.
    poor = torch.roll(clean, 1, 0) if len(clean) > 1 else clean.flip(-1).flip(-2)
    return clean, degraded, truths, good, poor


@torch.no_grad()
def run(model: PriorRestorer, degraded, truths, reference=None) -> torch.Tensor:
    outs = []
    for i in range(degraded.shape[0]):
        prior = encode_prior_batch([truths[i]])
        ref = None if reference is None else reference[i:i + 1]
        outs.append(model(degraded[i:i + 1], prior, reference=ref).clamp(0, 1))
    return torch.cat(outs)


def mean_psnr(x, clean) -> float:
    return float(psnr(x, clean).mean())


def bench(args) -> list[str]:
    lines = []
    if not args.photos.is_dir():
        return [f"No held-out photos at {args.photos}: run `python -m reason_restore.tools.data` "
                f"first. Nothing measured."]
    pics = photos(args.photos, args.n_photos, args.crop)
    clean, degraded, truths, good, poor = make_set(pics, args.seed)
    lines.append(f"{len(pics)} held-out photos ({args.photos.name}), {args.crop}x{args.crop} "
                 f"centre crops, each degraded by a random mixture of up to 3 types (seed "
                 f"{args.seed}); the restorer gets the true diagnosis.\n")
    lines.append("| restorer | no reference | clean reference | poor reference | note |")
    lines.append("|---|---|---|---|---|")
    lines.append(f"| (input, degraded) | {mean_psnr(degraded, clean):.2f} | | | |")
    lines.append(f"| (the reference itself) | | {mean_psnr(good, clean):.2f} | "
                 f"{mean_psnr(poor, clean):.2f} | PSNR of the reference vs the truth |")

    base, note = load_any_restorer(args.restorer)
    if base is None:
        lines.append(f"| shipped restorer | n/a | n/a | n/a | weights {note} |")
    else:
        no_ref = run(base, degraded, truths)
        p = mean_psnr(no_ref, clean)
        has_ref = base.ref_encoder is not None
        if has_ref:
            lines.append(f"| shipped restorer | {p:.2f} | "
                         f"{mean_psnr(run(base, degraded, truths, good), clean):.2f} | "
                         f"{mean_psnr(run(base, degraded, truths, poor), clean):.2f} | {note} |")
        else:
            lines.append(f"| shipped restorer | {p:.2f} | {p:.2f} | {p:.2f} | {note}; no "
                         f"reference-aware blocks: Restore ignores the reference |")
            untrained = reference_aware_copy(base)
            with_good = mean_psnr(run(untrained, degraded, truths, good), clean)
            with_poor = mean_psnr(run(untrained, degraded, truths, poor), clean)
            same = abs(with_good - p) < 1e-3 and abs(with_poor - p) < 1e-3
            verdict = ("identical to the shipped restorer, as expected" if same
                       else "DIFFERS from the shipped restorer (a bug?)")
            lines.append(f"| shipped + untrained reference blocks | "
                         f"{mean_psnr(run(untrained, degraded, truths), clean):.2f} | "
                         f"{with_good:.2f} | {with_poor:.2f} | gates at zero: {verdict} |")
    tuned, tuned_note = load_any_restorer(args.reference_restorer)
    if tuned is None:
        lines.append(f"| fine-tuned reference-aware | not trained yet | not trained yet | "
                     f"not trained yet | tools/train_reference.py has not been run "
                     f"({tuned_note}) |")
    elif tuned.ref_encoder is None:
        lines.append(f"| fine-tuned reference-aware | n/a | n/a | n/a | {tuned_note} has no "
                     f"reference-aware blocks |")
    else:
        lines.append(f"| fine-tuned reference-aware | "
                     f"{mean_psnr(run(tuned, degraded, truths), clean):.2f} | "
                     f"{mean_psnr(run(tuned, degraded, truths, good), clean):.2f} | "
                     f"{mean_psnr(run(tuned, degraded, truths, poor), clean):.2f} | "
                     f"{tuned_note} |")
    lines.append("")
    lines.append("Verdict: a reference can only help once a reference-aware restorer has been "
                 "fine-tuned (docs/diffusion.md); until then the clean and poor columns equal "
                 "the no-reference column by construction." if tuned is None else
                 "Verdict: compare the clean column (should beat no reference) and the poor "
                 "column (should not fall below it).")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--restorer", type=Path, default=DEFAULT_RESTORER)
    ap.add_argument("--reference-restorer", type=Path, default=DEFAULT_REFERENCE_RESTORER)
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--n-photos", type=int, default=6)
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    print(f"# Restorer with vs without a reference\n\n{platform.processor() or platform.machine()}"
          f", torch {torch.__version__}, CPU, {torch.get_num_threads()} threads.\n")
    print("PSNR in dB (RGB, mean over images).\n")
    print("\n".join(bench(args)))
    print(f"\n({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
