"""Analytics with guarantees: aggregation and selection that call an expensive oracle on a small sample.

Pure statistics on in-memory data (pandas, numpy), no Spark: ``bounds`` (interval kernels),
``oracle`` (the counted, budgeted oracle), ``aggregation`` (``estimate_mean``: uniform, EBS, BlazeIt++,
ABAE) and ``selection`` (``select_recall`` / ``select_precision``: SUPG, SUPG++). Sources: Kang et al.,
BlazeIt (VLDB 2020), SUPG (VLDB 2020), ABAE (Kang et al. 2021) and the seed's section 5.
"""
