"""The configs of the diagnosis study's jobs: ``train-model``, ``sample``, ``activations`` and ``saliency``.

Each job's config is one class here, its sections the typed configs of the
parts it runs: :class:`ImageTableConfig` (the input table's columns, read by
:mod:`~scilens.diagnosis.image_table`),
:class:`~scilens.diagnosis.sampling.SamplingConfig` (the samplers) and
:class:`~scilens.vision.training.TrainingConfig` (the classifier).
"""

from __future__ import annotations

from dataclasses import dataclass

from scilens.core.config import ConfigError, field
from scilens.core.job import JobConfig
from scilens.diagnosis.sampling import DRIVER_ONLY, TECHNIQUES, SamplingConfig
from scilens.vision.inference import ImageTableConfig
from scilens.vision.saliency import SaliencyConfig
from scilens.vision.training import TrainingConfig

__all__ = ["ActivationsConfig", "ImageTableConfig", "SaliencyJobConfig", "SampleConfig", "TrainModelConfig"]


@dataclass
class TrainModelConfig(JobConfig):
    """Config of ``scilens train-model``."""

    data: ImageTableConfig = field(ImageTableConfig(), "Columns of the input image table.")
    training: TrainingConfig = field(TrainingConfig(), "Architecture and training protocol.")
    n_classes: int | None = field(None, "Number of classes; null: the largest label + 1.", min=2)
    test: str | None = field(None, "Image table to report the trained model's accuracy on (optional).")


def _fractions_ok(values: list[float]) -> bool:
    return bool(values) and all(0 < f <= 1 for f in values)


@dataclass
class SampleConfig(JobConfig):
    """Config of ``scilens sample``."""

    model: str | None = field(None, "Saved Keras model (.keras) to diagnose; readable from every executor.")
    data: ImageTableConfig = field(ImageTableConfig(), "Columns of the input image table.")
    layer: str | None = field(None, "Latent layer; null: the last hidden layer (the one feeding the final dense "
                              "layer).")
    techniques: list[str] = field(["maxmargin"], "Sampling techniques to run.", choices=tuple(TECHNIQUES))
    fractions: list[float] = field([0.05, 0.1, 0.2, 0.4, 0.8], "Sample sizes as fractions of the rows.",
                                   check=_fractions_ok, check_doc="a non-empty list of values in (0, 1]")
    sampling: SamplingConfig = field(SamplingConfig(), "Sampler parameters: tuning_factor (j), seed, ...")
    fit: str = field("auto", "Where samplers run: driver (collect the latent table), spark (MLlib; not for "
                     "vas, eb_tree, gmm_spherical*, maxmargin_label_aware; MaxMargin in its spark-parity setting), "
                     "or auto: driver when rows x latent dims <= driver_max_values.",
                     choices=("auto", "driver", "spark"))
    driver_max_values: int = field(20_000_000, "auto: largest latent table (rows x dims) fitted on the driver.",
                                   min=1)
    batch_size: int = field(256, "Images per model call in inference.", min=1)

    def validate(self) -> None:
        """Check what the fields cannot check alone.

        Raises
        ------
        ConfigError
            Without techniques, or for ``fit: spark`` with a technique that runs on the driver only.
        """
        if not self.techniques:
            raise ConfigError("techniques: name at least one technique")
        driver_only = self.driver_only()
        if self.fit == "spark" and driver_only:
            raise ConfigError(f"fit: 'spark' cannot run {', '.join(driver_only)} (driver only); use fit=driver "
                              f"or auto")

    def driver_only(self) -> list[str]:
        """The chosen techniques that have no Spark draw.

        Returns
        -------
        list of str
        """
        return [t for t in self.techniques if t in DRIVER_ONLY]

    def sampling_path(self, rows: int, dims: int) -> str:
        """Where the samplers run for a latent table of ``rows`` x ``dims``.

        Parameters
        ----------
        rows, dims : int
            Shape of the latent table.

        Returns
        -------
        str
            ``driver`` or ``spark``: ``fit``, or for ``auto`` the driver while the table has at most
            ``driver_max_values`` values.
        """
        if self.fit != "auto":
            return self.fit
        return "driver" if rows * dims <= self.driver_max_values else "spark"


@dataclass
class ActivationsConfig(JobConfig):
    """Config of ``scilens activations``."""

    model: str | None = field(None, "Saved Keras model (.keras); readable from every executor.")
    data: ImageTableConfig = field(ImageTableConfig(), "Columns of the input image table.")
    layers: list[str] = field([], "Layers to store; empty: every layer that computes something (input copies, "
                              "reshapes and dropout left out), logits included.")
    ids_from: str | None = field(None, "Parquet file or directory with an id column (e.g. a sample of "
                                 "`scilens sample`): store only these items.")
    ids: list[int] = field([], "More ids to store (with ids_from empty too: every row).")
    batch_size: int = field(128, "Images per model call.", min=1)


@dataclass
class SaliencyJobConfig(SaliencyConfig, JobConfig):
    """Config of ``scilens saliency``: the saliency settings (methods, ...) and which images and output."""

    model: str | None = field(None, "Saved Keras image classifier (.keras); readable from every executor.")
    data: ImageTableConfig = field(ImageTableConfig(), "Columns of the input image table.")
    target: str = field("predicted", "Output each mask explains: predicted (the model's class), label (the true "
                        "class) or a class number; a single-output model always explains its one output.")
    ids_from: str | None = field(None, "Parquet file or directory with an id column (e.g. a sample of "
                                 "`scilens sample`): masks of these items only.")
    ids: list[int] = field([], "More ids (with ids_from empty too: every row).")
    tasks: int | None = field(None, "Spark tasks the images are spread over; null: twice the default "
                              "parallelism, at most one per 8 images.", min=1)
