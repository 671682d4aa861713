"""Developer tools (training-data preparation, training scripts); not loaded by ComfyUI."""
