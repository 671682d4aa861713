"""Synthesise a reference image with an image-to-image diffusion pipeline, steered by the
controller (:mod:`..controller`): one img2img run per image with that image's prompts, denoise,
steps, guidance and seed.

* **Size**: the image is scaled so its longest side is at most ``max_side`` (0: unchanged),
  rounded to a multiple of the VAE's factor (8 for SD/SDXL), synthesised, and resized back to
  the input size -- the output always matches the input.
* **Large images**: the pipeline's VAE runs tiled above its sample size (enabled at load,
  :func:`.pipeline.load_pipeline`), so memory stays bounded.
* **Progress and interrupt**: ``callback_on_step_end`` calls ``progress(done, total)`` after
  every denoising step and then ``check_interrupt()``; an exception raised there (ComfyUI's
  Cancel) stops the loop cleanly and propagates after device memory is given back.
* **Determinism**: the initial noise comes from ``torch.Generator("cpu").manual_seed(seed)``,
  so a seed gives the same noise on every device (and identical results on the same one).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .pipeline import DiffusionReference

__all__ = ["working_size", "effective_steps", "synthesize_reference"]


def working_size(h: int, w: int, multiple: int = 8, max_side: int = 0) -> tuple[int, int]:
    """``(h, w)`` scaled down to ``max_side`` (if > 0) and rounded to ``multiple`` (>= one
    multiple)."""
    scale = 1.0
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)

    def r(v):
        return max(multiple, int(round(v * scale / multiple)) * multiple)
    return r(h), r(w)


def effective_steps(steps: int, strength: float) -> tuple[int, int]:
    """``(num_inference_steps, steps actually run)`` for img2img: diffusers runs
    ``int(steps * strength)`` of them, so ``steps`` is raised until that is at least 1."""
    steps = max(1, int(steps))
    if strength <= 0:
        return steps, 0
    steps = max(steps, math.ceil(1.0 / strength))
    return steps, max(1, min(steps, int(steps * strength)))


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (h, w):
        return x
    down = x.shape[-2] > h or x.shape[-1] > w
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False,
                         antialias=down).clamp(0.0, 1.0)


@torch.no_grad()
def synthesize_reference(model: DiffusionReference, images: torch.Tensor, plans: Sequence,
                         *, denoise: float | None = None, steps: int | None = None,
                         max_side: int = 1024,
                         progress: Optional[Callable[[int, int], None]] = None,
                         check_interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """Reference images ``[B, 3, H, W]`` (CPU, float32, [0, 1]) for ``images`` (same layout).

    ``plans``: one :class:`..controller.PromptPlan` per image (a single one applies to all).
    ``denoise`` / ``steps``: override the plans' values when given (> 0). A denoise of 0
    returns the image unchanged."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError("image: expected a [B, 3, H, W] tensor")
    if not plans:
        raise ValueError("prior: no prompt plan (connect Build Prior Prompt)")
    b, _, h, w = images.shape
    if len(plans) not in (1, b):
        raise ValueError(f"prior: {len(plans)} prompt plans for a batch of {b} images")
    plans = list(plans) * b if len(plans) == 1 else list(plans)
    settings = []
    for plan in plans:
        strength = float(denoise) if denoise else float(plan.denoise)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"denoise: expected a value in [0, 1], got {strength}")
        n, runs = effective_steps(int(steps) if steps else int(plan.steps), strength)
        settings.append((strength, n, runs))
    total = max(1, sum(runs for _, _, runs in settings))
    done_before = 0

    pipe = model.prepare()
    hw = working_size(h, w, model.vae_scale_factor, max_side)
    outs = []
    try:
        for i in range(b):
            plan, (strength, n_steps, runs) = plans[i], settings[i]
            image = images[i:i + 1].float().cpu().clamp(0, 1)
            if runs == 0:
                outs.append(image)
                continue
            if check_interrupt:
                check_interrupt()
            counter = {"done": 0}

            def on_step_end(pipeline, step, timestep, callback_kwargs, counter=counter,
                            start=done_before, runs=runs):
                counter["done"] += 1
                if progress:
                    progress(min(start + counter["done"], total), total)
                if check_interrupt:
                    check_interrupt()
                return callback_kwargs

            generator = torch.Generator("cpu").manual_seed(int(plan.seed))
            result = pipe(prompt=plan.positive, negative_prompt=plan.negative,
                          image=_resize(image, *hw), strength=strength,
                          num_inference_steps=n_steps, guidance_scale=float(plan.cfg),
                          generator=generator, output_type="pt",
                          callback_on_step_end=on_step_end)
            out = result.images if hasattr(result, "images") else result[0]
            if not isinstance(out, torch.Tensor):
                raise RuntimeError(f"the pipeline returned {type(out).__name__}, expected a "
                                   f"tensor (output_type='pt')")
            out = out.float().cpu().clamp(0, 1)
            if out.dim() == 3:
                out = out[None]
            outs.append(_resize(out, h, w))
            done_before += runs
            if progress:
                progress(done_before, total)
    finally:
        model.after_run()
    return torch.cat(outs)
