"""The config of the ``assert`` job."""

from __future__ import annotations

from dataclasses import dataclass

from scilens.core.config import field
from scilens.core.job import JobConfig

__all__ = ["AssertConfig"]


@dataclass
class AssertConfig(JobConfig):
    """Config of ``scilens assert``."""

    assertions: str = field("diagnosis", "Assertion set: a built-in name (glaucoma, diagnosis, astro: "
                            "conf/assertions/<name>.yaml) or a YAML path.")
    top: int = field(10, "Top-flagged items shown in the report.", min=1)
