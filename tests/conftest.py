"""Test set-up: no network, and the package importable as `reason_restore` even uninstalled."""

import importlib.util
import os
import sys
from pathlib import Path

# A stray hub lookup must fail at once, never hang or download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]

try:
    import reason_restore  # noqa: F401  (installed with `pip install -e .`)
except ImportError:
    spec = importlib.util.spec_from_file_location(
        "reason_restore", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["reason_restore"] = module
    spec.loader.exec_module(module)

# One intra-op thread: the suite's tensors are tiny, and on a 2-core machine shared with other
# work, thread hand-offs cost more than they save (a tiny diffusion pipeline: 5 s vs 0.03 s).
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the import-time test runs without touching torch here
    pass
