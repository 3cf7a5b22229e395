"""Diffusion-MRI pipeline (dissertation Ch. 2 §2.2.1): segmentation, denoising, tensor fitting.

The science is dipy's, called with the parameters of the benchmark's public
reference script (``bench/reference/neuro_ref.py``); this package splits it
into steps that run on pieces of a subject without changing any result:

:mod:`~scilens.neuro.gradients`
    b0 selection and gradient tables from per-volume b-values/b-vectors.
:mod:`~scilens.neuro.segment`
    Step (1)_N: mean of the b0 volumes (accumulated volume by volume) and
    ``median_otsu`` brain mask.
:mod:`~scilens.neuro.denoise`
    Step (2)_N: noise sigma and non-local means, one 3-D volume at a time.
:mod:`~scilens.neuro.dti`
    Step (3)_N: diffusion tensor fit on a set of voxels carrying all volumes.
:mod:`~scilens.neuro.stages`
    The Spark stages mapping those kernels over volume rows and voxel blocks.
:mod:`~scilens.neuro.report`
    Per-subject PNG previews and the HTML run report.

Each kernel is a step with a typed config and a pure ``run()`` on numpy
arrays, usable without Spark.
"""
