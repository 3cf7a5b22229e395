"""The one way a demo runs a job: through the CLI, as a user would, failing loudly."""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["run_job"]


def run_job(job: str, source: str | os.PathLike[str], output: str | os.PathLike[str],
            settings: Sequence[str] = (), what: str | None = None) -> None:
    """Run ``scilens <job> --input source --output output --set s ...``; raise if it fails.

    Parameters
    ----------
    job : str
        The job's name.
    source, output : path-like
        Its ``--input`` and ``--output``.
    settings : sequence of str
        ``key=value`` settings, each passed as ``--set``.
    what : str, optional
        What failed, for the message (default: the job's name).

    Raises
    ------
    RuntimeError
        If the job exits non-zero (its log, above, says why).
    """
    from scilens.cli import main  # imports every job: only when a demo runs

    args = [job, "--input", os.fspath(source), "--output", os.fspath(output),
            *[arg for s in settings for arg in ("--set", s)]]
    code = main(args)
    if code != 0:
        raise RuntimeError(f"{what or job} demo failed (exit {code}): scilens {' '.join(args)}")
