"""Typed, documented job configs: the one config loader of scilens.

A config is a dataclass deriving from :class:`Config` whose fields are
declared with :func:`field`, giving each a type (the annotation), a default,
a doc string and optional validation, in the manner of Rubin's pex_config::

    @dataclass
    class DenoiseConfig(Config):
        patch_radius: int = field(1, "Radius of the similarity patch, voxels.", min=0)

Configs nest (a field whose type is another Config), load from YAML with
:func:`load_config`, take command-line overrides ``a.b=value`` (the value is
read as YAML, so ``--set fractions=[0.05,0.1]`` works) and validate on
construction: a bad value raises :class:`ConfigError` naming the field, the
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["Config", "ConfigError", "describe", "field", "load_config", "parse_override"]

C = TypeVar("C", bound="Config")
_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


def field(
    default: Any = _MISSING,
    doc: str = "",
    *,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    check: Callable[[Any], bool] | None = None,
    check_doc: str = "",
) -> Any:
    """Declare a config field.

    Parameters
    ----------
    default
        Default value; lists, dicts and nested configs are copied per instance.
    doc
        What the field means, with its unit; shown by ``scilens <job> --help``.
    choices
        Allowed values.
    min, max
        Inclusive bounds for numbers (applied to each element of a list).
    check, check_doc
        Extra predicate on the value, and the phrase describing what it allows.
    """
    if not doc:
        raise TypeError("every config field needs a doc string")
    meta = {"doc": doc, "choices": tuple(choices) if choices is not None else None,
            "min": min, "max": max, "check": check, "check_doc": check_doc}
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (list, dict, set)) or isinstance(default, Config):
        return dataclasses.field(default_factory=functools.partial(_copy, default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if isinstance(value, Config):
        return dataclasses.replace(value)
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " | ".join(_type_name(a) for a in args) + " | null"
    if origin is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"dict[{_type_name(k)}, {_type_name(v)}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert a YAML/CLI value to ``tp``, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, name)
    if origin is list:
        return _coerce_list(value, tp, name)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: {value!r} is not a mapping")
        return {_coerce(k, key_tp, name): _coerce(v, val_tp, f"{name}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return tp.from_dict(value, prefix=name)
    return _coerce_scalar(value, tp, name)


def _coerce_union(value: Any, tp: Any, name: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in (a for a in args if a is not type(None)):
        try:
            return _coerce(value, arg, name)
        except ConfigError:
            continue
    raise ConfigError(f"{name}: {value!r} is not a {_type_name(tp)}")


def _coerce_list(value: Any, tp: Any, name: str) -> list[Any]:
    (item_tp,) = typing.get_args(tp)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        value = [value]  # `--set fractions=0.05` means a one-element list
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name}: {value!r} is not a list")
    return [_coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value)]


def _coerce_scalar(value: Any, tp: Any, name: str) -> Any:
    """A bool, int, float or str field's value (or anything for ``Any``), strictly: no bool is a number."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: {value!r} is not a bool (true/false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name}: {value!r} is not an int")
    if tp is float:
        if number:
            return float(value)
        raise ConfigError(f"{name}: {value!r} is not a float")
    if tp is str:
        if isinstance(value, str):
            return value
        if number:
            return str(value)  # YAML reads `subject: 007` as a number
        raise ConfigError(f"{name}: {value!r} is not a string")
    if tp is Any:
        return value
    raise TypeError(f"config field {name} has unsupported type {tp!r}")


INT_LIMIT = 2**31 - 1
"""Largest int a field takes without its own ``max``: Spark and the JVM count partitions, rows and sizes in
32-bit ints, so a larger value would pass here and fail deep inside a run."""


def _validate(value: Any, f: dataclasses.Field, name: str) -> None:
    meta = f.metadata
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item is None:
            continue
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{name}: {item!r} is not a finite number")
        if (isinstance(item, int) and not isinstance(item, bool) and meta.get("max") is None
                and not -INT_LIMIT <= item <= INT_LIMIT):
            raise ConfigError(f"{name}: {item!r} is outside the range Spark and the JVM take for integers "
                              f"(at most {INT_LIMIT})")
        if meta.get("choices") is not None and item not in meta["choices"]:
            allowed = ", ".join(repr(c) for c in meta["choices"])
            raise ConfigError(f"{name}: {item!r} is not allowed; choose one of {allowed}")
        if meta.get("min") is not None and item < meta["min"]:
            raise ConfigError(f"{name}: {item!r} is below the minimum {meta['min']!r}")
        if meta.get("max") is not None and item > meta["max"]:
            raise ConfigError(f"{name}: {item!r} is above the maximum {meta['max']!r}")
    if meta.get("check") is not None and value is not None and not meta["check"](value):
        raise ConfigError(f"{name}: {value!r} is not allowed; {meta.get('check_doc') or 'failed its check'}")


