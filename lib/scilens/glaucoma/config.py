"""The configs of the glaucoma study's jobs: one class per job, each field typed, bounded and documented."""

from __future__ import annotations

from dataclasses import dataclass

from scilens.core.config import ConfigError, field
from scilens.core.job import JobConfig
from scilens.glaucoma import features as feature_lists
from scilens.glaucoma.cohort import CohortRules
from scilens.glaucoma.metrics import BootstrapConfig
from scilens.glaucoma.models import XGBParams
from scilens.glaucoma.splits import SplitConfig
from scilens.glaucoma.tracking import MlflowConfig

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
