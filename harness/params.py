"""Typed parameter dataclasses from plain dicts (TOML tables), with clear errors.

Supported field types: bool, int, float (ints accepted), str, Literal[...], X | None, int | float,
list[str], list[int], dict. Unknown keys raise a ConfigError with the nearest valid name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from harness.errors import ConfigError, suggest

D = TypeVar("D")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "nothing"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type `tp` (light coercion: int -> float, str -> number for CLI overrides)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        # try exact-type members first so an int stays an int in `int | float`
        for arg in sorted(args, key=lambda a: a is float):
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError:
                continue
        raise _type_error(key, value, tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(key, f"got {value!r}{suggest(str(value), map(str, get_args(tp)))}",
                          f"use one of {', '.join(repr(a) for a in get_args(tp))}")
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(key, value, tp)
        (inner,) = get_args(tp)
        return [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _type_error(key, value, tp)
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, value, tp)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, value, tp)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(key, value, tp)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, value, tp)
    raise TypeError(f"unsupported parameter type {tp!r} for {key}")


def _type_error(key: str, value: Any, tp: Any) -> ConfigError:
    return ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}",
                       f"write {_article(_type_name(tp))} {_type_name(tp)} value")


def _article(word: str) -> str:
    """'an' before a vowel sound ("an int", "an 'auto'"), else 'a'."""
    return "an" if word.lstrip("'\"").lower()[:1] in tuple("aeio") else "a"


def field_names(cls: type) -> list[str]:
    """Names of the dataclass fields of `cls`."""
    return [f.name for f in dataclasses.fields(cls)]


def build(cls: type[D], data: dict[str, Any], prefix: str = "", ignore: set[str] | None = None) -> D:
    """Instantiate dataclass `cls` from `data`; unknown keys, wrong types, missing required keys raise ConfigError.

    `prefix` is prepended to key names in messages (e.g. "params."); keys in `ignore` are skipped silently.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if ignore and key in ignore:
            continue
        if key not in fields:
            raise ConfigError(f"{prefix}{key}", f"unknown key{suggest(key, fields)}",
                              f"remove it or use one of: {', '.join(fields)}")
        kwargs[key] = coerce(value, hints[key], f"{prefix}{key}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        if required and name not in kwargs:
            raise ConfigError(f"{prefix}{name}", "missing required key", f"add `{name} = ...` to the config")
    return cls(**kwargs)


def parse_override_value(text: str) -> Any:
    """Parse the value part of `--set key=value` as a TOML value, falling back to a plain string."""
    import tomllib  # noqa: PLC0415  (3.11+; tomli provides the same on 3.10 via harness.config)

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except Exception:  # noqa: BLE001 - anything unparsable is a bare string
        return text
