"""Fine-tune the restorer's reference-aware blocks from the shipped restorer (resumable).

    python -m reason_restore.tools.data                 # once: clean photos + patches
    python -m reason_restore.tools.train_reference --unfreeze --lr 1e-3 --base-lr 1e-4

The shipped restorer came out of this script (its record, restorer/weights/restorer.json,
lists every stage and command). docs/diffusion.md says how to judge a run.

What it does
------------
* Builds a :class:`PriorRestorer` with ``use_reference=True`` and copies every weight of the
  shipped restorer into it (``--init``). The new reference encoder and fusion blocks start as
  the identity (their gates are zero), so step 0 reproduces the shipped restorer exactly.
* Trains on (degraded, clean, reference) triples synthesised on the fly, where the reference
  is, per sample:

  - a **good reference** (``--p-good``): the ground truth degraded the way a diffusion
    img2img pass degrades it -- slightly blurred, colour-shifted, misaligned by a few pixels,
    with faint noise (:func:`good_reference`). The blocks must learn to take detail from it;
  - a **poor reference** (``--p-poor``): an unrelated photo (:func:`poor_reference`). The
    blocks must learn to ignore it (the "does not hurt" half of the acceptance);
  - and, with ``--unfreeze``, with probability ``--p-none`` a whole batch runs without a
    reference, so the no-reference path stays as good as the shipped one (frozen, it is
    the shipped one exactly).

* By default only the reference blocks train (``ref_encoder``, ``ref_fusions``); with
  ``--unfreeze`` the rest fine-tunes too at ``--base-lr``.
* Loss: :func:`.train_restorer.restoration_loss` (L1 + FFT-amplitude L1, severity-weighted).
* Evaluation (fixed held-out set): PSNR without a reference, with a good one, with a poor
  one; written to the training record next to the weights.

Writes ``<out>/restorer_reference.safetensors`` (+ ``.json`` record, + a resumable
``restorer_reference.ckpt``). ``--patches FILE.npy`` replaces the photo cache (uint8
``[N, S, S, 3]``), which is how the test runs two steps on tiny data.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..restorer.network import PriorRestorer, grown_copy, load_restorer, save_restorer
from ..restorer.prior import encode_prior_batch
from . import training as T
from .train_restorer import (predicted_prior, psnr, restorer_batch, restoration_loss,
                             severity_reward)

WEIGHTS = Path(__file__).resolve().parents[1] / "restorer" / "weights"
OUT_NAME = "restorer_reference"


# --- references -------------------------------------------------------------------------------

def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur (``sigma`` [B]), separable, reflect-padded."""
    radius = 4
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)  # [B, K]
    b, c, h, w = x.shape
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    y = y.reshape(1, b * c, h + 2 * radius, w + 2 * radius)
    kh = k.repeat_interleave(c, 0)[:, None, None, :]  # [B*C, 1, 1, K]
    y = F.conv2d(y, kh, groups=b * c)
    y = F.conv2d(y, kh.transpose(-1, -2), groups=b * c)
    return y.reshape(b, c, h, w)


