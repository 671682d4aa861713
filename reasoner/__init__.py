"""The reasoner: taxonomy, synthesis, diagnosis and the analyzer. Knows nothing of ComfyUI."""
