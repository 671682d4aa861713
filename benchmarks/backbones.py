"""Benchmark of the restorer backbones. One command, markdown out:

    python benchmarks/backbones.py [--size 1024] [--repeats 5] [--analyzer PATH]
                                   [--restorer PATH] [--ffdnet PATH] [--photos DIR]

1. **Overhead**: the pack (``BackboneRestorer.restore``: diagnosis conditioning, tiling
   machinery, padding, clamping, CPU accumulation) vs calling the raw backbone -- the spandrel
   descriptor directly -- on the same ``size`` x ``size`` image in the same process. Runs are
   interleaved (raw, pack, raw, pack, ...) and the overhead is the median of the per-pair
   ratios, so a busy machine slows both sides alike. Target: <= 5 % with one tile
   (tile >= image); the row with 512-px tiles adds the cost of recomputing the overlaps.
2. **FFDNet sigma** (when the real weights are available: ``tools/fetch_ffdnet.py``): PSNR of
   FFDNet given the diagnosed sigma vs the true sigma vs a wrong fixed sigma (15, a typical
   hand-set default) on noisy crops of held-out photos (``tools/data.py``'s cache, source
   ``mate``). The diagnosed column needs analyzer weights.
3. **Closed loop vs single pass** on mixed degradations (when analyzer and built-in restorer
   weights are available): PSNR and residual severity.

Missing weights or photos are reported in the output, never downloaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


sys.path.insert(0, str(HERE))  # heldout.py
import heldout  # noqa: E402,F401  (imports the pack, installed or from this checkout)

from reason_restore.reasoner.diagnosis import Diagnosis, Finding  # noqa: E402
from reason_restore.restorer.backbones import (Backbone, BackboneRestorer,  # noqa: E402
                                               closed_loop_restore, load_backbone)
from reason_restore.restorer.backbones.base import noise_sigma  # noqa: E402
from reason_restore.restorer.backbones.loading import backbone_from_state_dict  # noqa: E402
from reason_restore.restorer.metrics import psnr  # noqa: E402

DEFAULT_ANALYZER = ROOT / "reasoner" / "weights" / "analyzer.safetensors"
DEFAULT_RESTORER = ROOT / "restorer" / "weights" / "restorer.safetensors"
DEFAULT_PHOTOS = Path.home() / ".cache" / "reason_restore" / "data" / "photos" / "mate"


# --- 1. overhead ----------------------------------------------------------------------------

def _models():
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.DRUNet import DRUNet
    from spandrel.architectures.SPAN import SPAN
    torch.manual_seed(0)
    return [
        ("Compact x1 (16 feat, 8 conv)", Compact(num_feat=16, num_conv=8, upscale=1), 1, None),
        ("DRUNet (adapter, sigma from diagnosis)",
         DRUNet(in_nc=4, out_nc=3, nc=[16, 32, 64, 128], nb=2), 1,
         Diagnosis.from_findings([Finding.from_params("noise", {"sigma": 25.0})])),
        ("SPAN x2 (16 feat), 512 -> 1024", SPAN(num_in_ch=3, num_out_ch=3,
                                                feature_channels=16, upscale=2), 2, None),
    ]


def _time(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call. CPU time of this process is what the overhead is
    measured on: on a shared machine wall time mostly measures the other processes."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _glue_time(size: int, repeats: int) -> float:
    """CPU seconds of the pack around a network that does nothing (identity): checks,
    conversions, tiling buffers, blending, clamping -- the overhead in isolation."""
    ident = Backbone("identity", "Identity", torch.nn.Identity(), lambda m, x, d, i: x.clone())
    r = BackboneRestorer(ident)
    x = torch.rand(1, 3, size, size)
    r.restore(x, [None], tile=size, overlap=32)
    return min(_time(lambda: r.restore(x, [None], tile=size, overlap=32))[1]
               for _ in range(repeats))


def bench_overhead(size: int, repeats: int) -> list[str]:
    rows = ["| backbone | input | raw spandrel call: CPU s (wall s) | pack, one tile: CPU s "
            "(wall s) | overhead (CPU, best runs) | overhead (CPU, median of pairs) | "
            "pack, 512-px tiles / 32 overlap: CPU s |",
            "|---|---|---|---|---|---|---|"]
    overheads = []
    glue = _glue_time(size, repeats)
    for label, net, scale, diagnosis in _models():
        backbone = backbone_from_state_dict(net.state_dict(), label)
        desc = backbone.extra["spandrel"]
        side = size // scale
        x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
        r = BackboneRestorer(backbone)
        if backbone.conditioning == "noise_map":
            sigma = noise_sigma(diagnosis) / 255.0

            @torch.inference_mode()
            def raw():
                return desc.model(torch.cat([x, torch.full_like(x[:, :1], sigma)], 1)
                                  ).clamp_(0, 1)
        else:
            def raw():
                return desc(x)

        def pack():
            return r.restore(x, [diagnosis], upscale=float(scale), tile=max(side, 64),
                             overlap=32)

        def tiled():
            return r.restore(x, [diagnosis], upscale=float(scale), tile=512, overlap=32)
        assert torch.allclose(raw().float(), pack(), atol=1e-4), label  # same result
        ratios, t_raw, t_pack = [], [], []
        for _ in range(repeats):
            a, b = _time(raw), _time(pack)
            t_raw.append(a)
            t_pack.append(b)
            ratios.append(b[1] / a[1])
        t_tiled = min(_time(tiled)[1] for _ in range(max(1, repeats // 2)))
        best = min(t[1] for t in t_pack) / min(t[1] for t in t_raw) - 1.0
        over = statistics.median(ratios) - 1.0
        overheads.append(best)

        def med(ts, k):
            return statistics.median(t[k] for t in ts)
        rows.append(f"| {label} | {side}x{side} | {med(t_raw, 1):.3f} ({med(t_raw, 0):.3f}) | "
                    f"{med(t_pack, 1):.3f} ({med(t_pack, 0):.3f}) | {best * 100:+.1f} % | "
                    f"{over * 100:+.1f} % | {t_tiled:.3f} |")
    rows.append("")
    rows.append(f"Worst overhead with one tile (best runs): {max(overheads) * 100:+.1f} % "
                f"(target <= 5 %). {repeats} interleaved raw/pack pairs, process CPU time, "
                f"{torch.get_num_threads()} thread(s); 'best runs' compares the fastest of each "
                f"side, the least disturbed by other processes. The pack's glue alone (identity "
                f"network, {size}x{size}): {glue * 1000:.0f} ms CPU.")
    rows.append("")
    rows.append("The 512-px column runs 3x3 tiles of 512 (the tiler needs 3 per axis to cover "
                "1024 with a 32-px overlap), i.e. 2.25x the pixels: pick a tile >= the image "
                "(or >= 544) when memory allows.")
    return rows


# --- 2. FFDNet sigma --------------------------------------------------------------------------

def _photos(folder: Path, n: int, crop: int) -> list[torch.Tensor]:
    from PIL import Image
    files = sorted(p for p in folder.glob("*.png"))[:n]
    out = []
    for p in files:
        with Image.open(p) as img:
            a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        h, w = a.shape[:2]
        y, x = (h - crop) // 2, (w - crop) // 2
        out.append(torch.from_numpy(a[y:y + crop, x:x + crop]).permute(2, 0, 1)[None]
                   .contiguous())
    return out


def _reasoner(path: Path):
    from reason_restore.reasoner.engine import load_reasoner
    return load_reasoner(path) if path.is_file() else None


def bench_ffdnet(ffdnet: Path, photos: Path, analyzer: Path, n: int, crop: int) -> list[str]:
    if not ffdnet.is_file():
        return [f"FFDNet weights not found at {ffdnet}: run `python -m "
                f"reason_restore.tools.fetch_ffdnet` (skipped)."]
    if not photos.is_dir() or not any(photos.glob("*.png")):
        return [f"No held-out photos in {photos}: run `python -m reason_restore.tools.data` "
                f"(skipped)."]
    reasoner = _reasoner(analyzer)
    r = BackboneRestorer(load_backbone(ffdnet))
    images = _photos(photos, n, crop)
    fixed = 15.0
    rows = [f"FFDNet colour weights, {len(images)} held-out photos ({photos.name}), centre "
            f"{crop}x{crop} crops, additive Gaussian noise; PSNR in dB (mean over photos).",
            "",
            "| true sigma | noisy input | FFDNet, true sigma | FFDNet, diagnosed sigma "
            f"(diagnosed sigma per photo) | FFDNet, fixed sigma {fixed:g} |",
            "|---|---|---|---|---|"]

    def diag_sigma(s):
        return Diagnosis.from_findings([Finding.from_params("noise", {"sigma": s})])
    for true in (10.0, 25.0, 50.0):
        noisy_p, true_p, diag_p, fixed_p, diagnosed = [], [], [], [], []
        for i, clean in enumerate(images):
            g = torch.Generator().manual_seed(1000 + i)
            noisy = (clean + torch.randn(clean.shape, generator=g) * true / 255).clamp(0, 1)
            noisy_p.append(float(psnr(noisy, clean)))
            true_p.append(float(psnr(r.restore(noisy, [diag_sigma(true)]), clean)))
            fixed_p.append(float(psnr(r.restore(noisy, [diag_sigma(fixed)]), clean)))
            if reasoner is not None:
                d = reasoner.diagnose(noisy)[0]
                diagnosed.append(noise_sigma(d))
                diag_p.append(float(psnr(r.restore(noisy, [d]), clean)))
        dcol = (f"{statistics.mean(diag_p):.2f} ({', '.join(f'{v:.0f}' for v in diagnosed)})"
                if diag_p else "n/a")
        rows.append(f"| {true:g} | {statistics.mean(noisy_p):.2f} | "
                    f"{statistics.mean(true_p):.2f} | {dcol} | {statistics.mean(fixed_p):.2f} |")
    if reasoner is None:
        rows += ["", f"Diagnosed column: analyzer weights not found at {analyzer} (they are "
                     f"being trained); rerun with --analyzer PATH."]
    else:
        rows += ["", f"Analyzer: {analyzer}."]
    return rows


# --- 3. closed loop vs single pass --------------------------------------------------------------

def bench_closed_loop(analyzer: Path, restorer: Path, ffdnet: Path, photos: Path, n: int,
                      crop: int) -> list[str]:
    missing = [str(p) for p in (analyzer, restorer) if not p.is_file()]
    if missing:
        return [f"Skipped: weights not found ({', '.join(missing)}); they are being trained. "
                f"Rerun with --analyzer / --restorer."]
    if not photos.is_dir() or not any(photos.glob("*.png")):
        return [f"Skipped: no held-out photos in {photos}."]
    from reason_restore.reasoner.synthesis import degrade
    from reason_restore.restorer.engine import load_default_restorer
    reasoner = _reasoner(analyzer)
    builtin = load_default_restorer(restorer)
    wired = [builtin] + ([BackboneRestorer(load_backbone(ffdnet))] if ffdnet.is_file() else [])
    specs = ["noise: sigma=25; jpeg: quality=30", "blur: width=1.5; noise: sigma=15",
             "low_light: exposure=0.4; noise: sigma=20"]
    rows = [f"Built-in restorer {restorer.name}" + (" + FFDNet" if len(wired) > 1 else "")
            + f"; analyzer {analyzer.name}; {len(_photos(photos, n, crop))} photos, {crop}px; "
            f"closed loop: threshold 0.05, max 3 steps, best of 2; severity = the analyzer's "
            f"residual severity (lower is better), PSNR against the clean photo.",
            "",
            "| degradation | input PSNR / severity | single pass PSNR / severity | closed loop "
            "PSNR / severity | accepted steps per photo (first photo's path) |",
            "|---|---|---|---|---|"]
    for spec in specs:
        cols = {"in": [], "one": [], "loop": []}
        paths = []
        for i, clean in enumerate(_photos(photos, n, crop)):
            arr, _ = degrade(clean[0].permute(1, 2, 0).numpy(), spec, seed=i)
            x = torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()
            d = reasoner.diagnose(x)[0]
            one = builtin.restore(x, [d])
            loop, rep = closed_loop_restore(x, reasoner, wired, threshold=0.05, max_steps=3,
                                            best_of_n=2)
            for key, img in (("in", x), ("one", one), ("loop", loop)):
                cols[key].append((float(psnr(img, clean)), float(reasoner.score(img)[1][0])))
            paths.append((len(rep.path), " -> ".join(rep.path) or "none"))

        def fmt(key):
            p = statistics.mean(v[0] for v in cols[key])
            s = statistics.mean(v[1] for v in cols[key])
            return f"{p:.2f} / {s:.3f}"
        steps = ", ".join(str(n) for n, _ in paths)
        rows.append(f"| {spec} | {fmt('in')} | {fmt('one')} | {fmt('loop')} | {steps} "
                    f"({paths[0][1]}) |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--analyzer", type=Path, default=DEFAULT_ANALYZER)
    ap.add_argument("--restorer", type=Path, default=DEFAULT_RESTORER)
    from reason_restore.tools.fetch_ffdnet import DEFAULT_CACHE, WEIGHTS_NAME
    ap.add_argument("--ffdnet", type=Path, default=Path(os.environ.get(
        "REASON_RESTORE_FFDNET", DEFAULT_CACHE / WEIGHTS_NAME)))
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--n-photos", type=int, default=4)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: CPU time then equals the work done)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# Restorer backbones benchmark\n\n{platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads.\n")
    if not args.skip_overhead:
        print(f"## Overhead vs the raw backbone ({args.size}x{args.size} output)\n")
        print("\n".join(bench_overhead(args.size, args.repeats)) + "\n")
    print("## FFDNet: diagnosed vs true vs fixed sigma\n")
    print("\n".join(bench_ffdnet(args.ffdnet, args.photos, args.analyzer, args.n_photos,
                                 args.crop)) + "\n")
    print("## Closed loop vs single pass (mixed degradations)\n")
    print("\n".join(bench_closed_loop(args.analyzer, args.restorer, args.ffdnet, args.photos,
                                      args.n_photos, args.crop)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
