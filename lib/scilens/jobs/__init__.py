"""One module per job: ``scilens.jobs.<name>`` defines ``JOB``, the job ``scilens <name>`` runs.

Job modules hold no demo code: each job's demo lives in :mod:`scilens.demos`, which sits
above the jobs and runs them through :func:`scilens.cli.main`.
"""
