"""ComfyUI node glue: one file per node family, mappings assembled here.

* :mod:`.loaders` -- Load Reasoner, Load Restorer
* :mod:`.diagnose` -- Diagnose Degradation, Severity Score
* :mod:`.prior` -- Build Prior Prompt, Reference Synthesize
* :mod:`.restore` -- Restore
* :mod:`.reference` -- Load Diffusion Reference Model
* :mod:`.degrade` -- Degrade Image
* :mod:`.backbones` -- Load Restorer Backbone, Closed-Loop Restore
* :mod:`.vlm` -- Load VLM Reasoner
* :mod:`.comfy` -- the only module touching ``comfy.*`` / ``folder_paths``
* :mod:`.common` -- input checks, layout conversion, shared helpers (also used by the CLI)
* :mod:`.types` -- the custom socket type names

Importing this package does not import torch (node functions import it when they run).
"""

from .backbones import RRClosedLoopRestore, RRLoadBackbone
from .degrade import RRDegradeImage
from .diagnose import RRDiagnoseDegradation, RRSeverityScore
from .loaders import RRLoadReasoner, RRLoadRestorer
from .prior import RRBuildPriorPrompt, RRReferenceSynthesize
from .reference import RRLoadDiffusionReference
from .restore import RRRestore
from .vlm import RRLoadVLMReasoner

_NODES = (RRLoadReasoner, RRLoadRestorer, RRDiagnoseDegradation, RRBuildPriorPrompt,
          RRReferenceSynthesize, RRRestore, RRSeverityScore, RRDegradeImage, RRLoadBackbone,
          RRClosedLoopRestore, RRLoadVLMReasoner, RRLoadDiffusionReference)

NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: cls.DISPLAY_NAME for cls in _NODES}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
