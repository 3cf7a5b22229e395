"""Glaucoma screening (dissertation Ch. 3): the clinical models and the OCT / fundus images of the same eyes.

* :mod:`~scilens.glaucoma.config` -- the configs of the study's jobs;
* :mod:`~scilens.glaucoma.features` -- the feature lists ``BM1``, ``BM2``, ``BM3`` and their encoding;
* :mod:`~scilens.glaucoma.cohort` -- the paper's classes and exclusion rules on the UK Biobank visit table;
* :mod:`~scilens.glaucoma.splits` -- subject-level train / validation / test splits;
* :mod:`~scilens.glaucoma.models` -- XGBoost on Spark (``fit_xgb``), TreeSHAP contributions and interactions;
* :mod:`~scilens.glaucoma.metrics` -- ROC, AUC and accuracy with bootstrap confidence intervals;
* :mod:`~scilens.glaucoma.evaluation` -- a model's scores, metrics and SHAP ranking on the cohort's eyes
  (shared by ``glaucoma-clinical`` and ``glaucoma-final``);
* :mod:`~scilens.glaucoma.stats` -- ANCOVA and Dunn's test with Bonferroni correction, as the paper's tables;
* :mod:`~scilens.glaucoma.plots`, :mod:`~scilens.glaucoma.report`, :mod:`~scilens.glaucoma.tracking` --
  figures, the one-page HTML report (other jobs add sections) and MLflow logging;
* :mod:`~scilens.glaucoma.preprocess` -- OCT and fundus preprocessing (crop, resize, normalise) per image;
* :mod:`~scilens.glaucoma.figures` -- the imaging jobs' figures (examples, learning curves, AUC by scan, saliency);
* :mod:`~scilens.glaucoma.pipeline` -- one image file or one eye without Spark: read and preprocess a volume or
  photo into rows, saliency of one image, AUC per scan position, the eyes to explain;
* :mod:`~scilens.glaucoma.stages` -- the imaging Spark layer: image readers (``mapInPandas``), predictions
  (``predict_batch_udf``), retina vectors, the per-retina ensemble, saliency; sizes its own batches;
* :mod:`~scilens.glaucoma.training` -- what ``glaucoma-train`` records per rank (its MLflow run: ``tracking``).
"""
