"""Glaucoma screening on clinical data (dissertation Ch. 3): cohort, models, metrics, statistics.

* :mod:`~scilens.clinical.features` -- the feature lists ``BM1``, ``BM2``, ``BM3`` and their encoding;
* :mod:`~scilens.clinical.cohort` -- the paper's classes and exclusion rules on the UK Biobank visit table;
* :mod:`~scilens.clinical.splits` -- subject-level train / validation / test splits;
* :mod:`~scilens.clinical.models` -- XGBoost on Spark (``fit_xgb``), TreeSHAP contributions and interactions;
* :mod:`~scilens.clinical.metrics` -- ROC, AUC and accuracy with bootstrap confidence intervals;
* :mod:`~scilens.clinical.stats` -- ANCOVA and Dunn's test with Bonferroni correction;
* :mod:`~scilens.clinical.plots`, :mod:`~scilens.clinical.report`, :mod:`~scilens.clinical.tracking` --
  figures, the one-page HTML report (other jobs add sections) and MLflow logging.
"""
