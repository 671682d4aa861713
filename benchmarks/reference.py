"""Benchmark: the restorer with vs without a reference image. One command, markdown out:

    python benchmarks/reference.py [--restorer PATH] [--photos DIR] [--n-photos 12]
                                   [--crop 256] [--seed 0 1 2]

Held-out photos (``tools/data.py``'s cache, source ``mate``; never trained on) are centre-
cropped, degraded by a random mixture of up to three taxonomy types (fixed seeds), and restored
with the true diagnosis:

* **no reference** -- the restorer alone;
* **clean reference** -- the ground truth itself (the best a reference can be);
* **good reference** -- the ground truth as a diffusion img2img pass would return it: blurred,
  colour-shifted, misaligned by a few pixels, faintly noisy
  (:func:`tools.train_reference.good_reference`);
* **poor reference** -- an unrelated picture: another held-out photo of the set.

Rows: the network alone (``model(image, prior, reference=...)``: what the reference-aware
blocks learnt), and the pack's Restore path (``Restorer.restore``: the same network behind the
reference trust gate, which blends the reference-aware pass with the plain one by how well the
reference matches the picture); its mean trust per column is shown. A restorer without
reference-aware blocks ignores references (all columns equal). Missing weights or photos are
reported, never downloaded.
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
from reason_restore.restorer.engine import Restorer  # noqa: E402
from reason_restore.restorer.network import PriorRestorer, load_restorer  # noqa: E402
from reason_restore.restorer.prior import encode_prior_batch  # noqa: E402
from reason_restore.tools.train_reference import good_reference  # noqa: E402

WEIGHTS = ROOT / "restorer" / "weights"
DEFAULT_RESTORER = WEIGHTS / "restorer.safetensors"
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


def through_restore(model: PriorRestorer, degraded, truths, reference=None):
    """The pack's path (trust gate included): (outputs, mean trust or None)."""
    r = Restorer(model)
    outs, trust = [], []
    for i in range(degraded.shape[0]):
        ref = None if reference is None else reference[i:i + 1]
        outs.append(r.restore(degraded[i:i + 1], [truths[i]], reference=ref))
        trust += getattr(r, "last_reference_trust", [])
    return torch.cat(outs), (float(np.mean(trust)) if trust else None)


def bench(args) -> list[str]:
    lines = []
    if not args.photos.is_dir():
        return [f"No held-out photos at {args.photos}: run `python -m reason_restore.tools.data` "
                f"first. Nothing measured."]
    pics = photos(args.photos, args.n_photos, args.crop)
    sets = [make_set(pics, seed) for seed in args.seed]  # one random mixture per photo and seed
    clean, degraded, good, poor = (torch.cat([s[k] for s in sets]) for k in (0, 1, 3, 4))
    truths = [t for s in sets for t in s[2]]
    model, note = load_any_restorer(args.restorer)
    lines.append(f"{len(pics)} held-out photos ({args.photos.name}), {args.crop}x{args.crop} "
                 f"centre crops, each degraded by a random mixture of up to 3 types once per "
                 f"seed {args.seed} ({len(truths)} images); the restorer ({note}) gets the "
                 f"true diagnosis.\n")
    refs = {"clean": clean, "good": good, "poor": poor}
    lines.append("| restorer | no reference | clean reference | good reference | "
                 "poor reference |")
    lines.append("|---|---|---|---|---|")
    lines.append(f"| (input, degraded) | {mean_psnr(degraded, clean):.2f} | | | |")
    lines.append("| (the reference itself) | | " + " | ".join(
        f"{mean_psnr(r, clean):.2f}" if k != "clean" else "inf" for k, r in refs.items())
        + " |")
    if model is None:
        lines.append("| restorer | n/a | n/a | n/a | n/a |")
        return lines
    if model.ref_encoder is None:
        p = mean_psnr(run(model, degraded, truths), clean)
        lines.append(f"| {note} (no reference-aware blocks) | {p:.2f} | {p:.2f} | {p:.2f} | "
                     f"{p:.2f} |")
        return lines
    plain = mean_psnr(run(model, degraded, truths), clean)
    cells = [f"{mean_psnr(run(model, degraded, truths, r), clean):.2f}" for r in refs.values()]
    lines.append(f"| network alone | {plain:.2f} | " + " | ".join(cells) + " |")
    gated = []
    for r in refs.values():
        out, trust = through_restore(model, degraded, truths, r)
        gated.append(f"{mean_psnr(out, clean):.2f} (trust {trust:.2f})")
    out, _ = through_restore(model, degraded, truths)
    lines.append(f"| Restore (trust gate) | {mean_psnr(out, clean):.2f} | "
                 + " | ".join(gated) + " |")
    lines.append("")
    lines.append("Targets (docs/diffusion.md): a clean or good reference beats no reference; a "
                 "poor one does not fall below it.")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--restorer", type=Path, default=DEFAULT_RESTORER)
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--n-photos", type=int, default=12)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--seed", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reference.md",
                    help="where the markdown goes (also printed); '-' prints only")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    cmd = " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join([
        "# Restorer with vs without a reference", "",
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, CPU, "
        f"{torch.get_num_threads()} threads.", "",
        f"Command: `python benchmarks/reference.py {cmd}`", "",
        "PSNR in dB (RGB, mean over images).", "",
        *bench(args), "", f"({time.time() - t0:.1f} s)", ""])
    print(text, end="")
    if str(args.out) != "-":
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
