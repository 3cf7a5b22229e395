"""One module per job: ``scilens.jobs.<name>`` defines ``JOB``, the job ``scilens <name>`` runs.

A job module may also define ``demo(root: pathlib.Path) -> str``: it prepares
small inputs under ``root``, runs the job through :func:`scilens.cli.main` and
returns lines telling the user where to look; ``make demo`` runs every job's
demo in the order of ``DEMO_RANK`` (a module-level int, lowest first).
"""
