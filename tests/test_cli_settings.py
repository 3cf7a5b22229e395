"""Command-line settings: Spark confs through --set, numbers bounded before Spark starts, secrets redacted."""

from __future__ import annotations

import pytest

from scilens.cli import JOBS, load_job
from scilens.core.config import ConfigError, load_config
from scilens.core.manifest import REDACTED, redact


def test_spark_conf_keys_with_dots_are_set_from_the_command_line():
    job = load_job("ingest")
    config = load_config(job.config_class, None, ["spark.conf.spark.driver.memory=8g",
                                                  "spark.conf.spark.sql.adaptive.enabled=true",
                                                  "spark.conf.spark.sql.shuffle.partitions=007",
                                                  "spark.master=local[2]"])
    assert config.spark.conf == {"spark.driver.memory": "8g", "spark.sql.adaptive.enabled": "true",
                                 "spark.sql.shuffle.partitions": "007"}  # Spark confs are text, as written
    assert config.spark.master == "local[2]"
    assert load_config(job.config_class, None, ["spark.conf={a.b: c}"]).spark.conf == {"a.b": "c"}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_job_refuses_integers_spark_cannot_take_and_non_finite_numbers(name):
    """The generic bound: any int field without its own max stops at 2**31 - 1; floats must be finite."""
    import dataclasses
    import typing

    from scilens.core.config import Config

    cls = load_job(name).config_class
    checked = 0

    def walk(section: type, prefix: str) -> None:
        nonlocal checked
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            tp = hints[f.name]
            if isinstance(tp, type) and issubclass(tp, Config):
                walk(tp, f"{prefix}{f.name}.")
                continue
            args = set(typing.get_args(tp)) | {tp}
            if f.metadata.get("choices"):
                continue
            if int in args:
                with pytest.raises(ConfigError, match=f"{prefix}{f.name}"):
                    load_config(cls, None, [f"{prefix}{f.name}=3000000000"])
                checked += 1
            elif float in args:
                with pytest.raises(ConfigError, match=f"{prefix}{f.name}"):
                    load_config(cls, None, [f"{prefix}{f.name}=.nan"])
                checked += 1

    walk(cls, "")
    assert checked > 0 or name in {"glaucoma-stats"}, f"{name} has no numeric field?"


def test_redact_hides_secret_values_at_any_depth_and_in_set_arguments():
    manifest = {"config": {"spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": "s3cr3t",
                                              "spark.hadoop.fs.s3a.access.key": "AKIA",
                                              "spark.databricks.token": "dapi123",
                                              "spark.executor.memory": "4g"}}},
                "command": ["scilens", "ingest", "--set", "spark.conf.javax.jdo.option.ConnectionPassword=pw1"],
                "key_columns": ["eid"]}
    out = redact(manifest)
    conf = out["config"]["spark"]["conf"]
    assert conf["spark.executor.memory"] == "4g" and out["key_columns"] == ["eid"]
    assert {conf[k] for k in conf if k != "spark.executor.memory"} == {REDACTED}
    assert out["command"][-1] == f"spark.conf.javax.jdo.option.ConnectionPassword={REDACTED}"


def test_yaml_config_is_loaded_safely(tmp_path):
    """A config file cannot construct Python objects (yaml.safe_load): nothing runs, the file is refused."""
    pwned = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"spark: !!python/object/apply:os.system ['touch {pwned}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(load_job("ingest").config_class, config)
    assert not pwned.exists()
