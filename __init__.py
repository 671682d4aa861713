"""ComfyUI-ReasonRestore: reason-then-restore universal image restoration.

ComfyUI imports this file at start-up: it only registers the nodes and imports nothing heavy
(no torch). Standalone use: ``python -m reason_restore --help``.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
