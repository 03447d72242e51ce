"""Scoring stage: read an experiment's predictions, score them with the task, write scores.json.

Idempotent and safe while a run is still appending (torn last lines are ignored; partial subsets are flagged).
Shard files of a subset are merged by example id, so nothing is counted twice.
"""

from __future__ import annotations

import logging
from typing import Any

from harness.config import from_dict
from harness.errors import HarnessError
from harness.resolve import build_task, resolve
from harness.results import ExperimentDir, latest_records, write_json

log = logging.getLogger(__name__)


def load_experiment_config(exp: ExperimentDir):
    """The resolved config saved with the experiment."""
    try:
        cfg = from_dict(exp.read_config(), source=str(exp.config_path))
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{exp.config_path}: unreadable ({exc}). Fix: rerun gali-run for this experiment") from None
    return resolve(cfg, peek=False)


def evaluate_experiment(exp: ExperimentDir) -> dict[str, Any]:
    """Score every subset with predictions; returns (and writes) the scores document."""
    cfg = load_experiment_config(exp)
    task = build_task(cfg)
    files = exp.prediction_files()
    if not files:
        raise HarnessError(f"{exp.path}: no predictions yet. Fix: run `gali-run --cfg <config>` first")
    per_subset: dict[str, dict[str, Any]] = {}
    for subset, paths in files.items():
        records = latest_records(paths)
        ok = [r for r in records.values() if "error" not in r]
        errors = len(records) - len(ok)
        expected = task.expected_count(subset)
        if expected is not None and cfg.max_examples is not None:
            expected = min(expected, cfg.max_examples)
        metrics = task.score(subset, ok) if ok else {"score": None}
        metrics.update(n_scored=len(ok), n_errors=errors, n_expected=expected,
                       complete=expected is None or len(ok) >= expected)
        per_subset[subset] = metrics
    doc = {
        "exp_name": cfg.exp_name, "task": cfg.task, "method": cfg.method, "model": cfg.model,
        "max_pe": cfg.max_pe, "params": cfg.params, "subsets": per_subset,
        "summary": task.summarize(per_subset),
        "complete": all(m["complete"] for m in per_subset.values()),
    }
    write_json(exp.scores_path, doc)
    return doc
