"""The astronomy pipeline of Ch. 2 §2.2.2: pre-processing, patch creation, co-addition, source detection.

Pure kernels on numpy arrays, one module per step; :mod:`scilens.astro.pipeline`
chains them per record, and both the Spark job (``scilens astro``) and the
single-process reference (``bench/reference/astro_ref.py``) call those same
functions, so their outputs agree. :mod:`scilens.astro.config` holds the job's
config (:class:`~scilens.astro.config.AstroConfig`), one section per step.
"""