@dataclasses.dataclass
class Config:
    r"""Base class of typed configs; subclasses are dataclasses of :func:`field`\ s."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            name = f.name
            value = _coerce(getattr(self, name), hints[name], name)
            _validate(value, f, name)
            object.__setattr__(self, name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; override and raise ConfigError."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any] | None, prefix: str = "") -> C:
        """Build from a mapping, rejecting unknown keys; errors name the field's full path."""
        data = dict(data or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        try:
            for key in sorted(set(data) - set(known)):
                raise ConfigError(f"{key}: unknown field; known fields are {', '.join(known)}")
            for name, f in known.items():
                if name not in data and f.default is _MISSING and f.default_factory is _MISSING:
                    raise ConfigError(f"{name}: required field is missing")
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}.{exc}" if prefix else str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (nested configs become dicts); what a manifest records."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def with_overrides(self: C, overrides: Iterable[str]) -> C:
        """A copy with ``a.b=value`` overrides applied.

        Values are read as YAML (``[0.05, 0.1]`` is a list, ``true`` a bool),
        except for string fields, which take the text as written (``007``).
        """
        data = self.to_dict()
        for text in overrides:
            keys, value = parse_override(text)
            node: dict[str, Any] = data
            cls: type | None = type(self)  # None once inside a mapping field: it has no typed fields
            for i, key in enumerate(keys[:-1]):
                if not isinstance(node.get(key), dict):
                    raise ConfigError(f"--set {text}: {key!r} is not a config section")
                section = _section_type(cls, key)
                node, cls = node[key], section
                if section is None:  # a mapping field (spark.conf): the rest of the dotted name is one key
                    keys = [*keys[:i + 1], ".".join(keys[i + 1:])]
                    break
            if value is not None and (cls is None or _is_text_field(cls, keys[-1])):
                value = text.partition("=")[2].strip()
            node[keys[-1]] = value
        return type(self).from_dict(data)


def _section_type(cls: type | None, key: str) -> type | None:
    hints = typing.get_type_hints(cls) if cls is not None else {}
    tp = hints.get(key)
    return tp if isinstance(tp, type) and issubclass(tp, Config) else None


def _is_text_field(cls: type, key: str) -> bool:
    tp = typing.get_type_hints(cls).get(key)
    return tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType)
                         and set(typing.get_args(tp)) == {str, type(None)})


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(cls: type[C], path: str | Path | None = None, overrides: Iterable[str] = ()) -> C:
    """Load a config: defaults, then the YAML file, then ``--set`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of fields, not {type(data).__name__}")
    return cls.from_dict(data).with_overrides(overrides)


def describe(cls: type[Config], prefix: str = "") -> list[str]:
    """One help line per field (nested sections expanded): name, type, default, doc."""
    lines = []
    hints = typing.get_type_hints(cls)
    defaults = cls.from_dict({}) if _has_all_defaults(cls) else None
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        if isinstance(tp, type) and issubclass(tp, Config):
            lines.append(f"  {name}.*  {f.metadata.get('doc', '')}")
            lines.extend(describe(tp, prefix=f"{name}."))
            continue
        default = getattr(defaults, f.name) if defaults is not None else "(required)"
        extra = []
        if f.metadata.get("choices"):
            extra.append("one of " + ", ".join(map(str, f.metadata["choices"])))
        if f.metadata.get("min") is not None:
            extra.append(f">= {f.metadata['min']}")
        if f.metadata.get("max") is not None:
            extra.append(f"<= {f.metadata['max']}")
        if f.metadata.get("check_doc"):
            extra.append(f.metadata["check_doc"])
        rule = f" [{'; '.join(extra)}]" if extra else ""
        lines.append(f"  {name} ({_type_name(tp)}, default {default!r}){rule}\n      {f.metadata.get('doc', '')}")
    return lines


def _has_all_defaults(cls: type[Config]) -> bool:
    return all(f.default is not _MISSING or f.default_factory is not _MISSING for f in dataclasses.fields(cls))
