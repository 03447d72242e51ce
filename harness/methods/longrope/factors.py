"""LongRoPE rescale factors: the hand-set families (PI, NTK, NTK-by-parts) and the factors file format.

A factor λ_i divides the i-th RoPE frequency: ω_i = θ^(−2i/d) / λ_i (transformers' `longrope` convention, and the
LongRoPE repository's `rescale_factors`). d is the number of rotating channels (head_dim × partial_rotary_factor).

Factors file (written by `gali-longrope-search`, read by `[params] factors_file`): JSON with `long_factor` (d/2
numbers) and optionally `short_factor`, `n_hat`, `factor`, `attention_factor`, plus provenance keys that are ignored
here. A plain text / CSV file with one number per line (the LongRoPE repository's `result_final.csv`) is read as
`long_factor`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import ConfigError

#: Keys of a factors file that configure the method (others are provenance).
FILE_KEYS = ("long_factor", "short_factor", "n_hat", "factor", "attention_factor")


def pi_factors(dim: int, scale: float) -> np.ndarray:
    """Position interpolation: every frequency divided by s."""
    return np.full(dim // 2, float(scale))


def ntk_factors(dim: int, scale: float) -> np.ndarray:
    """Static NTK (base θ·s^(d/(d−2))) as factors: λ_i = s^(2i/(d−2)) (1 at i = 0, s at i = d/2 − 1)."""
    i = np.arange(dim // 2, dtype=np.float64)
    return scale ** (2 * i / (dim - 2))


def ntk_by_parts_factors(dim: int, scale: float, theta: float, window: int, beta_fast: float = 32.0,
                         beta_slow: float = 1.0) -> np.ndarray:
    """YaRN's NTK-by-parts frequencies as factors (transformers' ramp, truncated bounds, blend of 1/λ)."""
    def correction(rotations: float) -> float:
        return dim * math.log(window / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction(beta_fast)), 0)
    high = min(math.ceil(correction(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    extrapolation = 1.0 - ramp  # 1: keep the frequency, 0: divide by s
    return 1.0 / ((1.0 - extrapolation) / scale + extrapolation)


def default_attention_factor(scale: float, window: int) -> float:
    """LongRoPE's (and transformers') attention scale sqrt(1 + ln s / ln M), 1 for s <= 1."""
    return 1.0 if scale <= 1.0 else math.sqrt(1.0 + math.log(scale) / math.log(window))


def locate(path: str | Path, source: str | None = None) -> Path:
    """`path` as given (absolute, or relative to the working directory), else relative to the config file `source`."""
    p = Path(path)
    if p.is_absolute() or p.exists() or not source:
        return p
    beside = Path(source).parent / p
    return beside if beside.exists() else p


def read_factors_file(path: str | Path, key: str = "params.factors_file", source: str | None = None) -> dict[str, Any]:
    """The method keys of a factors file (JSON, or one number per line); relative paths also beside `source`."""
    p = locate(path, source)
    if not p.is_file():
        raise ConfigError(key, f"factors file '{p}' not found",
                          "run gali-longrope-search (it writes one) or point factors_file at an existing file")
    text = p.read_text()
    try:
        if text.lstrip().startswith("{"):
            raw = json.loads(text)
            out = {k: raw[k] for k in FILE_KEYS if raw.get(k) is not None}
        else:
            out = {"long_factor": [float(x) for x in text.replace(",", "\n").split()]}
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, f"cannot read factors file '{p}' ({exc})",
                          "write JSON with a long_factor list, or one number per line") from None
    if "long_factor" not in out:
        raise ConfigError(key, f"factors file '{p}' has no long_factor", "add a long_factor list")
    return out


def write_factors_file(path: str | Path, long_factor: list[float], **extra: Any) -> Path:
    """Write a factors file (JSON; `extra` holds n_hat, factor, attention_factor and provenance)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {"long_factor": [round(float(x), 6) for x in long_factor], **extra}
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(p)
    return p


def check_factors(values: list[float], dim: int, key: str) -> None:
    """d/2 positive numbers, or a ConfigError naming `key`."""
    if len(values) != dim // 2:
        raise ConfigError(key, f"has {len(values)} factors but the model rotates {dim} channels per head",
                          f"give {dim // 2} factors (one per frequency), e.g. from gali-longrope-search on this model")
    if min(values) <= 0:
        raise ConfigError(key, f"factors must be positive, got {min(values)}", "use factors >= 1 (1 = unchanged)")
