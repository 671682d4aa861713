"""The prior-conditioned restorer: a small U-Net whose blocks read the diagnosis prior.

* :mod:`.network` -- :class:`~.network.PriorRestorer` (degradation-, content- and
  reference-aware blocks), :class:`~.network.RestorerConfig`, safetensors save/load and
  architecture detection.
* :mod:`.tiling` -- :func:`~.tiling.tiled_apply`, seamless overlapping-tile inference with
  out-of-memory fallback.

Nothing heavy is imported here: ComfyUI imports every pack at start-up, so torch-based
submodules are imported by the code that needs them.
"""
