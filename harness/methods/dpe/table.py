"""DPE data: published presets, frequency-pair groups, the reusable scales table (JSON) and top-k dimension masks.

The table is what `gali-dpe-probe` writes and what `dpe` loads with `scales_file = "..."` (the authors' precomputed
per-model tables are not available, docs/reference/beyond.md §1.2). Format (`"format": "gali-dpe-scales"`,
version 1): local_window, group_bounds, scale_factors, optional topk_dim and contributions
[layers][heads][head_dim/2] (the 2-norm attention contribution of every frequency pair, §1.4), plus the probe's
raw scores for provenance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.core.errors import ConfigError

TABLE_FORMAT = "gali-dpe-scales"
TABLE_VERSION = 1


@dataclass(frozen=True)
class DpePreset:
    """A published setting: w and 8 group scales (groups of 8 pairs of head_dim 128), with its source."""

    local_window: int
    scale_factors: tuple[int, ...]
    source: str
    published_topk: int | None = None


#: docs/reference/beyond.md §1.2. The two Llama-3-8B settings disagree: the config file's, and the README's
#: "best setting" that produced the released RULER-128K predictions (with top-k 48, whose dimension table is not
#: available).
_YAML = "config/dpe_config.yaml"
PRESETS: dict[str, DpePreset] = {
    "llama3-8b-config": DpePreset(1024, (2, 8, 2, 8, 32, 32, 32, 4), f"{_YAML} (Meta-Llama-3-8B-Instruct)"),
    "llama3-8b-readme": DpePreset(1024, (4, 4, 2, 16, 32, 32, 16, 128), "README best setting / released predictions",
                                  published_topk=48),
    "llama3.1-8b": DpePreset(1024, (2, 32, 32, 2, 2, 2, 2, 1), f"{_YAML} (Meta-Llama-3.1-8B-Instruct)"),
    "mistral-7b-v0.2": DpePreset(1024, (4, 16, 2, 16, 32, 16, 16, 2), f"{_YAML} (Mistral-7B-Instruct-v0.2)"),
    "qwen2.5-7b": DpePreset(1024, (2, 16, 8, 8, 32, 8, 2, 4), f"{_YAML} (Qwen2.5-7B-Instruct)"),
}


def equal_groups(n_pairs: int, groups: int) -> list[int]:
    """Boundaries of `groups` contiguous (near-)equal groups of pairs: 64 pairs, 8 groups -> [0, 8, ..., 64]."""
    if not 1 <= groups <= n_pairs:
        raise ValueError(f"cannot split {n_pairs} pairs into {groups} groups")
    return [round(g * n_pairs / groups) for g in range(groups + 1)]


def check_bounds(bounds: list[int], key: str, n_pairs: int | None = None) -> None:
    """Boundaries start at 0, strictly increase and (when the head size is known) end at head_dim/2."""
    if len(bounds) < 2 or bounds[0] != 0 or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ConfigError(key, f"{bounds} must start at 0 and strictly increase",
                          "e.g. [0, 8, 16, 24, 32, 40, 48, 56, 64] for head_dim 128")
    if n_pairs is not None and bounds[-1] != n_pairs:
        raise ConfigError(key, f"{bounds} must end at head_dim/2 = {n_pairs}",
                          f"rescale the boundaries to this model, e.g. {equal_groups(n_pairs, len(bounds) - 1)}")


def pair_scales(bounds: list[int], scale_factors: list[int]) -> torch.Tensor:
    """Per-pair integer scale [head_dim/2] from group boundaries and one scale per group."""
    out = torch.empty(bounds[-1], dtype=torch.long)
    for g, s in enumerate(scale_factors):
        out[bounds[g]:bounds[g + 1]] = int(s)
    return out


@dataclass
class DpeTable:
    """The contents of a scales file."""

    local_window: int | None = None
    group_bounds: list[int] | None = None
    scale_factors: list[int] | None = None
    topk_dim: int | None = None
    contributions: list | None = None  # [layers][heads][pairs]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {"format": TABLE_FORMAT, "version": TABLE_VERSION}
        data.update({k: v for k, v in asdict(self).items() if k != "meta"})
        data.update(self.meta)
        return data


def save_table(table: DpeTable, path: str | Path) -> None:
    """Write a scales table as JSON (one top-level key per line, values compact)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in table.to_json().items()]
    Path(path).write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")


def load_table(path: str | Path, key: str = "params.scales_file") -> DpeTable:
    """Read a scales table written by `gali-dpe-probe` (ConfigError naming `key` on any problem)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(key, f"file '{path}' not found", "run gali-dpe-probe to create it, or fix the path")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(key, f"'{path}' is not valid JSON ({exc})", "regenerate it with gali-dpe-probe") from None
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise ConfigError(key, f"'{path}' is not a DPE scales table (format must be '{TABLE_FORMAT}')",
                          "use a file written by gali-dpe-probe")
    if data.get("version") != TABLE_VERSION:
        raise ConfigError(key, f"'{path}' has table version {data.get('version')}, expected {TABLE_VERSION}",
                          "regenerate it with this version of gali-dpe-probe")
    known = {"local_window", "group_bounds", "scale_factors", "topk_dim", "contributions"}
    table = DpeTable(**{k: data.get(k) for k in known},
                     meta={k: v for k, v in data.items() if k not in known | {"format", "version"}})
    if table.scale_factors is not None and table.group_bounds is not None \
            and len(table.scale_factors) != len(table.group_bounds) - 1:
        raise ConfigError(key, f"'{path}': {len(table.scale_factors)} scale factors for "
                          f"{len(table.group_bounds) - 1} groups", "regenerate it with gali-dpe-probe")
    return table


def load_contributions(path: str | Path, key: str = "params.dims_file") -> torch.Tensor:
    """2-norm contributions [layers, heads, pairs] from a scales table (JSON) or a tensor file (.pt).

    A 5-D tensor in the official layout [lengths, samples, layers, heads, pairs] is averaged over lengths and samples.
    """
    p = Path(path)
    if p.suffix == ".json":
        table = load_table(p, key)
        if table.contributions is None:
            raise ConfigError(key, f"'{path}' holds no contributions", "run gali-dpe-probe with --topk")
        t = torch.tensor(table.contributions, dtype=torch.float32)
    else:
        if not p.is_file():
            raise ConfigError(key, f"file '{path}' not found", "fix the path")
        t = torch.load(p, map_location="cpu", weights_only=True).float()
        if t.dim() == 5:
            t = t.mean(dim=(0, 1))
    if t.dim() != 3:
        raise ConfigError(key, f"'{path}': contributions must be [layers, heads, pairs], got shape {list(t.shape)}",
                          "regenerate it with gali-dpe-probe --topk")
    return t


def topk_masks(contributions: torch.Tensor, k: int) -> torch.Tensor:
    """Bool [layers, heads, pairs]: the k pairs with the largest contribution per (layer, head)."""
    idx = torch.topk(contributions, k, dim=-1).indices
    mask = torch.zeros_like(contributions, dtype=torch.bool)
    return mask.scatter_(-1, idx, True)
