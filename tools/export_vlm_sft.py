"""Export a supervised fine-tuning set for a VLM reasoner from the degradation synthesiser.

    python -m reason_restore.tools.data                       # once: clean photos + patches
    python -m reason_restore.tools.export_vlm_sft --n 5000 --out vlm_sft --seed 0

Each example is a clean patch (``tools/data.py``'s cache, ``--split`` train by default)
degraded by a random mixture (``reasoner.synthesis.random_spec`` + ``degrade``; a
``--clean-fraction`` stays clean so the model also learns to say "nothing"). Written::

    <out>/images/000000.png ...     the degraded images
    <out>/train.jsonl               one chat example per line (below)
    <out>/meta.json                 seed, counts, split, prompt hash, taxonomy

A line holds ``messages`` (system, user = image placeholder + the prompt the VLM reasoner
sends, assistant = the ground-truth answer in exactly the JSON format that prompt asks for:
reasoning, findings with params / severity / tier / factors, scene, objects), ``images`` (the
image path, relative to the jsonl), ``ground_truth`` (the full diagnosis, what the GRPO
rewards in ``reasoner/vlm/rewards.py`` compare against) and ``spec``. This is the
conversational format TRL's SFT trainer and most VLM fine-tuning scripts read; for GRPO take
``prompt = messages[:-1]``.

Scene and object words of the answers come from the offline ImageNet tagger
(``reasoner/vlm/semantics.py``) run on the *clean* patch when its optional weights package is
installed (``--no-semantics`` leaves them empty); factors are phrased from the parameters.
Same ``--seed``, same set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..reasoner.diagnosis import Diagnosis
from ..reasoner.synthesis import degrade, random_spec
from ..reasoner.taxonomy import TYPE_NAMES, get_type
from ..reasoner.vlm.prompt import SYSTEM_PROMPT, build_prompt, target_answer

__all__ = ["export_sft", "example_answer", "main"]


def _observation(findings, scene: str, objects) -> str:
    subject = scene or "a photograph"
    if objects:
        subject += " (" + ", ".join(list(objects)[:3]) + ")"
    if not findings:
        return f"The picture shows {subject}; edges, flat areas and colours look clean."
    seen = "; ".join(get_type(f.type).artefact_words for f in findings)
    return f"The picture shows {subject}. Visible: {seen}."


def example_answer(truth: Diagnosis, scene: str = "", objects=()) -> tuple[Diagnosis, str]:
    """(ground-truth diagnosis with semantics, assistant answer text) for one example."""
    sources = dict(truth.sources)
    if scene:
        sources["scene"] = "classifier"
    if objects:
        sources["objects"] = "classifier"
    d = Diagnosis.from_findings(truth.findings, scene=scene, objects=list(objects),
                                sources=sources,
                                observation=_observation(truth.findings, scene, objects))
    return d, target_answer(d)


def _tagger(enabled: bool, log):
    if not enabled:
        return None
    from ..reasoner.vlm.semantics import INSTALL_HINT, load_semantic_tagger
    tagger = load_semantic_tagger()
    if tagger is None:
        log(f"semantics: off (optional ImageNet weights not installed: {INSTALL_HINT})")
    return tagger


def export_sft(out, n: int, seed: int = 0, patches: np.ndarray | None = None,
               split: str = "train", size: int = 256, cache=None, max_types: int = 3,
               clean_fraction: float = 0.1, semantics: bool = True, log=print) -> dict:
    """Write ``n`` examples under ``out`` (see the module doc); returns the meta record.
    ``patches`` (uint8 [N, S, S, 3]) overrides the patch cache."""
    from PIL import Image
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    if not 0.0 <= clean_fraction <= 1.0:
        raise ValueError(f"clean_fraction: expected a number in [0, 1], got {clean_fraction}")
    if patches is None:
        from .data import load_patches
        patches = load_patches(split, size, cache)
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3 or len(patches) == 0:
        raise ValueError(f"patches: expected a non-empty uint8 [N, S, S, 3] array, got shape "
                         f"{patches.shape}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    tagger = _tagger(semantics, log)
    rng = np.random.default_rng(seed)
    prompt = build_prompt()
    counts = {t: 0 for t in TYPE_NAMES}
    n_clean = 0
    t0 = time.time()
    with open(out / "train.jsonl", "w", encoding="utf-8") as fh:
        for i in range(n):
            idx = int(rng.integers(len(patches)))
            clean = patches[idx].astype(np.float32) / 255.0
            spec = [] if rng.random() < clean_fraction else random_spec(rng, max_types)
            degraded, truth = degrade(clean, spec, seed=int(rng.integers(2**31)))
            scene, objects = "", []
            if tagger is not None:
                import torch
                sem = tagger.tag(torch.from_numpy(clean).permute(2, 0, 1))[0]
                scene, objects = sem.scene, sem.objects
            gt, answer = example_answer(truth, scene, objects)
            name = f"images/{i:06d}.png"
            Image.fromarray((np.clip(degraded, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
                out / name)
            record = {
                "id": f"{i:06d}",
                "images": [name],
                "messages": [
                    {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                    {"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": prompt}]},
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
                "ground_truth": gt.to_dict(),
                "spec": [{"type": s.type, "params": s.params} for s in spec],
                "source_patch": idx,
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            n_clean += not spec
            for s in spec:
                counts[s.type] += 1
            if log and (i + 1) % 500 == 0:
                log(f"  {i + 1}/{n} examples ({time.time() - t0:.0f} s)")
    meta = {"n": n, "seed": seed, "split": split, "patch_size": int(patches.shape[1]),
            "patches": int(len(patches)), "max_types": max_types,
            "clean_fraction": clean_fraction, "clean_examples": n_clean,
            "type_counts": counts, "semantics": "imagenet-mobilenet_v2" if tagger else "none",
            "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
            "types": list(TYPE_NAMES), "jsonl": "train.jsonl"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="number of examples (default 1000)")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("train", "val"), default="train",
                    help="patch split (val is the held-out photo source)")
    ap.add_argument("--size", type=int, default=256, help="patch size")
    ap.add_argument("--cache", type=Path, default=None, help="data cache of tools/data.py")
    ap.add_argument("--max-types", type=int, default=3, help="most degradations per image")
    ap.add_argument("--clean-fraction", type=float, default=0.1,
                    help="share of undegraded examples (default 0.1)")
    ap.add_argument("--no-semantics", action="store_true",
                    help="leave scene/objects empty instead of ImageNet tags")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        meta = export_sft(args.out, args.n, args.seed, split=args.split, size=args.size,
                          cache=args.cache, max_types=args.max_types,
                          clean_fraction=args.clean_fraction,
                          semantics=not args.no_semantics)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {meta['n']} examples to {args.out} ({meta['clean_examples']} clean; "
          f"types {meta['type_counts']}; semantics {meta['semantics']}) in "
          f"{time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
