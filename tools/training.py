"""What both trainers share: on-the-fly degraded/clean pairs, checkpoints, training records.

Pairs are synthesised on the fly from the cached clean patches (``tools/data.py``). Batch
number ``step`` is drawn from a generator seeded by ``(seed, step)`` alone
(:func:`batches`), so no pair is seen twice, a run is reproducible from its seed, a resumed run
continues the same stream, and the batches are the same however many worker processes
synthesise them (``--workers``: on a GPU machine the CPU-side synthesis is the bottleneck).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..reasoner.synthesis import degrade, quantise, random_spec
from . import data as data_mod

CLEAN_FRACTION = 0.1  # some clean inputs, so "nothing to fix" is a learnt answer


def augment(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    patch = np.rot90(patch, int(rng.integers(4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch)


def sample_pair(patches: np.ndarray, rng: np.random.Generator, crop: int | None = None,
                max_types: int = 3, clean_fraction: float = CLEAN_FRACTION):
    """One (clean, degraded, ground-truth diagnosis) triple, float32 HWC in [0, 1]."""
    patch = augment(patches[int(rng.integers(len(patches)))], rng)
    if crop and crop < patch.shape[0]:
        y, x = rng.integers(0, patch.shape[0] - crop + 1, size=2)
        patch = patch[y:y + crop, x:x + crop]
    clean = patch.astype(np.float32) / 255.0
    spec = [] if rng.random() < clean_fraction else random_spec(rng, max_types=max_types)
    degraded, truth = degrade(clean, spec, seed=int(rng.integers(2**31)))
    # Every image a user has is stored in 8 bits. Without this rounding the analyzer learnt
    # "blurred = high-pass exactly zero", and the quantisation floor of a real 8-bit image
    # hid blur and low resolution from it (presence 0.68 -> 0.32 on held-out moderate blur).
    return clean, quantise(degraded), truth


class _SeededBatches(Dataset):
    """Item ``step`` = ``make_batch(np.random.default_rng([seed, step]))``."""

    def __init__(self, make_batch, seed: int):
        self.make_batch, self.seed = make_batch, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int):
        return self.make_batch(np.random.default_rng([self.seed, int(step)]))


def _one_thread(_worker_id: int) -> None:
    # Each worker synthesises one batch at a time; torch's own threads would only contend
    # with the other workers (and the synthesiser convolves with torch).
    torch.set_num_threads(1)


def batches(make_batch, seed: int, start: int, stop: int, workers: int = 0):
    """Batches ``start, start+1, ... stop-1``, each made by ``make_batch(rng)`` from a generator
    seeded by ``(seed, step)``; ``workers`` > 0 makes them in that many processes, ahead of
    the training loop, in the same order and with the same contents as ``workers=0``."""
    dataset = _SeededBatches(make_batch, seed)
    if workers <= 0:
        return (dataset[s] for s in range(start, stop))
    return iter(DataLoader(dataset, batch_size=None, sampler=range(start, stop),
                           num_workers=workers, worker_init_fn=_one_thread, prefetch_factor=4))


def log_loss(running: list, loss: torch.Tensor, step: int, extra: dict, start: float,
             every: int = 50, ndigits: int = 5) -> None:
    """Keep ``loss`` in ``running`` (no ``.item()`` per step: it would wait for the GPU); every
    ``every`` steps append the mean to ``extra["losses"]``, print it and empty ``running``."""
    running.append(loss.detach())
    if step % every == 0:
        mean = float(torch.stack(running).mean())
        extra["losses"].append([step, round(mean, ndigits)])
        print(f"step {step} loss {mean:.4f} ({time.time() - start:.0f} s)", flush=True)
        running.clear()


def to_chw(batch: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy())


def fixed_eval_set(patches: np.ndarray, n: int, seed: int, crop: int | None = None,
                   max_types: int = 3):
    rng = np.random.default_rng(seed)
    return [sample_pair(patches, rng, crop, max_types) for _ in range(n)]


def load_split(split: str, size: int = 256) -> np.ndarray:
    return data_mod.load_patches(split, size=size)


def manifest_sha() -> str:
    manifest = json.loads((data_mod.default_cache() / "manifest.json").read_text())
    return manifest.get("manifest_sha256", "")


def save_checkpoint(path: Path, model, optim, sched, step: int, extra: dict) -> None:
    # A training checkpoint is ours and never shipped; still loaded with weights_only below.
    # No data-RNG state: batch ``step`` is seeded by (seed, step) alone (:func:`batches`).
    torch.save({"model": model.state_dict(), "optim": optim.state_dict(),
                "sched": sched.state_dict(), "step": step, "extra": json.dumps(extra)}, path)


def load_checkpoint(path: Path, model, optim, sched) -> tuple[int, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ck["model"])
    optim.load_state_dict(ck["optim"])
    sched.load_state_dict(ck["sched"])
    return int(ck["step"]), json.loads(ck["extra"])


def trainer_arguments(description: str, *, minutes: float, steps: int, batch: int,
                      lr: float, eval_images: int, out: Path,
                      lr_help: str = "peak learning rate (cosine schedule)"):
    """The options every trainer shares (budget, batch, lr, seed, evaluation size, output,
    resume, threads); each trainer adds its own to the returned parser."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--minutes", type=float, default=minutes,
                    help="wall-clock budget, total over resumed sittings")
    ap.add_argument("--steps", type=int, default=steps, help="max steps")
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--lr", type=float, default=lr, help=lr_help)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-images", type=int, default=eval_images)
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sitting", type=float, default=None, metavar="MINUTES",
                    help="end this sitting after MINUTES (checkpoint and weights written) "
                         "while the schedule still spans --minutes; --resume continues it")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes synthesising training pairs ahead of the loop (0: inline)")
    return ap


