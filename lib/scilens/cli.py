"""``scilens <job> --input PATH --output DIR [--config FILE.yaml] [--set key=value ...] [--strict] [--overwrite]``.

The same entry point serves the console script and the ``jobs/<job>.py``
files given to ``spark-submit``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import scilens.jobs
from scilens.core.config import ConfigError, describe, load_config
from scilens.core.job import Job, run_job

__all__ = ["JOBS", "load_job", "main"]


def _discover_jobs() -> dict[str, str]:
    """Job name -> module: every module ``scilens.jobs.<name>`` is the job ``<name>``.

    ``_`` reads as ``-``, and a trailing ``_`` is dropped for a job named by a Python keyword
    (``assert_`` is ``assert``).
    """
    return {info.name.rstrip("_").replace("_", "-"): f"scilens.jobs.{info.name}"
            for info in pkgutil.iter_modules(scilens.jobs.__path__) if not info.name.startswith("_")}


JOBS: dict[str, str] = _discover_jobs()
"""Job name -> module defining ``JOB`` (a :class:`Job` subclass). Job modules keep
heavy imports (TensorFlow, ...) inside functions so listing jobs stays fast."""


def load_job(name: str) -> Job:
    """Instantiate the job registered as ``name``."""
    job = importlib.import_module(JOBS[name]).JOB()
    if job.name != name:
        raise RuntimeError(f"{JOBS[name]}.JOB is named {job.name!r}, expected {name!r}")
    return job


def _job_parser(job: Job) -> argparse.ArgumentParser:
    fields = "\n".join(describe(job.config_class))
    parser = argparse.ArgumentParser(
        prog=f"scilens {job.name}",
        description=job.summary,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"config fields (set in --config YAML or with --set name=value):\n{fields}",
    )
    parser.add_argument("--input", required=True, help="input file, directory or glob")
    parser.add_argument("--output", required=True, help="output directory (replaced atomically on success)")
    parser.add_argument("--config", help="YAML file of config fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set spark.master=local[2] (repeatable)")
    parser.add_argument("--strict", action="store_true", help="exit non-zero if any record is rejected")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output directory that was not written by scilens (an output "
                             "holding an input is refused even so)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in JOBS:
        lines = [f"  {name:<20} {load_job(name).summary}" for name in JOBS]
        print("usage: scilens <job> --input PATH --output DIR [--config FILE.yaml] [--set key=value ...] "
              "[--strict] [--overwrite]")
        print("\njobs:\n" + "\n".join(lines))
        print("\n`scilens <job> --help` lists the job's config fields.")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nscilens: unknown job {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    job = load_job(argv[0])
    args = _job_parser(job).parse_args(argv[1:])
    try:
        config = load_config(job.config_class, args.config, args.set)
    except ConfigError as exc:
        print(f"scilens {job.name}: config error: {exc}", file=sys.stderr)
        return 2
    return run_job(job, config, [args.input], args.output, strict=args.strict, overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(main())
