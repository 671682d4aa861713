"""Tiny random models for the node/CLI tests (not a test module: no ``test_`` prefix).

Built from small configs and saved as real safetensors files, so the tests exercise the same
loaders users hit; random weights diagnose garbage, which is all glue tests need.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reason_restore.reasoner.analyzer import AnalyzerConfig, DegradationAnalyzer, save_analyzer
from reason_restore.restorer.network import PriorRestorer, RestorerConfig, save_restorer
from reason_restore.restorer.prior import prior_dim

ANALYZER_NAME = "tiny.safetensors"
RESTORER_NAME = "tiny.safetensors"


def make_models(models_root: Path) -> tuple[Path, Path]:
    """Write ``<root>/analyzer/tiny.safetensors`` and ``<root>/restorer/tiny.safetensors``
    (the layout of ComfyUI's ``models/reason_restore``); returns their paths."""
    torch.manual_seed(0)
    (models_root / "analyzer").mkdir(parents=True, exist_ok=True)
    (models_root / "restorer").mkdir(parents=True, exist_ok=True)
    analyzer = DegradationAnalyzer(AnalyzerConfig(width=8, crop=64, max_crops=2, hidden=32))
    a_path = models_root / "analyzer" / ANALYZER_NAME
    save_analyzer(analyzer, a_path)
    restorer = PriorRestorer(RestorerConfig(width=8, prior_dim=prior_dim(), enc_blocks=(1, 1),
                                            dec_blocks=(1, 1), middle_blocks=1))
    r_path = models_root / "restorer" / RESTORER_NAME
    save_restorer(restorer, r_path)
    return a_path, r_path
