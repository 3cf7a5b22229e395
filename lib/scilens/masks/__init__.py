"""Queries over image masks with a cumulative histogram index (MaskSearch, He et al. 2023).

:mod:`~scilens.masks.chi` holds the pure kernels (the one quantiser, the
CHI, exact counts and bounds), :mod:`~scilens.masks.index` builds, writes and
reads an index, and :mod:`~scilens.masks.query` answers exact filter, top-k
and aggregate queries by filter-verify over a small mask source interface.
"""
