"""Diffusion reference synthesis: an image-to-image diffusion model (the user's own Stable
Diffusion 1.5 / SDXL checkpoint or a local diffusers folder) re-draws the degraded image under
the controller's prompts and settings, and the result is the reference Restore can look at.

* :mod:`.pipeline` -- :func:`~.pipeline.load_pipeline` (local files only, never a download),
  :class:`~.pipeline.DiffusionReference` (device, dtype, offload, memory given back).
* :mod:`.synthesize` -- :func:`~.synthesize.synthesize_reference` (img2img per image with the
  controller's prompts/denoise/steps/cfg/seed, progress and interrupt per step, tiled VAE,
  sizes rounded to the VAE's multiple and restored).
* ``configs/`` -- weights-free diffusers config skeletons for single-file checkpoints
  (``sd15``, ``sdxl``).

Nothing heavy is imported here.
"""
