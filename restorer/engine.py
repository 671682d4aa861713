"""The restorer as a user-facing object: load, restore (tiled, with progress), offload."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..reasoner.diagnosis import Diagnosis, Finding
from ..reasoner.images import as_rgb_batch
from ..reasoner.taxonomy import get_type
from .consistency import Veil, has_data_step, ignores_restoration, refine, scene_veil
from .content import semantic_phrases, semantic_tokens
from .network import PriorRestorer, load_restorer
from .prior import encode_prior_batch
from .tiling import tile_starts, tiled_apply

DEFAULT_RESTORER = Path(__file__).resolve().parent / "weights" / "restorer.safetensors"
# The shipped weights leave part of a veil, most where it is thick, so the data step's
# transmission fit (restorer/consistency.py ``Veil``) explains only the part they took away:
# on training-source photos with the true diagnosis its optical depth -ln t reaches 0.59-0.71 of
# the truth's (99th percentiles, median per haze level; `python benchmarks/veil.py`). The data
# step raises t to this power for these weights only: a network that dehazes fully (or any
# other checkpoint, unmeasured) keeps 1, where the power would overshoot (a guess without veil
# lost 16 dB at 1.2 in tests/test_consistency.py). Chosen among 1.1-1.4 on those photos (2 per
# source, the three haze levels and haze + JPEG), mean PSNR over the predicted and the true
# diagnosis 24.12 / 24.46 / 24.64 / 24.69 dB (23.58 before): 1.2 as a hedge, because the full
# correction overshoots wherever the diagnosed airlight or severity is off (images lower: 13 /
# 16 / 19 / 20 of 48, the worst -3.1 / -3.9 / -5.6 / -7.3 dB) and a false haze finding darkens
# a clean photo more the larger the power (-0.7 / -1.4 / -2.1 / -2.7 dB on average).
# benchmarks/results/veil.md has the sweep, veil_natural.md the check on natural photos.
SHIPPED_VEIL_DEPTH_STRETCH = 1.2
MAX_UPSCALE = 4.0
# Reference trust: normalised cross-correlation of the luma of the restoration without the
# reference and the reference itself, at <= 64 px. At or below TRUST_LOW the reference shows
# something else and is ignored; at or above TRUST_HIGH it is used fully; in between the two
# restorations are blended. Set on 64 held-out 128-px patches (tools/train_reference's
# references): an unrelated patch scores median -0.01 (10th-90th percentile -0.39..0.4), the
# same scene blurred, colour-shifted and misaligned median 0.89; of the pairs tried
# ((0.5, 0.8), (0.4, 0.7), (0.3, 0.6), (0.5, 0.6), (0.6, 0.7)) this kept most of the gain.
TRUST_LOW, TRUST_HIGH, TRUST_SIDE = 0.3, 0.6, 64


def upscaled_diagnosis(d: Diagnosis | None, factor: float) -> Diagnosis | None:
    """After a bicubic x``factor`` the image looks ``factor`` times lower-resolution: tell the
    network so, since that is exactly the low-resolution degradation it was trained on."""
    if d is None or factor <= 1.0:
        return d
    spec = get_type("low_resolution").param("scale")
    f = d.finding("low_resolution")
    scale = spec.clip((f.params["scale"] if f else 1.0) * factor)
    others = [x for x in d.findings if x.type != "low_resolution"]
    finding = Finding.from_params("low_resolution", {"scale": scale},
                                  f.confidence if f else 1.0, f.source if f else "user")
    return Diagnosis.from_findings(others + [finding], presence=d.presence, scene=d.scene,
                                   objects=d.objects, sources=d.sources, notes=d.notes,
                                   observation=d.reasoning[0].text if d.reasoning else "")


def airlight_note(said: float, used: float) -> str | None:
    """The sentence for a user when the data step undid another airlight than the diagnosis
    read (``Restorer.last_airlight``), or None when they agree."""
    if abs(used - said) < 0.005:
        return None
    return f"airlight {used:.2f}, read where the veil is thick (the diagnosis said {said:.2f})"


def check_restore_inputs(images, diagnoses, upscale: float, strength: float):
    """What every restorer (built-in or backbone) checks first: a CPU [B, 3, H, W] batch (tiles
    go to the device one at a time), one diagnosis per image (one is broadcast), and the
    upscale/strength ranges. Errors name the input."""
    images = as_rgb_batch(images).cpu()
    b = images.shape[0]
    diagnoses = list(diagnoses) if diagnoses is not None else [None] * b
    if len(diagnoses) == 1 and b > 1:
        diagnoses = diagnoses * b
    if len(diagnoses) != b:
        raise ValueError(f"diagnosis: {len(diagnoses)} diagnoses for a batch of {b} images")
    if not 1.0 <= upscale <= MAX_UPSCALE:
        raise ValueError(f"upscale: expected a factor in [1, {MAX_UPSCALE:g}], got {upscale}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength: expected a value in [0, 1], got {strength}")
    return images, diagnoses


def _small_luma(x: torch.Tensor, side: int) -> torch.Tensor:
    y = (x.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    h, w = y.shape[-2:]
    s = min(1.0, side / max(h, w))
    y = F.adaptive_avg_pool2d(y, (max(1, round(h * s)), max(1, round(w * s)))).flatten()
    return y - y.mean()


def reference_trust(restored: torch.Tensor, reference: torch.Tensor) -> float:
    """How much a reference ``[1, 3, H, W]`` can be trusted for ``restored`` (the restoration
    without it), in [0, 1]. The reference-aware blocks learnt to use a good reference, but an
    unrelated one still costs about half a dB (measured, see docs/diffusion.md); this gate
    makes "a poor reference does not hurt" a property of the pipeline, not a hope."""
    a, b = _small_luma(restored, TRUST_SIDE), _small_luma(reference, TRUST_SIDE)
    ncc = float((a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-8))
    return min(1.0, max(0.0, (ncc - TRUST_LOW) / (TRUST_HIGH - TRUST_LOW)))


class Restorer:
    kind = "prior_restorer"

    def __init__(self, model: PriorRestorer, device=None, dtype=torch.float32,
                 name: str = "restorer", keep_loaded: bool = True, text_encoder="auto"):
        self.model = model.eval()
        self.device = torch.device(device or "cpu")
        self.dtype = dtype
        self.name = name
        self.keep_loaded = keep_loaded
        # Scene/object phrases -> tokens for the content-aware blocks (restorer/content.py).
        # "auto": the packaged sentence encoder, loaded on first use (only restorers with
        # content-aware blocks need it, and only when a diagnosis names something).
        self._text_encoder = text_encoder if model.content is not None else None

    @property
    def text_encoder(self):
        if isinstance(self._text_encoder, str):
            from .content import load_semantic_encoder
            self._text_encoder = load_semantic_encoder(device=self.device)
        return self._text_encoder

    def _semantic_tokens(self, diagnosis: Diagnosis | None):
        # Checked before touching self.text_encoder, which loads the encoder on first use.
        if self.model.content is None or not semantic_phrases(diagnosis):
            return None, None
        tokens, mask = semantic_tokens([diagnosis], self.text_encoder)
        if tokens is None:
            return None, None
        return tokens.to(self.device, self.dtype), mask.to(self.device)

    @torch.no_grad()
    def restore(self, images, diagnoses: Sequence[Diagnosis | None] | None = None,
                reference=None, upscale: float = 1.0, strength: float = 1.0,
                tile: int = 512, overlap: int = 32,
                progress: Optional[Callable[[int, int], None]] = None,
                check_interrupt: Optional[Callable[[], None]] = None,
                consistency: bool = True) -> torch.Tensor:
        """Restore ``images`` [B, 3, H, W] conditioned on one diagnosis per image (None =
        blind). An image whose diagnosis found nothing is returned as it is (after any
        upscale). ``upscale`` > 1 enlarges by that factor first; ``strength`` < 1 blends the
        result with the input. ``consistency`` runs the data-consistency step after the
        network (restorer/consistency.py: the diagnosed veil, tone curve, blur, resolution,
        noise and JPEG pull the result back to what the input supports). Large images run in
        overlapping tiles: the network over all of them, then the step over all of them, with
        the veil fitted once on the whole image."""
        images, diagnoses = check_restore_inputs(images, diagnoses, upscale, strength)
        b = images.shape[0]
        if reference is not None:
            reference = as_rgb_batch(reference, name="reference").cpu()
        if upscale > 1.0:
            h, w = images.shape[-2:]
            size = (max(1, round(h * upscale)), max(1, round(w * upscale)))
            images = F.interpolate(images, size=size, mode="bicubic",
                                   align_corners=False).clamp(0, 1)
            diagnoses = [upscaled_diagnosis(d, upscale) for d in diagnoses]
        # Channels-last (NHWC) is the layout oneDNN's and cuDNN's fastest convolutions use:
        # 0.72 -> 0.51 s for one 512x512 image on one CPU thread, same output to 4e-7.
        model = self.model.to(self.device, self.dtype, memory_format=torch.channels_last)
        uses_reference = reference is not None and model.ref_encoder is not None
        passes = 2 if uses_reference else 1
        h, w = images.shape[-2:]
        outs, self.last_reference_trust = [], []
        # (image index, diagnosed airlight, airlight the data step used) per hazy image: the
        # veil re-reads an analyzer's airlight where it is thick, and a user should see that.
        self.last_airlight = []
        # Per image: one tiled network pass per use of the reference, each followed by a
        # tiled pass of the data step (the PSFs, <= 45 px, fit in the tiles' overlap).
        stages = passes * (2 if consistency else 1)
        stretch = getattr(model, "veil_depth_stretch", 1.0)
        for i in range(b):
            if diagnoses[i] is not None and not diagnoses[i].findings:
                # Reason first: a diagnosis that found nothing means nothing to undo, and the
                # network is not the identity on a clean photo (about -3 dB on held-out ones).
                outs.append(images[i:i + 1])
                if progress:
                    progress((i + 1) * stages, b * stages)
                continue
            diagnosis = diagnoses[i]
            prior = encode_prior_batch([diagnosis], self.device, self.dtype)
            tokens, mask = self._semantic_tokens(diagnosis)

            def network(tile_in, prior=prior, tokens=tokens, mask=mask):
                tile_in = tile_in.to(self.device, self.dtype,
                                     memory_format=torch.channels_last)
                ref_tile = tile_in[:, 3:] if tile_in.shape[1] == 6 else None
                return model(tile_in[:, :3], prior, text_tokens=tokens, text_mask=mask,
                             reference=ref_tile).float()

            def data_step(tile_in, diagnosis=diagnosis, airlight=None):
                tile_in = tile_in.to(self.device, torch.float32)
                veil = None if airlight is None else Veil(airlight, tile_in[:, 6:7])
                return refine(tile_in[:, :3], tile_in[:, 3:6], diagnosis,
                              depth_stretch=stretch, veil=veil)

            def tiled(fn, x, stage, i=i):
                def tile_progress(done, n):
                    if progress:
                        progress((i * stages + stage) * n + done, b * stages * n)
                return tiled_apply(fn, x, tile=tile, overlap=overlap, progress=tile_progress,
                                   check_interrupt=check_interrupt)

            def skipped(stage, i=i):  # a stage with nothing to do: its share of the bar at once
                if progress:
                    n = len(tile_starts(h, tile, overlap)) * len(tile_starts(w, tile, overlap))
                    progress((i * stages + stage + 1) * n, b * stages * n)

            # Under a blur or a low resolution alone the data step never reads the network's
            # output (consistency.ignores_restoration): the network pass would be work for
            # nothing, about half of such a restoration.
            unused = consistency and ignores_restoration(diagnosis, (h, w))

            def apply(x, k, i=i, image=images[i:i + 1], diagnosis=diagnosis):
                stage = k * stages // passes
                if unused:
                    out = image
                    skipped(stage)
                else:
                    out = tiled(network, x, stage)
                if not consistency:
                    return out.clamp(0, 1)
                if not has_data_step(diagnosis):  # rain, or blind: no second pass to tile
                    skipped(stage + 1)
                    return out.clamp(0, 1)
                # The veil is fitted on the whole image and handed to the tiles as a channel,
                # so every tile undoes the same veil, whatever the tile size.
                veil = scene_veil(diagnosis, image, out, stretch)
                if veil is not None and k == 0:
                    said = float(diagnosis.finding("haze").params["airlight"])
                    self.last_airlight.append((i, said, veil.airlight))
                stacked = torch.cat([out, image] + ([] if veil is None else [veil.t]), 1)
                step = partial(data_step, airlight=None if veil is None else veil.airlight)
                del out, veil  # the stack holds them: one copy of a large image, not two
                return tiled(step, stacked, k * stages // passes + 1).clamp(0, 1)

            out = apply(images[i:i + 1], 0)
            if uses_reference:
                # Align the reference with the image once, then tile both together, so every
                # tile sees the matching part of the reference.
                ref = reference[min(i, reference.shape[0] - 1)][None]
                ref = F.interpolate(ref, size=(h, w), mode="bilinear", align_corners=False,
                                    antialias=ref.shape[-2] > h).clamp(0, 1)
                trust = reference_trust(out, ref)
                self.last_reference_trust.append(trust)
                if trust > 0:
                    with_ref = apply(torch.cat([images[i:i + 1], ref], 1), 1)
                    out = with_ref * trust + out * (1 - trust)
            if strength < 1.0:
                out = images[i:i + 1] * (1 - strength) + out * strength
            outs.append(out)
        if not self.keep_loaded:
            self.offload()
        return torch.cat(outs)

    def offload(self) -> None:
        self.model.to("cpu")
        if self._text_encoder is not None and not isinstance(self._text_encoder, str):
            self._text_encoder.offload()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_default_restorer(path=None, device=None, dtype=torch.float32,
                          keep_loaded: bool = True) -> Restorer:
    path = Path(path) if path else DEFAULT_RESTORER
    model = load_restorer(path)
    if path.resolve() == DEFAULT_RESTORER:  # the calibration is of these weights only
        model.veil_depth_stretch = SHIPPED_VEIL_DEPTH_STRETCH
    return Restorer(model, device=device, dtype=dtype, name=path.stem, keep_loaded=keep_loaded)
