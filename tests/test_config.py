"""Typed configs: YAML, --set overrides, validation errors that name field, value and rule; help text."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scilens.core.config import Config, ConfigError, describe, field, load_config


@dataclass
class Inner(Config):
    radius: int = field(1, "Patch radius, voxels.", min=0)
    method: str = field("rician", "Noise model.", choices=("rician", "gaussian"))


@dataclass
class Outer(Config):
    fractions: list[float] = field([0.05, 0.1], "Sample fractions.", min=0.0, max=1.0,
                                   check=lambda v: len(v) > 0, check_doc="at least one fraction")
    name: str | None = field(None, "Optional name.")
    inner: Inner = field(Inner(), "Denoising settings.")
    tags: dict[str, str] = field({}, "Free-form tags.")


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("fractions: [0.2]\ninner:\n  radius: 3\n")
    config = load_config(Outer, path, ["inner.method=gaussian", "name=007", "tags={a: b}"])
    assert config.fractions == [0.2]
    assert config.inner.radius == 3 and config.inner.method == "gaussian"
    assert config.name == "007"  # YAML reads 007 as a number; a str field keeps the text
    assert config.tags == {"a": "b"}
    assert config.to_dict()["inner"] == {"radius": 3, "method": "gaussian"}
    assert Outer().inner is not Outer().inner  # defaults are not shared between instances


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inner.radius=-1", "inner.radius: -1 is below the minimum 0"),
        ("inner.method=poisson", "inner.method: 'poisson' is not allowed; choose one of 'rician', 'gaussian'"),
        ("fractions=[0.5, 1.5]", "fractions: 1.5 is above the maximum 1.0"),
        ("fractions=[]", "fractions: [] is not allowed; at least one fraction"),
        ("inner.radius=two", "inner.radius: 'two' is not an int"),
        ("inner.size=3", "inner.size: unknown field; known fields are radius, method"),
        ("radius", "--set expects key=value"),
    ],
)
def test_bad_values_name_field_value_and_rule(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(Outer, None, [override])
    assert message in str(info.value)


def test_bad_yaml_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml must hold a mapping"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_every_field_needs_a_doc():
    with pytest.raises(TypeError):
        field(1)


def test_describe_lists_every_field_with_doc():
    text = "\n".join(describe(Outer))
    for name, doc in [("fractions", "Sample fractions."), ("inner.radius", "Patch radius, voxels."),
                      ("inner.method", "Noise model."), ("tags", "Free-form tags.")]:
        assert name in text and doc in text
    assert "one of rician, gaussian" in text and ">= 0" in text
