"""Per-experiment summaries written by gali-eval: speed/memory over the prediction records, and `results.json`.

`results.json` (schema "gali-harness/results", version RESULTS_SCHEMA_VERSION; documented in docs/results.md) holds in
one file what a reader needs to cite an experiment: identity, the resolved config, the scores (per dataset, headline,
beyond-window subsets), speed and memory, and the provenance of the run(s).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from harness.core.provenance import now
from harness.core.results import ExperimentDir, write_json

RESULTS_SCHEMA = "gali-harness/results"
RESULTS_SCHEMA_VERSION = 1
SPEED_KEYS = ("median_prefill_s", "median_decode_tok_s", "peak_mem_mb", "median_seconds", "total_seconds")


def _numbers(records: list[dict[str, Any]], key: str) -> list[float]:
    out = []
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            out.append(float(value))
    return out


def speed_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed and memory over successful records: median prefill seconds, median decode tokens/s, peak MiB (max over
    examples), median and total seconds per example, median prompt tokens; None where no record has the field."""

    def median(key: str) -> float | None:
        values = _numbers(records, key)
        return round(statistics.median(values), 4) if values else None

    peaks = _numbers(records, "peak_mem_mb")
    seconds = _numbers(records, "seconds")
    return {"n": len(records), "median_prefill_s": median("prefill_s"), "median_decode_tok_s": median("decode_tok_s"),
            "peak_mem_mb": round(max(peaks), 1) if peaks else None, "median_seconds": median("seconds"),
            "total_seconds": round(sum(seconds), 2) if seconds else None, "median_prompt_len": median("prompt_len")}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def results_document(exp: ExperimentDir, scores: dict[str, Any]) -> dict[str, Any]:
    """The `results.json` document of an experiment from its scores document and the files beside it."""
    provenance = _json(exp.provenance_path)
    shards = {p.name: _json(p) for p in sorted(exp.path.glob("provenance.shard-*.json"))}
    subsets = {s: {k: v for k, v in m.items() if k not in ("beyond_original", "beyond_target", "shards")}
               for s, m in (scores.get("subsets") or {}).items()}
    return {
        "schema": RESULTS_SCHEMA,
        "schema_version": RESULTS_SCHEMA_VERSION,
        "created": now(),
        "experiment": scores.get("exp_name"),
        "task": scores.get("task"),
        "method": scores.get("method"),
        "model": scores.get("model"),
        "max_pe": scores.get("max_pe"),
        "original_window": (scores.get("windows") or {}).get("original_window"),
        "params": scores.get("params") or {},
        "complete": scores.get("complete"),
        "headline": scores.get("summary") or {},
        "datasets": subsets,
        "beyond_window": scores.get("length_subsets") or {},
        "speed": scores.get("speed") or {},
        "config": _json(exp.config_path),
        "provenance": provenance if provenance is not None else (shards or None),
    }


def write_results_json(exp: ExperimentDir, scores: dict[str, Any]) -> Path:
    """Write `<exp>/results.json` (atomically)."""
    path = exp.path / "results.json"
    write_json(path, results_document(exp, scores))
    return path
