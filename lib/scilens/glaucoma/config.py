"""The configs of the glaucoma study's jobs: one dataclass per job, its sections beside it.

Every field carries its type, default, documentation and bounds (:func:`scilens.core.config.field`);
the jobs' ``--help`` and ``conf/*.yaml`` are generated from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from scilens.core.config import Config, ConfigError, field
from scilens.core.job import JobConfig
from scilens.glaucoma import features as feature_lists
from scilens.glaucoma.cohort import CohortRules
from scilens.glaucoma.metrics import BootstrapConfig
from scilens.glaucoma.models import XGBParams
from scilens.glaucoma.preprocess import FundusPreprocessConfig, OctPreprocessConfig
from scilens.glaucoma.splits import SplitConfig
from scilens.glaucoma.tracking import MlflowConfig
from scilens.vision.densenet import DenseNetConfig
from scilens.vision.saliency import SaliencyConfig
from scilens.vision.train_common import BACKENDS, DistributedTrainingConfig, default_backend
from scilens.vision.transfer import TransferConfig

__all__ = [
    "CfpSection",
    "GlaucomaClinicalConfig",
    "GlaucomaCohortConfig",
    "GlaucomaFinalConfig",
    "GlaucomaImagesConfig",
    "GlaucomaInferConfig",
    "GlaucomaStatsConfig",
    "GlaucomaTrainConfig",
    "OctSection",
    "PetastormSection",
    "SaliencySection",
    "final_evaluation_config",
]


# The clinical jobs' configs.


@dataclass
class GlaucomaCohortConfig(JobConfig):
    """Config of ``scilens glaucoma-cohort``."""

    fields: str = field("ukb_fields.yaml", "Field map: a YAML path, or a name looked up in the config directories.")
    rules: CohortRules = field(CohortRules(), "Cohort classes and exclusion rules.")
    healthy_per_glaucoma: float | None = field(
        0.893, "Healthy subjects drawn per glaucoma subject (null: keep every eligible one). The dissertation "
        "has 771 healthy per 863 glaucoma subjects and does not say how controls were drawn; we draw at random.",
        min=0.0)
    splits: SplitConfig = field(SplitConfig(), "Test and validation split sizes; its seed also draws the controls.")
    buckets: int = field(16, "Participant batches the selection runs in (Spark tasks).", min=1)


@dataclass
class GlaucomaClinicalConfig(JobConfig):
    """Config of ``scilens glaucoma-clinical``."""

    models: list[str] = field(["BM1", "BM2", "BM3"], "Baseline models to fit (scilens.glaucoma.features).",
                              choices=tuple(feature_lists.BASELINE_MODELS))
    xgb: XGBParams = field(XGBParams(), "Gradient-boosted trees (paper hyper-parameters).")
    bootstrap: BootstrapConfig = field(BootstrapConfig(), "Bootstrap confidence intervals.")
    threshold: float | None = field(None, "Probability above which an eye is called glaucoma (accuracy, PTG); "
                                    "null: the Youden-optimal threshold on the validation split.", min=0.0, max=1.0)
    shap_splits: list[str] = field(["train", "validation", "test"], "Splits whose eyes get SHAP values.",
                                   choices=("train", "validation", "test", "ptg"))
    top_k: int = field(10, "Features listed by mean |SHAP|.", min=1)
    dependence: list[str] = field(["age", "iop", "bmi", "fvc"],
                                  "Features with SHAP dependence plots (if in the model).")
    interaction_model: str | None = field("BM3", "Model whose SHAP interaction values are computed (null: none).")
    interaction_with: str = field("age", "Feature whose interactions are shown.")
    interactions: list[str] = field(["iop", "bmi", "fvc"], "Features paired with interaction_with.")
    interaction_eyes: int = field(300, "Most eyes (a seeded sample of shap_splits) given SHAP interaction values, "
                                  "which cost about as many times SHAP as there are features.", min=10)
    mlflow: MlflowConfig = field(MlflowConfig(), "Experiment tracking.")

    def validate(self) -> None:
        """Reject an interaction model that is not fitted, or interaction features it does not have."""
        if self.interaction_model is not None and self.interaction_model not in self.models:
            raise ConfigError(f"interaction_model: {self.interaction_model!r} is not one of models {self.models}")
        if self.interaction_model is not None:
            names = feature_lists.BASELINE_MODELS[self.interaction_model]
            for name in [self.interaction_with, *self.interactions]:
                if name not in names:
                    raise ConfigError(f"interactions: {name!r} is not a feature of {self.interaction_model}")


@dataclass
class GlaucomaStatsConfig(JobConfig):
    """Config of ``scilens glaucoma-stats``."""

    ancova: list[str] = field(["fvc", "pef"], "Measures analysed by ANCOVA on group with the covariate.")
    covariate: str = field("age", "ANCOVA covariate.")
    dunn: list[str] = field(["fvc", "pef", "age", "bmi", "iop"], "Measures compared pairwise by Dunn's test.")
    per_eye: list[str] = field(["iop"], "Measures taken per eye (analysed per eye; the rest per subject).")
    adjust: str = field("bonferroni", "p-value adjustment of Dunn's test.", choices=("bonferroni", "none"))

    def validate(self) -> None:
        """Reject a covariate that is also analysed as a response."""
        if self.covariate in self.ancova:
            raise ConfigError(f"ancova: {self.covariate!r} is the covariate")


@dataclass
class GlaucomaFinalConfig(JobConfig):
    """Config of ``scilens glaucoma-final``."""

    cohort: str = field("", "glaucoma-cohort output (or its eyes.parquet): labels, splits, clinical features. "
                        "Required.")
    clinical: str | None = field(None, "glaucoma-clinical output whose report.json the imaging and final sections "
                                 "are added to (next to BM1-BM3); null: a report of its own.")
    baseline: str = field("BM3", "Clinical features the image probabilities are added to.",
                          choices=tuple(feature_lists.BASELINE_MODELS))
    xgb: XGBParams = field(XGBParams(), "Gradient-boosted trees (paper hyper-parameters).")
    bootstrap: BootstrapConfig = field(BootstrapConfig(), "Bootstrap confidence intervals.")
    threshold: float | None = field(None, "Probability above which an eye is called glaucoma (accuracy, PTG); "
                                    "null: the Youden-optimal threshold on the validation split.", min=0.0, max=1.0)
    top_k: int = field(10, "Features listed by mean |SHAP|.", min=1)
    mlflow: MlflowConfig = field(MlflowConfig(), "Experiment tracking.")


def final_evaluation_config(config: GlaucomaFinalConfig) -> GlaucomaClinicalConfig:
    """The clinical evaluation settings (metrics, threshold, SHAP ranking) of the final job's models.

    Parameters
    ----------
    config
        The final job's config.

    Returns
    -------
    GlaucomaClinicalConfig
        A clinical config of the one ``baseline`` model, sharing the final job's XGBoost, bootstrap,
        threshold, ``top_k`` and MLflow settings, SHAP on train, validation and test, no interactions.
    """
    return GlaucomaClinicalConfig(models=[config.baseline], xgb=config.xgb, bootstrap=config.bootstrap,
                                  threshold=config.threshold, top_k=config.top_k, interaction_model=None,
                                  shap_splits=["train", "validation", "test"], mlflow=config.mlflow)

# The imaging jobs' configs.

@dataclass
class GlaucomaImagesConfig(JobConfig):
    """Config of ``scilens glaucoma-images``."""

    cohort: str = field("", "eyes.parquet written by scilens glaucoma-cohort (or its output directory): "
                        "which eyes, their labels and splits. Required.")
    modalities: list[str] = field(["oct", "cfp"], "Image kinds to process.", choices=("oct", "cfp"))
    n_scans: int = field(128, "B-scans every OCT volume must have.", min=1)
    scan_height: int | None = field(512, "Height every B-scan must have, pixels (null: any, one per volume).",
                                    min=1)
    scan_width: int | None = field(650, "Width every B-scan must have, pixels (null: any, one per volume).",
                                   min=1)
    oct: OctPreprocessConfig = field(OctPreprocessConfig(), "OCT preprocessing.")
    cfp: FundusPreprocessConfig = field(FundusPreprocessConfig(), "Fundus photo preprocessing.")
    figure_eyes: int = field(4, "Eyes shown in the example figures.", min=0)
    files_per_task: int = field(1, "Image files one Spark task reads: 1 for full-size volumes (40 MB each); more "
                                "for many small files, where the per-task overhead dominates.", min=1)

    def validate(self) -> None:
        """Check that the B-scan size is given whole or not at all."""
        if (self.scan_height is None) != (self.scan_width is None):
            raise ConfigError("scan_height, scan_width: give both or neither")


@dataclass
class SaliencySection(Config):
    """Which images get saliency masks, and how."""

    eyes: int = field(4, "Eyes of the evaluation split (half glaucoma, half healthy) whose images get masks.",
                      min=0)
    scan_stride: int = field(16, "Every k-th B-scan of those eyes, counted from the central scan both ways.",
                             min=1)
    methods: SaliencyConfig = field(SaliencyConfig(), "Saliency methods.")


@dataclass
class GlaucomaInferConfig(JobConfig):
    """Config of ``scilens glaucoma-infer``."""

    oct_model: str | None = field(None, "OCT model: a model.keras, or the glaucoma-train output holding one.")
    cfp_model: str | None = field(None, "Fundus model: a model.keras, or the glaucoma-train output holding one.")
    batch_size: int = field(64, "Images per model call on an executor.", min=1)
    evaluation_split: str = field("test", "Split the AUCs are reported on.",
                                  choices=("train", "validation", "test", "ptg"))
    bootstrap: BootstrapConfig = field(BootstrapConfig(), "Bootstrap confidence intervals (subjects resampled).")
    ensemble: XGBParams = field(XGBParams(), "Per-retina XGBoost over the scan probabilities (Fig. 3.4).")
    saliency: SaliencySection = field(SaliencySection(), "Saliency masks.")


@dataclass
class OctSection(Config):
    """The OCT model and its training (defaults: the paper's)."""

    model: DenseNetConfig = field(DenseNetConfig(), "DenseNet architecture.")
    training: DistributedTrainingConfig = field(DistributedTrainingConfig(), "Training protocol.")


@dataclass
class CfpSection(Config):
    """The fundus model and its training (defaults: the paper's)."""

    model: TransferConfig = field(TransferConfig(), "Transfer-learning model.")
    training: DistributedTrainingConfig = field(
        DistributedTrainingConfig(epochs=20, batch_size=400, learning_rate=1e-5, adam_epsilon=1e-7,
                                  label_smoothing=0.0),
        "Training protocol (paper: Adam lr 1e-5, 20 epochs, batch 400).")


@dataclass
class PetastormSection(Config):
    """Where and how the training datasets are materialised.

    Petastorm for backend horovod, plain Parquet for tf-distribute.
    """

    dataset_dir: str | None = field(None, "Directory for the datasets (<dir>/<modality>/<split> for horovod, "
                                    "<dir>/parquet/<modality>/<split> for tf-distribute), on a filesystem all "
                                    "executors share; reused when written from the same input. null: inside "
                                    "the output.")
    overwrite: bool = field(False, "Replace datasets in dataset_dir written from another input (a dataset of "
                            "another schema is never replaced).")
    row_groups_per_rank: int = field(4, "Parquet files per rank at least (both backends shard by row group; "
                                     "more groups shuffle more finely).", min=1)
    row_group_size_mb: int = field(32, "Parquet row-group size, MB.", min=1)


@dataclass
class GlaucomaTrainConfig(JobConfig):
    """Config of ``scilens glaucoma-train``."""

    modality: str = field("oct", "Which model: oct (B-scans) or cfp (fundus photos).", choices=("oct", "cfp"))
    backend: str = field(default_backend(), "Distributed training: horovod (Horovod ranks, Petastorm datasets) or "
                         "tf-distribute (tf.distribute.MultiWorkerMirroredStrategy in Spark barrier tasks, Parquet "
                         "read with pyarrow). Default: horovod where Horovod and Petastorm are installed, else "
                         "tf-distribute.", choices=BACKENDS)
    oct: OctSection = field(OctSection(), "OCT model and training.")
    cfp: CfpSection = field(CfpSection(), "Fundus model and training.")
    petastorm: PetastormSection = field(PetastormSection(), "Petastorm datasets.")
    mlflow: MlflowConfig = field(MlflowConfig(), "Experiment tracking: parameters, per-epoch metrics, the model.")
