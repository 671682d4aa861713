"""Custom socket types: defined once here, used by every node and by the workflow tests.

Values that travel along them:

* ``RR_DIAGNOSIS``: a Python ``list`` of :class:`~..reasoner.diagnosis.Diagnosis`, one per
  image of the batch (a list of one applies to every image).
* ``RR_PRIOR``: a :class:`~..restorer.prior.RestorationPrior` (diagnoses after user overrides,
  the instruction and one prompt plan per image).
* ``RR_REASONER``: a :class:`~..reasoner.engine.Reasoner`.
* ``RR_RESTORER``: a :class:`~..restorer.engine.Restorer`.
* ``RR_DIFFUSION``: a :class:`~..restorer.reference.pipeline.DiffusionReference` (an
  image-to-image diffusion pipeline with its device/dtype/offload settings).
"""

RR_DIAGNOSIS = "RR_DIAGNOSIS"
RR_PRIOR = "RR_PRIOR"
RR_REASONER = "RR_REASONER"
RR_RESTORER = "RR_RESTORER"
RR_DIFFUSION = "RR_DIFFUSION"

CUSTOM_TYPES = (RR_DIAGNOSIS, RR_PRIOR, RR_REASONER, RR_RESTORER, RR_DIFFUSION)

CATEGORY = "ReasonRestore"
