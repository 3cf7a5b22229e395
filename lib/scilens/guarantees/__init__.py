"""Analytics with guarantees: aggregation and selection that call an expensive oracle on a small sample.

Pure statistics on in-memory data (pandas, numpy): ``bounds`` (interval kernels), ``oracle`` (the counted,
budgeted oracle), ``aggregation`` (``estimate_mean``: uniform, EBS, BlazeIt++, ABAE), ``selection``
(``select_recall`` / ``select_precision``: SUPG, SUPG++) and ``approx`` (approximate aggregates from
progressive samples of a stored uniform column). The Spark layer is ``stages`` (sampled tables, ``approx``
on Spark, the Spark wrappers of estimation and selection); ``config`` holds the ``estimate`` and ``select``
jobs' configs. Sources: Kang et al., BlazeIt (VLDB 2020), SUPG (VLDB 2020), ABAE (Kang et al. 2021) and the
seed's section 5.
"""
