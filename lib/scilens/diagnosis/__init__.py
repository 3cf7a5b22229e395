"""Diagnosing deep-learning models by sampling (dissertation Ch. 4; Mehta et al., tech. report).

The study in the layers every study has:

* :mod:`~scilens.diagnosis.config` -- the configs of its jobs (``train-model``,
  ``sample``, ``activations``) and of the image table they read.
* Kernels, pure functions on arrays: :mod:`~scilens.diagnosis.samplers`
  (every sampler of the study on the latent matrix),
  :mod:`~scilens.diagnosis.latent` (models fitted to the latent space --
  MaxMargin: linear SVM + Platt scaling; Gaussian mixtures -- each giving a
  stratum and a likelihood ratio per item),
  :mod:`~scilens.diagnosis.similarity` (SVCCA) and
  :mod:`~scilens.diagnosis.metrics` (query sets S1-S3 and their accuracy on
  a sample).
* The pipeline without Spark: :mod:`~scilens.diagnosis.sampling`, the one
  table of techniques (latent model, driver draw, Spark draw or none) and
  the driver path that reads it (the latent matrix in memory).
* The Spark layer: :mod:`~scilens.diagnosis.stages` (the embedding and
  activation passes, the sample table, the samplers on Spark MLlib for
  latent tables too large for the driver) and
  :mod:`~scilens.diagnosis.queries` (diagnosis queries Q1-Q7 on an
  activation store); the study's tables are
  :mod:`~scilens.diagnosis.image_table` (an input opened and checked, bad
  rows quarantined) and :mod:`~scilens.diagnosis.activations` (the
  activation store, Parquet).
* :mod:`~scilens.diagnosis.report` -- the jobs' figures and pages.
* :mod:`~scilens.diagnosis.datasets` -- Fashion-MNIST (Debian's
  ``dataset-fashion-mnist``), scikit-learn's digits and generated galaxy
  cutouts as Parquet image tables (``id``, ``label``, ``image``).
"""