def sitting_over(args, start: float) -> bool:
    """True once this sitting has used its ``--sitting`` minutes (never without the option)."""
    return args.sitting is not None and time.time() - start >= args.sitting * 60


def training_device(args) -> torch.device:
    """Apply ``--threads`` and pick the device: the GPU when there is one."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def start_or_resume(ckpt: Path, model, optim, resume: bool):
    """What every trainer does before its loop: a constant scheduler (the lr is set by hand
    each step from :func:`cosine_lr`), the output folder, and either a fresh start or the
    state of ``ckpt`` (model, optimiser, step, elapsed time, losses).
    Returns ``(sched, step, extra)``."""
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: 1.0)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    step, extra = 0, {"elapsed": 0.0, "losses": []}
    if resume and ckpt.exists():
        step, extra = load_checkpoint(ckpt, model, optim, sched)
        print(f"resumed at step {step}")
    return sched, step, extra


def cosine_lr(base: float, step: int, max_steps: int, elapsed: float, budget: float,
              warmup: int = 100) -> float:
    """Cosine decay over whichever budget runs out first, steps or wall-clock seconds, so a
    time-boxed run on a busy CPU still ends at a low learning rate (and resumes continue the
    same curve, since ``elapsed`` includes earlier sittings)."""
    progress = min(1.0, max(step / max(1, max_steps), elapsed / max(1e-6, budget)))
    warm = min(1.0, (step + 1) / warmup)
    return max(base * warm * 0.5 * (1 + math.cos(math.pi * progress)), base * 0.02)


def autocast(device: torch.device):
    """Mixed precision where it pays: bfloat16 autocast on a GPU (no loss scaling needed,
    unlike float16); plain float32 on the CPU, where bfloat16 convolutions are slower."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_name(device: torch.device) -> str:
    return "bfloat16 autocast" if device.type == "cuda" else "float32"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_record(path: Path, record: dict) -> None:
    record = {"written": time.strftime("%Y-%m-%d %H:%M:%S"), **record}
    path.write_text(json.dumps(record, indent=2) + "\n")
