"""Train the prior-conditioned restorer from scratch (resumable).

    python -m reason_restore.tools.data             # once: clean photos + patches
    python -m reason_restore.tools.train_restorer --minutes 30

One all-in-one model for every taxonomy type and their mixtures, conditioned on the
diagnosis. The diagnosis it sees is the ground truth, perturbed (parameters jittered by about
a grid step, so it tolerates the analyzer's errors) and sometimes dropped (so it also restores
blind). Loss: L1 + an L1 on FFT amplitudes (sharpness) weighted up for severe samples.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..reasoner.analyzer import decode, load_analyzer, make_crops, residual_severity
from ..reasoner.diagnosis import Diagnosis, Finding
from ..reasoner.taxonomy import get_type
from ..restorer.network import PriorRestorer, RestorerConfig, save_restorer
from ..restorer.prior import encode_prior_batch, prior_dim, type_slice
from . import training as T

WEIGHTS = Path(__file__).resolve().parents[1] / "restorer" / "weights"
DROP_DIAGNOSIS = 0.2
# Scene-wide degradations: on a 128 px training crop the analyzer's reading of them is not the
# one it makes on a whole photo at run time (8 crops). Conditioning on that crop-level reading
# taught the restorer to ignore haze: 1.5-3.7 dB lost on haze with the true diagnosis
# (training-source photos, --predicted 0.5), so :func:`predicted_prior` keeps these from the
# perturbed truth. (With them kept the option gained 0.05 dB, within noise: not shipped, see
# benchmarks/results/selection.md and the README.)
SCENE_WIDE = ("haze", "low_light")


def perturb(d: Diagnosis, rng: np.random.Generator) -> Diagnosis | None:
    """What the restorer sees at training time: a noisy or missing diagnosis."""
    if rng.random() < DROP_DIAGNOSIS:
        return None
    findings = []
    for f in d.findings:
        t = get_type(f.type)
        params = {k: t.param(k).clip(v + rng.normal(0, 0.5 * t.param(k).step()))
                  for k, v in f.params.items()}
        findings.append(Finding.from_params(f.type, params, f.confidence, f.source))
    return Diagnosis.from_findings(findings)


def restorer_batch(rng: np.random.Generator, patches: np.ndarray, batch: int, crop: int):
    """One training batch on the CPU: clean and degraded [B, 3, crop, crop], the perturbed
    diagnosis encoded as the prior [B, P], and the true overall severity [B]."""
    samples = [T.sample_pair(patches, rng, crop=crop) for _ in range(batch)]
    clean = T.to_chw([c for c, _, _ in samples])
    deg = T.to_chw([d for _, d, _ in samples])
    prior = encode_prior_batch([perturb(tr, rng) for _, _, tr in samples])
    severity = torch.tensor([tr.overall_severity for _, _, tr in samples])
    return clean, deg, prior, severity


def frequency_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    fa, fb = torch.fft.rfft2(a.float(), norm="ortho"), torch.fft.rfft2(b.float(), norm="ortho")
    return (fa.abs() - fb.abs()).abs().mean((1, 2, 3))


def restoration_loss(out, clean, severity) -> torch.Tensor:
    """Per-sample L1 + 0.1 x frequency L1, weighted by (1 + severity): hard samples count
    more, as in the three-tier quality-aware seed."""
    per = (out - clean).abs().mean((1, 2, 3)) + 0.1 * frequency_l1(out, clean)
    return (per * (1.0 + severity)).mean()


def severity_reward(analyzer, out: torch.Tensor) -> torch.Tensor:
    """The seeds' central idea: the frozen analyzer scores the restorer's output, and its
    residual overall severity (differentiable: presence probability x severity of the expected
    parameters) is a loss, so the restorer learns to leave nothing the reasoner can still see.
    Returns [B]."""
    cfg = analyzer.config
    crops = torch.stack([make_crops(o, cfg.crop, 1) for o in out.clamp(0, 1)])
    return residual_severity(analyzer(crops))[1]


@torch.no_grad()
def predicted_prior(analyzer, degraded: torch.Tensor, truth: torch.Tensor | None = None,
                    keep: tuple[str, ...] = SCENE_WIDE) -> torch.Tensor:
    """The prior the restorer meets at run time: the frozen analyzer's diagnosis of each
    degraded image, cropped, decoded and thresholded as ``Reasoner.diagnose`` does. Training on
    it (``train_reference --predicted``) teaches the restorer the analyzer's actual errors,
    which the jitter of :func:`perturb` (about a grid step) does not cover: haze reported on
    photos without it, shot noise read at about half its level, oriented texture read as a
    motion blur. With ``truth`` (the perturbed-truth prior [B, P]) its blind rows (dropped
    diagnoses) stay blind and the types in ``keep`` come from it (see :data:`SCENE_WIDE`).
    Returns [B, P]."""
    cfg = analyzer.config
    crops = torch.stack([make_crops(d, cfg.crop, cfg.max_crops) for d in degraded.float()])
    prior = encode_prior_batch(decode(analyzer(crops)), degraded.device)
    if truth is None:
        return prior
    truth = truth.to(prior)
    for name in keep:
        prior[:, type_slice(name)] = truth[:, type_slice(name)]
    blind = truth[:, 0] == 0
    prior[blind] = truth[blind]
    return prior


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a.clamp(0, 1) - b) ** 2).mean((1, 2, 3)).clamp(min=1e-10)
    return 10 * torch.log10(1.0 / mse)


@torch.no_grad()
def evaluate(model, eval_set, device) -> dict:
    model.eval()
    res = {"input": [], "true_diagnosis": [], "blind": []}
    for i in range(0, len(eval_set), 8):
        chunk = eval_set[i:i + 8]
        clean = T.to_chw([c for c, _, _ in chunk]).to(device)
        deg = T.to_chw([d for _, d, _ in chunk]).to(device)
        prior = encode_prior_batch([t for _, _, t in chunk], device)
        res["input"] += psnr(deg, clean).tolist()
        res["true_diagnosis"] += psnr(model(deg, prior), clean).tolist()
        res["blind"] += psnr(model(deg, prior * 0), clean).tolist()
    model.train()
    return {k + "_psnr": round(float(np.mean(v)), 3) for k, v in res.items()} | {
        "n_images": len(eval_set)}


def main(argv=None):
    ap = T.trainer_arguments(__doc__.splitlines()[0], minutes=30.0, steps=200000, batch=8,
                             lr=1e-3, eval_images=96, out=WEIGHTS)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--enc-blocks", type=int, nargs="+", default=None,
                    help="blocks per encoder level (default: RestorerConfig's)")
    ap.add_argument("--middle-blocks", type=int, default=None)
    ap.add_argument("--dec-blocks", type=int, nargs="+", default=None)
    ap.add_argument("--init", type=Path, default=None,
                    help="start from these restorer weights (e.g. the shipped ones) instead of "
                         "random; the reward stage starts from the stage-1 model")
    ap.add_argument("--reward", type=float, default=0.0,
                    help="weight of the severity reward (stage 2); 0 = stage 1, plain losses")
    ap.add_argument("--analyzer", type=Path, default=None,
                    help="frozen analyzer for the reward (default: the shipped one)")
    args = ap.parse_args(argv)
    device = T.training_device(args)
    train, val = T.load_split("train"), T.load_split("val")
    shape = {k: v for k, v in (("enc_blocks", args.enc_blocks),
                               ("middle_blocks", args.middle_blocks),
                               ("dec_blocks", args.dec_blocks)) if v is not None}
    config = RestorerConfig(width=args.width, prior_dim=prior_dim(), **shape)
    model = PriorRestorer(config).to(device)
    if args.init:
        from ..restorer.network import load_restorer
        model = load_restorer(args.init).train().to(device)
        config = model.config
    critic = None
    if args.reward > 0:
        from ..reasoner.engine import DEFAULT_ANALYZER
        critic = load_analyzer(args.analyzer or DEFAULT_ANALYZER).to(device).eval()
        critic.requires_grad_(False)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4,
                              betas=(0.9, 0.99))
    ckpt = args.out / "restorer.ckpt"
    sched, step, extra = T.start_or_resume(ckpt, model, optim, args.resume)
    eval_set = T.fixed_eval_set(val, args.eval_images, seed=4321, crop=128)
    start, elapsed0 = time.time(), extra["elapsed"]
    budget = args.minutes * 60  # total over all sittings (resumes continue the schedule)
    running = []
    stream = T.batches(partial(restorer_batch, patches=train, batch=args.batch, crop=args.crop),
                       args.seed, step, args.steps, args.workers)
    for clean, deg, prior, severity in stream:
        if elapsed0 + time.time() - start >= budget or T.sitting_over(args, start):
            break
        lr = T.cosine_lr(args.lr, step, args.steps, elapsed0 + time.time() - start, budget)
        for g in optim.param_groups:
            g["lr"] = lr
        clean, deg, prior, severity = (t.to(device) for t in (clean, deg, prior, severity))
        with T.autocast(device):
            out = model(deg, prior)
            loss = restoration_loss(out, clean, severity)
            if critic is not None:
                loss = loss + args.reward * severity_reward(critic, out).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optim.step()
        step += 1
        T.log_loss(running, loss, step, extra, start)
        if step % 250 == 0:
            extra["elapsed"] = elapsed0 + time.time() - start
            T.save_checkpoint(ckpt, model, optim, sched, step, extra)
    extra["elapsed"] = elapsed0 + time.time() - start
    T.save_checkpoint(ckpt, model, optim, sched, step, extra)
    scores = evaluate(model, eval_set, device)
    print(scores, flush=True)
    save_restorer(model, args.out / "restorer.safetensors", {"steps": step})
    T.write_record(args.out / "restorer.json", {
        "network": "PriorRestorer", "config": config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"train": "tools/data.py train split (lomiri, lxqt, plasma)",
                 "held_out": "mate", "manifest_sha256": T.manifest_sha(),
                 "pairs": f"on-the-fly synthesis, {args.crop}px crops, 1-3 degradations, "
                          f"10% clean; diagnosis jittered, dropped {DROP_DIAGNOSIS:.0%}"},
        "loss": "L1 + 0.1 FFT-amplitude L1, weighted by 1 + severity"
                + (f" + {args.reward} x analyzer residual severity (reward stage)"
                   if args.reward > 0 else ""),
        "init": str(args.init) if args.init else None,
        "steps": step, "batch": args.batch, "wall_time_s": round(extra["elapsed"], 1),
        "device": T.device_name(device), "precision": T.precision_name(device), "seed": args.seed,
        "loss_curve": extra["losses"], "held_out_scores": scores,
        "command": "python -m reason_restore.tools.train_restorer " +
                   " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    })
    print(f"wrote {args.out / 'restorer.safetensors'}")


if __name__ == "__main__":
    main()
