"""The config of the ``assert`` job."""

from __future__ import annotations

from dataclasses import dataclass

from scilens.core.config import field
from scilens.core.job import JobConfig
from scilens.vision.inference import ImageTableConfig

__all__ = ["AssertConfig"]


@dataclass
class AssertConfig(JobConfig):
    """Config of ``scilens assert``."""

    assertions: str = field("diagnosis", "Assertion set: a built-in name (glaucoma, diagnosis, astro: "
                            "conf/assertions/<name>.yaml) or a YAML path.")
    top: int = field(10, "Top-flagged items shown in the report.", min=1, max=100_000)
    model: str | None = field(None, "Saved Keras model (.keras): the set's model views (e.g. the diagnosis set's "
                              "predictions on mirrored images) are computed with it on the executors; without "
                              "it the assertions reading them are skipped, with the reason logged.")
    images: list[str] | None = field(None, "The image table the model reads (Parquet files or directories); "
                                     "none: the inputs the input directory's manifest.json records (the "
                                     "sample job's), read with that run's data columns.")
    data: ImageTableConfig = field(ImageTableConfig(), "Columns of the image table given as images.")
    batch_size: int = field(128, "Images per model call.", min=1, max=65_536)
