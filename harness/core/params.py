"""Typed parameter dataclasses from plain dicts (TOML tables), with clear errors.

Supported field types: bool, int, float (ints accepted), str, Literal[...], X | None, int | float,
list[str], list[int], dict. Unknown keys raise a ConfigError with the nearest valid name.

Every number must be finite and fit a 64-bit integer; a field may narrow that with a `Domain` declared in its
metadata (`x: int = field(default=1, metadata=domain(ge=1, le=4096))`), checked by `build` for the value (or each
element of a list value).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from harness.core.errors import ConfigError, suggest

D = TypeVar("D")

INT64_MAX = 2**63 - 1
#: the longest input any key may ask for, in tokens (2^25 ≈ 33.5M: beyond every released context window)
MAX_TOKENS = 2**25
#: nesting depth of tables / arrays a config may have (deeper is certainly a broken file)
MAX_DEPTH = 32


@dataclass(frozen=True)
class Domain:
    """Allowed range of a numeric field (or of each element of a list field); `also` lists extra allowed values
    (e.g. -1 meaning "off"). `why` is shown in the error ("the chunk size in tokens")."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    also: tuple[float, ...] = ()
    why: str = ""

    def problem(self, value: float) -> str | None:
        """None when `value` is inside the domain, else what is wrong with it."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value in self.also:
            return None
        for bound, ok, word in ((self.gt, lambda b: value > b, ">"), (self.ge, lambda b: value >= b, "≥"),
                                (self.lt, lambda b: value < b, "<"), (self.le, lambda b: value <= b, "≤")):
            if bound is not None and not ok(bound):
                return f"must be {word} {_num(bound)}, got {value!r}"
        return None

    def describe(self) -> str:
        parts = [f"{w} {_num(b)}" for b, w in ((self.gt, ">"), (self.ge, "≥"), (self.lt, "<"), (self.le, "≤"))
                 if b is not None]
        text = " and ".join(parts) or "a finite number"
        if self.also:
            text += " (or " + ", ".join(_num(a) for a in self.also) + ")"
        return f"a value {text}" + (f": {self.why}" if self.why else "")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


class RangeError(ConfigError):
    """A value of the right type outside its domain (not retried against other members of a union)."""


def domain(gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
           also: tuple[float, ...] = (), why: str = "") -> dict[str, Domain]:
    """Field metadata declaring a numeric domain: `field(default=..., metadata=domain(ge=1))`."""
    return {"domain": Domain(gt, ge, lt, le, tuple(also), why)}


#: metadata of a token-count field (window, chunk size, length): 1 .. MAX_TOKENS
TOKENS = domain(ge=1, le=MAX_TOKENS, why=f"a token count (at most {MAX_TOKENS})")
#: metadata of a token-count field that may be 0
TOKENS0 = domain(ge=0, le=MAX_TOKENS, why=f"a token count (at most {MAX_TOKENS})")


def check_domain(key: str, value: Any, dom: Domain | None) -> None:
    """Raise ConfigError when `value` (a number, a list of numbers, or None) is outside `dom`."""
    if dom is None or value is None:
        return
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        problem = dom.problem(item)
        if problem:
            where = f"{key}[{i}]" if isinstance(value, list) else key
            raise RangeError(where, problem, f"use {dom.describe()}")


def check_depth(data: Any, limit: int = MAX_DEPTH) -> None:
    """Raise ConfigError when tables / arrays nest deeper than `limit` (checked without recursion)."""
    stack = [(data, 0, "")]
    while stack:
        node, depth, key = stack.pop()
        if depth > limit:
            raise ConfigError(key.lstrip(".") or "<top>", f"nested more than {limit} levels deep",
                              "flatten the table (configs use at most two levels: [params], [task_options])")
        if isinstance(node, dict):
            stack.extend((v, depth + 1, f"{key}.{k}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{key}[{i}]") for i, v in enumerate(node))


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
            except RangeError:
                raise
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
            if abs(value) > INT64_MAX:
                raise RangeError(key, f"{value} does not fit a 64-bit integer", "use a realistic value")
            return value
        raise _type_error(key, value, tp)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise RangeError(key, f"must be a finite number, got {value!r}", "write a finite number")
            if isinstance(value, int) and abs(value) > INT64_MAX:
                raise RangeError(key, f"{value} is out of range", "use a realistic value")
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
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if ignore and key in ignore:
            continue
        if key not in fields:
            raise ConfigError(f"{prefix}{key}", f"unknown key{suggest(key, fields)}",
                              f"remove it or use one of: {', '.join(fields)}")
        kwargs[key] = coerce(value, hints[key], f"{prefix}{key}")
        check_domain(f"{prefix}{key}", kwargs[key], fields[key].metadata.get("domain"))
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        if required and name not in kwargs:
            raise ConfigError(f"{prefix}{name}", "missing required key", f"add `{name} = ...` to the config")
    return cls(**kwargs)


def parse_override_value(text: str) -> Any:
    """Parse the value part of `--set key=value` as a TOML value, falling back to a plain string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except Exception:
        return text