def good_reference(clean: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """What a decent diffusion reference looks like next to the truth: blurred (sigma
    0.3-1.5 px), colour-shifted (gain +-8 %, offset +-0.04 per channel), misaligned (up to
    3 px) and faintly noisy (std 0.01)."""
    b = clean.shape[0]
    dev, dt = clean.device, clean.dtype
    sigma = torch.tensor(rng.uniform(0.3, 1.5, b), dtype=dt, device=dev)
    x = _gaussian_blur(clean, sigma)
    gain = torch.tensor(rng.uniform(0.92, 1.08, (b, 3, 1, 1)), dtype=dt, device=dev)
    offset = torch.tensor(rng.uniform(-0.04, 0.04, (b, 3, 1, 1)), dtype=dt, device=dev)
    x = x * gain + offset
    shifted = []
    for i in range(b):
        dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
        p = F.pad(x[i:i + 1], (3, 3, 3, 3), mode="replicate")
        h, w = x.shape[-2:]
        shifted.append(p[..., 3 + dy:3 + dy + h, 3 + dx:3 + dx + w])
    x = torch.cat(shifted)
    noise = torch.from_numpy(rng.normal(0, 0.01, x.shape).astype(np.float32)).to(dev, dt)
    return (x + noise).clamp(0, 1)


def poor_reference(patches: np.ndarray, rng: np.random.Generator, like: torch.Tensor):
    """Unrelated photos (random patches) of ``like``'s size: a reference that must be ignored."""
    b, _, h, w = like.shape
    out = []
    for _ in range(b):
        p = T.augment(patches[int(rng.integers(len(patches)))], rng)
        y, x = (int(rng.integers(0, max(1, s - t + 1))) for s, t in zip(p.shape[:2], (h, w)))
        crop = p[y:y + h, x:x + w].astype(np.float32) / 255.0
        out.append(torch.from_numpy(crop).permute(2, 0, 1))
    ref = torch.stack(out).to(like.device, like.dtype)
    if ref.shape[-2:] != like.shape[-2:]:
        ref = F.interpolate(ref, size=(h, w), mode="bilinear", align_corners=False)
    return ref


def mixed_references(clean, patches, rng, p_good: float, p_poor: float):
    """Per sample: a good reference with probability p_good / (p_good + p_poor), else poor."""
    good = good_reference(clean, rng)
    poor = poor_reference(patches, rng, clean)
    pick = torch.from_numpy(rng.random(clean.shape[0]) < p_good / max(1e-9, p_good + p_poor))
    return torch.where(pick.to(clean.device)[:, None, None, None], good, poor)


def reference_batch(rng: np.random.Generator, patches: np.ndarray, batch: int, crop: int,
                    p_good: float, p_poor: float, p_none: float):
    """:func:`.train_restorer.restorer_batch` plus references (None: a batch without one)."""
    clean, deg, prior, severity = restorer_batch(rng, patches, batch, crop)
    reference = None
    if rng.random() >= p_none:
        reference = mixed_references(clean, patches, rng, p_good, p_poor)
    return clean, deg, prior, severity, reference


# --- model ------------------------------------------------------------------------------------

def reference_model_from(init: Path) -> PriorRestorer:
    """A reference-aware copy of the restorer at ``init`` (identical outputs at step 0)."""
    base = load_restorer(init)
    return base if base.ref_encoder is not None else grown_copy(base, use_reference=True)


def reference_parameters(model: PriorRestorer):
    return [p for n, p in model.named_parameters()
            if n.startswith(("ref_encoder.", "ref_fusions."))]


@torch.no_grad()
def evaluate(model, eval_set, patches, device, seed: int = 1234) -> dict:
    model.eval()
    rng = np.random.default_rng(seed)
    res = {"no_reference": [], "good_reference": [], "poor_reference": []}
    for i in range(0, len(eval_set), 8):
        chunk = eval_set[i:i + 8]
        clean = T.to_chw([c for c, _, _ in chunk]).to(device)
        deg = T.to_chw([d for _, d, _ in chunk]).to(device)
        prior = encode_prior_batch([t for _, _, t in chunk], device)
        res["no_reference"] += psnr(model(deg, prior), clean).tolist()
        res["good_reference"] += psnr(model(deg, prior, reference=good_reference(clean, rng)),
                                      clean).tolist()
        res["poor_reference"] += psnr(model(deg, prior, reference=poor_reference(
            patches, rng, clean)), clean).tolist()
    model.train()
    return {k + "_psnr": round(float(np.mean(v)), 3) for k, v in res.items()} | {
        "n_images": len(eval_set)}


def main(argv=None):
    ap = T.trainer_arguments(__doc__.splitlines()[0], minutes=120.0, steps=100000, batch=8,
                             lr=5e-4, eval_images=64, out=WEIGHTS, lr_help="reference blocks")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--base-lr", type=float, default=5e-5, help="the rest, with --unfreeze")
    ap.add_argument("--unfreeze", action="store_true")
    ap.add_argument("--p-good", type=float, default=0.5)
    ap.add_argument("--p-poor", type=float, default=0.3)
    ap.add_argument("--p-none", type=float, default=0.2)
    ap.add_argument("--init", type=Path, default=WEIGHTS / "restorer.safetensors",
                    help="the restorer to start from (the shipped one by default)")
    ap.add_argument("--patches", type=Path, default=None,
                    help="uint8 [N, S, S, 3] .npy used for both train and eval (tests)")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--reward", type=float, default=0.0,
                    help="weight of the severity reward (the frozen analyzer's residual "
                         "severity of the output); 0 = plain losses")
    ap.add_argument("--analyzer", type=Path, default=None,
                    help="frozen analyzer for the reward and --predicted (default: the "
                         "shipped one)")
    ap.add_argument("--predicted", type=float, default=0.0,
                    help="fraction of batches conditioned on the frozen analyzer's predicted "
                         "diagnosis instead of the perturbed true one (0 = never)")
    ap.add_argument("--out-name", default=OUT_NAME, help="file stem of the outputs")
    args = ap.parse_args(argv)
    if not args.init.is_file():
        raise SystemExit(f"--init {args.init}: no restorer weights to start from; train the "
                         f"restorer first (tools/train_restorer.py) or pass --init")
    device = T.training_device(args)
    if args.patches is not None:
        train = val = np.load(args.patches)
    else:
        train, val = T.load_split("train"), T.load_split("val")
    model = reference_model_from(args.init).to(device).train()
    ref_params = reference_parameters(model)
    groups = [{"params": ref_params, "lr": args.lr}]
    if args.unfreeze:
        ref_ids = {id(p) for p in ref_params}
        groups.append({"params": [p for p in model.parameters() if id(p) not in ref_ids],
                       "lr": args.base_lr})
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in ref_params:
            p.requires_grad_(True)
    base_lrs = [g["lr"] for g in groups]
    optim = torch.optim.AdamW(groups, weight_decay=1e-4, betas=(0.9, 0.99))
    critic = None
    if args.reward > 0 or args.predicted > 0:
        from ..reasoner.analyzer import load_analyzer
        from ..reasoner.engine import DEFAULT_ANALYZER
        critic = load_analyzer(args.analyzer or DEFAULT_ANALYZER).to(device).eval()
        critic.requires_grad_(False)
    ckpt = args.out / f"{args.out_name}.ckpt"
    sched, step, extra = T.start_or_resume(ckpt, model, optim, args.resume)
    crop = min(args.crop, train.shape[1])
    eval_set = T.fixed_eval_set(val, args.eval_images, seed=4321, crop=min(128, val.shape[1]))
    first_eval = evaluate(model, eval_set, val, device)
    print(f"step {step}: {first_eval}")
    start, elapsed0 = time.time(), extra["elapsed"]
    budget = args.minutes * 60
    running = []
    # A batch without a reference only teaches the base network, which is frozen unless
    # --unfreeze (and with it frozen such a batch has nothing to differentiate).
    make = partial(reference_batch, patches=train, batch=args.batch, crop=crop,
                   p_good=args.p_good, p_poor=args.p_poor,
                   p_none=args.p_none if args.unfreeze else 0.0)
    for clean, deg, prior, severity, reference in T.batches(make, args.seed, step, args.steps,
                                                            args.workers):
        if elapsed0 + time.time() - start >= budget:
            break
        for g, base in zip(optim.param_groups, base_lrs):
            g["lr"] = T.cosine_lr(base, step, args.steps, elapsed0 + time.time() - start, budget)
        clean, deg, prior, severity = (t.to(device) for t in (clean, deg, prior, severity))
        reference = reference.to(device) if reference is not None else None
        # Its own generator per step (not the batch's), so a resumed run decides the same.
        if args.predicted > 0 and np.random.default_rng([args.seed, step, 1]).random() < \
                args.predicted:
            prior = predicted_prior(critic, deg, prior)
        with T.autocast(device):
            out = model(deg, prior, reference=reference)
            loss = restoration_loss(out, clean, severity)
            if args.reward > 0:
                loss = loss + args.reward * severity_reward(critic, out).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optim.step()
        step += 1
        T.log_loss(running, loss, step, extra, start)
        if step % args.eval_every == 0:
            extra["elapsed"] = elapsed0 + time.time() - start
            T.save_checkpoint(ckpt, model, optim, sched, step, extra)
    extra["elapsed"] = elapsed0 + time.time() - start
    T.save_checkpoint(ckpt, model, optim, sched, step, extra)
    final = evaluate(model, eval_set, val, device)
    print(f"step {step}: {final}")
    record = {"steps": step, "elapsed_s": round(extra["elapsed"], 1), "init": str(args.init),
              "device": T.device_name(device),
              "precision": T.precision_name(device), "unfreeze": args.unfreeze,
              "p_good": args.p_good, "p_poor": args.p_poor, "p_none": args.p_none,
              "reward": args.reward, "predicted": args.predicted, "seed": args.seed,
              "batch": args.batch, "crop": crop,
              "eval_before": first_eval, "eval_after": final,
              "losses": extra["losses"][-20:]}
    save_restorer(model.eval().cpu(), args.out / f"{args.out_name}.safetensors",
                  metadata={"training": record})
    T.write_record(args.out / f"{args.out_name}.json", record)
    if not all(math.isfinite(v) for v in (final["no_reference_psnr"],)):
        raise SystemExit("training diverged (non-finite PSNR)")
    return record


if __name__ == "__main__":
    main()
