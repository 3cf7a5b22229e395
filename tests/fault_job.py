"""``spark-submit tests/fault_job.py OUTPUT HELD_DIR``: a job whose first attempt of one task waits to be killed.

Used by ``test_integration_faults``: the test kills the executor running that attempt, Spark runs the task
again elsewhere, and the output must be exactly what an undisturbed run writes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from scilens.core.job import Job, JobContext, run_job

ROWS = 2000


class SquaresJob(Job):
    name = "squares"
    summary = "squares of 0..ROWS-1; partition 0's first attempt holds until killed"

    def __init__(self, held_dir: str):
        self.held_dir = held_dir

    def run(self, ctx: JobContext) -> int:
        held = self.held_dir

        def squares(frames):
            from pyspark import TaskContext

            task = TaskContext.get()
            for frame in frames:
                if held and task.partitionId() == 0 and task.attemptNumber() == 0:
                    Path(held, "held").write_text(str(os.getpid()))
                    time.sleep(240)
                yield frame.assign(square=frame["id"] * frame["id"])

        table = ctx.spark.range(0, ROWS, numPartitions=4).mapInPandas(squares, "id long, square long")
        table.write.parquet(str(ctx.output / "squares.parquet"))
        return ROWS


if __name__ == "__main__":
    sys.exit(run_job(SquaresJob(sys.argv[2]), SquaresJob.config_class(), [], sys.argv[1]))
