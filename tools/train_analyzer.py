"""Train the degradation analyzer from scratch (resumable).

    python -m reason_restore.tools.data             # once: clean photos + patches
    python -m reason_restore.tools.train_analyzer --minutes 30

Loss: BCE on presence + cross-entropy against *two-hot* targets on each parameter grid of the
present types (the two bins around the true value share its mass, so the expectation over
bins recovers the value exactly). Writes ``reasoner/weights/analyzer.safetensors`` and the
training record beside it; ``--resume`` continues from the checkpoint.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..reasoner.analyzer import (AnalyzerConfig, DegradationAnalyzer, decode, load_analyzer,
                                 make_crops, save_analyzer)
from ..reasoner.taxonomy import TYPE_NAMES, get_type, param_slots
from . import training as T

WEIGHTS = Path(__file__).resolve().parents[1] / "reasoner" / "weights"


def two_hot(value: float, grid, circular_period: float | None = None) -> np.ndarray:
    grid = np.asarray(grid, dtype=np.float64)
    target = np.zeros(len(grid), np.float32)
    if circular_period:
        value = value % circular_period
        if value > grid[-1]:  # between the last bin and the first one (wrapped)
            span = circular_period - grid[-1] + grid[0]
            a = (value - grid[-1]) / span
            target[-1], target[0] = 1 - a, a
            return target
    value = min(max(value, grid[0]), grid[-1])
    j = int(np.searchsorted(grid, value, side="right")) - 1
    j = min(max(j, 0), len(grid) - 2)
    a = (value - grid[j]) / (grid[j + 1] - grid[j])
    target[j], target[j + 1] = 1 - a, a
    return target


def targets(truths, device):
    """Presence [B, T], per-slot two-hot targets [B, bins] and masks [B]."""
    presence = torch.zeros(len(truths), len(TYPE_NAMES))
    slot_t, slot_m = [], []
    for type_name, spec in param_slots():
        period = (spec.high - spec.low) if spec.circular else None
        rows, mask = [], []
        for d in truths:
            f = d.finding(type_name)
            relevant = f is not None and not (spec.key == "motion_angle"
                                               and f.params["motion_length"] < 2.0)
            rows.append(two_hot(f.params[spec.key], spec.grid, period) if f is not None
                        else np.zeros(len(spec.grid), np.float32))
            mask.append(1.0 if relevant else 0.0)
        slot_t.append(torch.from_numpy(np.stack(rows)).to(device))
        slot_m.append(torch.tensor(mask, device=device))
    for b, d in enumerate(truths):
        for f in d.findings:
            presence[b, TYPE_NAMES.index(f.type)] = 1.0
    return presence.to(device), slot_t, slot_m


def loss_fn(out, presence, slot_t, slot_m):
    """2 x presence BCE + the mean over parameter slots of the masked two-hot CE.

    Detection comes first (a wrong type misleads the restorer more than a parameter one grid
    step off); summing 14 slot losses instead let the noisy parameter terms drown it."""
    loss = 2.0 * F.binary_cross_entropy_with_logits(out["presence"], presence)
    slot_losses = []
    for logits, tgt, mask in zip(out["params"], slot_t, slot_m):
        ce = -(tgt * logits.log_softmax(-1)).sum(-1)
        slot_losses.append((ce * mask).sum() / mask.sum().clamp(min=1.0))
    return loss + torch.stack(slot_losses).mean()


def analyzer_batch(rng: np.random.Generator, patches: np.ndarray, batch: int):
    """One training batch on the CPU: degraded images [B, 3, S, S] and their targets."""
    samples = [T.sample_pair(patches, rng) for _ in range(batch)]
    return T.to_chw([d for _, d, _ in samples]), targets([tr for _, _, tr in samples], "cpu")


def batch_crops(images, config: AnalyzerConfig) -> torch.Tensor:
    return torch.stack([make_crops(img, config.crop, config.max_crops) for img in images])


@torch.no_grad()
def evaluate(model, eval_set, config, device) -> dict:
    """Per-type F1, severity MAE on true positives + misses, within-one-step fraction."""
    model.eval()
    tp = {n: 0 for n in TYPE_NAMES}
    fp, fn = dict(tp), dict(tp)
    sev_err, within, n_params = [], 0, 0
    for i in range(0, len(eval_set), 16):
        chunk = eval_set[i:i + 16]
        imgs = T.to_chw([d for _, d, _ in chunk]).to(device)
        preds = decode(model(batch_crops(imgs, config)))
        for pred, (_, _, truth) in zip(preds, chunk):
            for n in TYPE_NAMES:
                p, t = pred.finding(n), truth.finding(n)
                tp[n] += bool(p and t)
                fp[n] += bool(p and not t)
                fn[n] += bool(t and not p)
                if t is not None or p is not None:
                    sev_err.append(abs((p.severity if p else 0.0) - (t.severity if t else 0.0)))
                if p and t:
                    for spec in get_type(n).params:
                        if spec.key == "motion_angle" and t.params["motion_length"] < 2:
                            continue
                        err = abs(p.params[spec.key] - t.params[spec.key])
                        if spec.circular:
                            err = min(err, (spec.high - spec.low) - err)
                        within += err <= spec.step() + 1e-6
                        n_params += 1
    f1 = {n: 2 * tp[n] / max(1, 2 * tp[n] + fp[n] + fn[n]) for n in TYPE_NAMES}
    model.train()
    return {"f1": {k: round(v, 4) for k, v in f1.items()},
            "macro_f1": round(float(np.mean(list(f1.values()))), 4),
            "severity_mae": round(float(np.mean(sev_err)) if sev_err else 0.0, 4),
            "within_one_step": round(within / max(1, n_params), 4),
            "n_images": len(eval_set)}


def main(argv=None):
    ap = T.trainer_arguments(__doc__.splitlines()[0], minutes=30.0, steps=100000, batch=16,
                             lr=2e-3, eval_images=240, out=WEIGHTS)
    ap.add_argument("--width", type=int, default=16)
    # The defaults are the shipped analyzer's recipe; --pool every --crops 4 is the wider
    # design tried on 2026-11-23 (better F1, worse on the product path: analyzer.json).
    ap.add_argument("--pool", choices=("every", "ends"), default="ends",
                    help="pool statistics only after the stem and the last stage (default, "
                         "as shipped) or after every stage")
    ap.add_argument("--crops", type=int, default=2,
                    help="128-px crops per 256-px training patch (default 2, as shipped; 4 "
                         "tile the patch, so haze's depth ramp is seen whole; inference uses 8)")
    ap.add_argument("--init", type=Path, default=None,
                    help="fine-tune from these analyzer weights instead of from scratch")
    args = ap.parse_args(argv)
    device = T.training_device(args)
    train, val = T.load_split("train"), T.load_split("val")
    if args.init is not None:
        model = load_analyzer(args.init).to(device).train()
        config = model.config
        config.max_crops = args.crops
    else:
        config = AnalyzerConfig(width=args.width, max_crops=args.crops,
                                pool_every_stage=args.pool == "every")
        model = DegradationAnalyzer(config).to(device)
    # The record of the weights we start from, kept as the earlier stage of the new record.
    init_record = args.init.with_suffix(".json") if args.init is not None else None
    previous = (json.loads(init_record.read_text())
                if init_record and init_record.is_file() else None)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    ckpt = args.out / "analyzer.ckpt"
    sched, step, extra = T.start_or_resume(ckpt, model, optim, args.resume)
    eval_set = T.fixed_eval_set(val, args.eval_images, seed=1234)
    start, elapsed0 = time.time(), extra["elapsed"]
    budget = args.minutes * 60  # total over all sittings (resumes continue the schedule)
    running = []
    stream = T.batches(partial(analyzer_batch, patches=train, batch=args.batch),
                       args.seed, step, args.steps, args.workers)
    for imgs, (presence, slot_t, slot_m) in stream:
        if elapsed0 + time.time() - start >= budget or T.sitting_over(args, start):
            break
        lr = T.cosine_lr(args.lr, step, args.steps, elapsed0 + time.time() - start, budget)
        for g in optim.param_groups:
            g["lr"] = lr
        imgs, presence = imgs.to(device), presence.to(device)
        slot_t, slot_m = [t.to(device) for t in slot_t], [m.to(device) for m in slot_m]
        with T.autocast(device):
            out = model(batch_crops(imgs, config))
            loss = loss_fn(out, presence, slot_t, slot_m)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        step += 1
        T.log_loss(running, loss, step, extra, start, ndigits=4)
        if step % 500 == 0:
            extra["elapsed"] = elapsed0 + time.time() - start
            T.save_checkpoint(ckpt, model, optim, sched, step, extra)
    extra["elapsed"] = elapsed0 + time.time() - start
    T.save_checkpoint(ckpt, model, optim, sched, step, extra)
    scores = evaluate(model, eval_set, config, device)
    print(scores)
    config.max_crops = 8  # inference looks at more of a large image than training did
    save_analyzer(model, args.out / "analyzer.safetensors", {"steps": step})
    record = {
        "network": "DegradationAnalyzer",
        "config": {"width": config.width, "pool_every_stage": config.pool_every_stage,
                   "training_crops": args.crops},
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"train": "tools/data.py train split (lomiri, lxqt, plasma)",
                 "held_out": "mate", "manifest_sha256": T.manifest_sha(),
                 "pairs": "on-the-fly synthesis, 1-3 degradations, 10% clean"},
        "steps": step, "batch": args.batch, "wall_time_s": round(extra["elapsed"], 1),
        "device": T.device_name(device), "precision": T.precision_name(device), "seed": args.seed,
        "loss_curve": extra["losses"], "held_out_scores": scores,
        "command": "python -m reason_restore.tools.train_analyzer " +
                   " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    if args.init is not None:
        record["init"] = str(args.init)
        record["previous_stage"] = previous
    T.write_record(args.out / "analyzer.json", record)
    print(f"wrote {args.out / 'analyzer.safetensors'}")


if __name__ == "__main__":
    main()
