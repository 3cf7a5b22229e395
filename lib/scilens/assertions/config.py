"""The config of the ``assert`` job."""

from __future__ import annotations

from dataclasses import dataclass

from scilens.core.config import Config, field
from scilens.core.job import JobConfig

__all__ = ["AssertConfig", "ImageColumns"]


@dataclass
class ImageColumns(Config):
    """Which columns of the image table hold what (the ``sample`` job's ``data`` section, field for field).

    Studies never import each other, so this repeats :class:`scilens.diagnosis.config.ImageTableConfig`'s
    fields; the job turns it into one.
    """

    id_column: str = field("id", "Unique item id (integer): the key the set's model views are joined on.")
    label_column: str = field("label", "True class, 0 .. classes-1.")
    image_column: str = field("image", "Images: a scilens tensor column, or a flattened array of numbers.")
    image_shape: list[int] | None = field(None, "Shape of one image when the image column is a flattened array, "
                                          "e.g. [28, 28, 1]; ignored for tensor columns.",
                                          check=lambda s: all(n > 0 for n in s), check_doc="positive lengths")


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
    data: ImageColumns = field(ImageColumns(), "Columns of the image table given as images.")
    batch_size: int = field(128, "Images per model call.", min=1, max=65_536)
