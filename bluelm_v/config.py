"""Configs are data: configs/{models,devices,suites}/*.json, shipped inside the wheel.

One typed loader for all of them: ``load(kind, name_or_path, cls)`` reads the JSON, checks its ``version`` and
turns it into the dataclass ``cls`` (nested dataclasses, lists, dicts, Optional), refusing missing or unknown
fields with an error that names the file and the field path. Each concept declares its own dataclasses
(``bluelm_v.models.config.ModelConfig``, ``bluelm_v.sim.devices.Device``, ...).
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

from bluelm_v._paths import configs_dir

KINDS = ("models", "devices", "suites")
SUPPORTED_VERSIONS = (1,)
T = TypeVar("T")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class Sourced:
    """A number with where it comes from: a source tag of docs/sources.md ("P", "B2", ...),
    "measured" (with what measured it) or "fitted" (with what it was fitted on)."""

    value: float
    source: str
    unit: str = ""
    note: str = ""


def list_configs(kind: str) -> list[str]:
    _check_kind(kind)
    d = configs_dir() / kind
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def config_path(kind: str, name_or_path: Union[str, Path]) -> Path:
    _check_kind(kind)
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        if not p.is_file():
            raise ConfigError(f"{kind} config file not found: {p}")
        return p
    path = configs_dir() / kind / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(list_configs(kind)) or "none"
        raise ConfigError(f"unknown {kind[:-1]} config {str(name_or_path)!r}; shipped: {known}")
    return path


def load_raw(kind: str, name_or_path: Union[str, Path]) -> dict:
    """The JSON object of a config, with its version checked."""
    path = config_path(kind, name_or_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a JSON object")
    version = data.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise ConfigError(f"{path}: version {version!r} is not supported (expected one of {SUPPORTED_VERSIONS})")
    return data


def load(kind: str, name_or_path: Union[str, Path], cls: type[T]) -> T:
    """Load and validate a config into the dataclass ``cls``."""
    path = config_path(kind, name_or_path)
    data = load_raw(kind, path)
    return from_dict(cls, data, where=str(path))


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from plain JSON data, checking every field's type."""
    return _convert(cls, data, where)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown config kind {kind!r}: expected one of {', '.join(KINDS)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object for {tp.__name__}, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - set(fields) - {"version", "$comment"})
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} for {tp.__name__}")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = _convert(hints[name], value[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing required field {name!r} for {tp.__name__}")
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = args or (Any,)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (tuple, typing.Tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        _, vt = args or (str, Any)
        return {k: _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


__all__ = ["ConfigError", "KINDS", "Sourced", "config_path", "from_dict", "list_configs", "load", "load_raw"]
