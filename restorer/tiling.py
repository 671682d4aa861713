"""Seamless tiled inference: run an image-to-image function on overlapping tiles and blend.

:func:`tiled_apply` bounds the memory of a network pass by the tile size: the output
accumulates on the CPU in float32, so device memory holds one tile (plus the input image
wherever the caller keeps it). Overlapping tiles are blended with raised-cosine ramps and
normalised by the accumulated weight, so seams vanish for any function whose receptive field
fits in the overlap (and are invisible in practice for the restorer; see
:class:`..network.PriorRestorer` on its global channel attention).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

__all__ = ["tiled_apply", "tile_starts", "MIN_OOM_TILE"]

# Out-of-memory fallback halves the tile down to this size, then gives up.
MIN_OOM_TILE = 64


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` with at least
    ``overlap`` shared pixels between neighbours, spread evenly (first at 0, last flush with
    the end). One tile at 0 when ``size <= tile``."""
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    n = max(n, 2)
    span = size - tile
    return [round(i * span / (n - 1)) for i in range(n)]


def _ramp(length: int) -> torch.Tensor:
    """Raised-cosine ramp rising over ``length`` samples, strictly in (0, 1).

    ``ramp(L)[t] + ramp(L)[L - 1 - t] == 1``, so two tiles ramping across the same overlap
    sum to a constant weight there.
    """
    t = (torch.arange(length, dtype=torch.float64) + 0.5) / length
    return (0.5 - 0.5 * torch.cos(math.pi * t)).float()


def _axis_weights(starts: list[int], tile_len: int, scale: int) -> list[torch.Tensor]:
    """1-D blend weights (output resolution) of each tile along one axis.

    A tile ramps up over its overlap with the previous tile and down over its overlap with the
    next one (ramps capped at half the tile so they never collide); image borders get no ramp.
    """
    out = []
    n = len(starts)
    cap = tile_len // 2
    for i, s in enumerate(starts):
        w = torch.ones(tile_len * scale)
        if i > 0:
            ov = min(starts[i - 1] + tile_len - s, cap)
            if ov > 0:
                w[: ov * scale] = _ramp(ov * scale)
        if i < n - 1:
            ov = min(s + tile_len - starts[i + 1], cap)
            if ov > 0:
                w[len(w) - ov * scale:] = torch.minimum(w[len(w) - ov * scale:],
                                                        _ramp(ov * scale).flip(0))
        out.append(w)
    return out


def _is_oom(err: BaseException) -> bool:
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(err, oom_type):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _free_device_cache() -> None:
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # never let cache clean-up mask the retry
        pass


def _run_tiles(fn, image, tile, overlap, scale, progress, check_interrupt) -> torch.Tensor:
    b, _, h, w = image.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    wy, wx = _axis_weights(ys, th, scale), _axis_weights(xs, tw, scale)
    total = len(ys) * len(xs)
    out = None
    acc = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float32)
    done = 0
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            if check_interrupt is not None:
                check_interrupt()
            patch = image[:, :, y:y + th, x:x + tw]
            res = fn(patch)
            expected = (th * scale, tw * scale)
            if (not isinstance(res, torch.Tensor) or res.dim() != 4 or res.shape[0] != b
                    or tuple(res.shape[-2:]) != expected):
                got = list(res.shape) if isinstance(res, torch.Tensor) else type(res).__name__
                raise ValueError(f"tiled_apply: fn returned {got} for a tile of "
                                 f"{list(patch.shape)}; expected [{b}, C, {expected[0]}, "
                                 f"{expected[1]}] (scale={scale})")
            res = res.detach().to(device="cpu", dtype=torch.float32)
            if out is None:
                out = torch.zeros(b, res.shape[1], h * scale, w * scale, dtype=torch.float32)
            weight = (wy[iy][:, None] * wx[ix][None, :])[None, None]
            oy, ox = y * scale, x * scale
            sl = (slice(None), slice(None), slice(oy, oy + expected[0]),
                  slice(ox, ox + expected[1]))
            out[sl].addcmul_(res, weight)
            acc[sl] += weight
            del res, patch
            done += 1
            if progress is not None:
                progress(done, total)
    return out.div_(acc)


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                tile: int = 512, overlap: int = 32, scale: int = 1,
                progress: Optional[Callable[[int, int], None]] = None,
                check_interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``image`` ``[B, C, H, W]`` and blend them.

    * ``fn`` maps ``[B, C, th, tw]`` to ``[B, C', th*scale, tw*scale]`` (any device/dtype);
      its output is detached -- this is for inference.
    * ``tile``: tile side (>= 16); an image no larger than ``tile`` in both dimensions is
      processed whole (as a single "tile"). ``overlap``: minimum pixels shared by neighbouring
      tiles, ``0 <= overlap < tile / 2``; tiles are spread evenly so the last one ends flush
      with the image, and blended with raised-cosine ramps over the overlaps, normalised by
      the accumulated weight.
    * ``scale``: integer output/input size ratio (e.g. 2 for a 2x upscaler).
    * ``progress(done, total)`` is called after each tile; ``check_interrupt()`` is called
      before each tile and stops the run by raising (its exception propagates unchanged).

    Returns a CPU float32 tensor ``[B, C', H*scale, W*scale]``; the output and weight buffers
    live on the CPU, so device memory holds only one tile at a time.

    Out-of-memory fallback: if ``fn`` raises ``torch.cuda.OutOfMemoryError`` or a
    ``RuntimeError`` whose message says "out of memory", the CUDA cache is emptied, the tile
    is halved (not below 64 px; the overlap is reduced to stay below half the tile) and the
    whole image is processed again from the start (``progress`` restarts with the new total).
    When the tile cannot shrink further the original error is re-raised.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        got = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"tiled_apply: image must be [B, C, H, W], got {got}")
    if image.shape[0] == 0 or image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ValueError(f"tiled_apply: empty image {list(image.shape)}")
    for name, value in (("tile", tile), ("overlap", overlap), ("scale", scale)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"tiled_apply: {name} must be an int, got {value!r}")
    if tile < 16:
        raise ValueError(f"tiled_apply: tile must be >= 16, got {tile}")
    if not 0 <= overlap < tile / 2:
        raise ValueError(f"tiled_apply: overlap must satisfy 0 <= overlap < tile/2 "
                         f"(= {tile / 2:g}), got {overlap}")
    if scale < 1:
        raise ValueError(f"tiled_apply: scale must be an int >= 1, got {scale}")
    if not callable(fn):
        raise ValueError("tiled_apply: fn must be callable")

    h, w = image.shape[-2:]
    while True:
        # The tile actually used is min(tile, size): shrinking only helps below that.
        current = min(tile, max(h, w))
        try:
            return _run_tiles(fn, image, tile, overlap, scale, progress, check_interrupt)
        except Exception as err:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not _is_oom(err) or current <= MIN_OOM_TILE:
                raise
        # Outside the except block, so the failed attempt's tensors (held by the traceback)
        # are released before the cache is emptied.
        _free_device_cache()
        tile = max(MIN_OOM_TILE, current // 2)
        overlap = min(overlap, (tile - 1) // 2)
