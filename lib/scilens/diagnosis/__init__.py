"""Diagnosing deep-learning models by sampling (dissertation Ch. 4; Mehta et al., tech. report).

* :mod:`~scilens.diagnosis.datasets` -- Fashion-MNIST (Debian's
  ``dataset-fashion-mnist``), scikit-learn's digits and generated galaxy
  cutouts as Parquet image tables (``id``, ``label``, ``image``).
* :mod:`~scilens.diagnosis.latent` -- models fitted to the latent space
  (MaxMargin: linear SVM + Platt scaling; Gaussian mixtures), each giving a
  stratum and a likelihood ratio per item.
* :mod:`~scilens.diagnosis.samplers` -- every sampler of the study as a pure
  function on the latent matrix; :mod:`~scilens.diagnosis.stages`
  the same on Spark (MLlib) for latent tables too large for the driver;
  :mod:`~scilens.diagnosis.sampling` the one table of techniques (latent
  model, driver draw, Spark draw or none) and the two paths that read it.
* :mod:`~scilens.diagnosis.activations` -- the activation store (Parquet).
* :mod:`~scilens.diagnosis.queries` -- diagnosis queries Q1-Q7 on a store.
* :mod:`~scilens.diagnosis.metrics` -- query sets S1-S3 and their accuracy on a sample.
"""
