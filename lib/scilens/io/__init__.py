"""Readers (run on executors) and writers for NIfTI, FITS and tables."""
