"""A small TOML writer for resolved configs (strings, numbers, booleans, lists, nested tables; None is omitted)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from harness.core.config import ExperimentConfig
from harness.core.results import ExperimentDir

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def dumps(data: dict[str, Any], header: str = "") -> str:
    """`data` as TOML text: scalars and lists first, then one [table] per dict value (recursively)."""
    lines = [f"# {line}" for line in header.splitlines()]

    def table(node: dict[str, Any], path: list[str]) -> None:
        scalars = [(k, v) for k, v in node.items() if v is not None and not isinstance(v, dict)]
        tables = [(k, v) for k, v in node.items() if isinstance(v, dict)]
        if path and (scalars or not tables):
            lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars)
        for k, v in tables:
            table(v, [*path, k])

    table(data, [])
    return "\n".join(lines) + "\n"


def write_config_toml(exp: ExperimentDir, cfg: ExperimentConfig) -> Path | None:
    """`<exp>/config.toml`: the resolved config, rerunnable with `gali-run --cfg` (written atomically)."""
    data = {k: v for k, v in cfg.to_dict().items() if v is not None and v != {}}
    header = (f"Resolved config of experiment '{cfg.exp_name}' (from {cfg.source or 'a config'}).\n"
              f"Rerun: gali-run --cfg {exp.path / 'config.toml'}")
    path = exp.path / "config.toml"
    try:
        text = dumps(data, header)
    except TypeError as exc:  # a value TOML cannot hold: config.json still has everything
        logging.getLogger(__name__).warning("%s: config.toml not written (%s); config.json has the config",
                                            exp.path, exc)
        return None
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
