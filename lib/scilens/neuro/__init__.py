"""Diffusion-MRI pipeline (dissertation Ch. 2 §2.2.1): segmentation, denoising, tensor fitting.

The science is dipy's, called with the parameters of the benchmark's public
reference script (``bench/reference/neuro_ref.py``); this package splits it
into steps that run on pieces of a subject without changing any result.
Four layers, as in :mod:`scilens.astro`:

Kernels, pure functions on numpy arrays, each with a typed config:

:mod:`~scilens.neuro.gradients`
    b0 selection and gradient tables from per-volume b-values/b-vectors.
:mod:`~scilens.neuro.segment`
    Step (1)_N: mean of the b0 volumes (accumulated volume by volume) and
    ``median_otsu`` brain mask (:func:`~scilens.neuro.segment.brain_mask`).
:mod:`~scilens.neuro.denoise`
    Step (2)_N: noise sigma and non-local means, one 3-D volume at a time
    (:func:`~scilens.neuro.denoise.denoise_volume`).
:mod:`~scilens.neuro.dti`
    Step (3)_N: diffusion tensor fit on a set of voxels carrying all volumes
    (:func:`~scilens.neuro.dti.fit_tensors`).

Above them:

:mod:`~scilens.neuro.config`
    :class:`~scilens.neuro.config.NeuroConfig`, the job's config.
:mod:`~scilens.neuro.pipeline`
    The per-subject chain on in-memory data, without Spark (read, segment,
    denoise, fit, write the subject's NIfTI files): what the Spark stages call
    on their pieces, and what the single-process reference and
    :func:`~scilens.neuro.pipeline.run_subject` run on a whole subject.
:mod:`~scilens.neuro.stages`
    The Spark stages mapping those functions over volume rows and voxel
    blocks; they size their own Arrow batches and task counts.
:mod:`~scilens.neuro.report`
    Per-subject PNG previews and the HTML run report.
"""
