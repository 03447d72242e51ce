"""Scoring stage: read an experiment's predictions, score them with the task, write scores.json.

Idempotent and safe while a run is still appending (torn last lines are ignored; partial subsets are flagged).
Shard files of a subset are merged by example id, so nothing is counted twice. A record that cannot be scored
counts as an error (`n_errors`, `n_scoring_errors`), like a failed example; the rest is scored.
Each subset is also re-scored on its records with prompt_len >= M (`beyond_original`, M from provenance/config) and
>= max_pe (`beyond_target`), stored next to the full-set metrics with their counts (see `score_length_subsets`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from harness.core.config import ExperimentConfig, from_dict
from harness.core.errors import HarnessError
from harness.core.results import SHARD_RE, ExperimentDir, iter_jsonl, latest_records, write_json
from harness.core.seeding import in_shard
from harness.stages.resolve import RunPlan, plan_config
from harness.stages.run import select_examples
from harness.stages.summary import speed_summary, write_results_json
from harness.tasks.base import Task

log = logging.getLogger(__name__)


def load_experiment_plan(exp: ExperimentDir) -> RunPlan:
    """The plan of the resolved config saved with the experiment (the model is not read: scoring needs no model),
    with `results_dir` where the experiment lives now (it may have been moved)."""
    try:
        cfg = from_dict(exp.read_config(), source=str(exp.config_path))
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{exp.config_path}: unreadable ({exc}). Fix: rerun gali-run for this experiment") from None
    cfg.results_dir = str(exp.path.parent)
    return plan_config(cfg)


def _expected_ids(task: Task, cfg: ExperimentConfig, subset: str) -> list[str] | None:
    """Ids a full run of `subset` covers (None when the examples cannot be listed here, e.g. data not present)."""
    try:
        return [e.id for e in select_examples(task, subset, cfg, (0, 1))]
    except Exception as exc:
        log.debug("cannot list examples of %s (%s): per-shard completeness not checked", subset, exc)
        return None


LENGTH_SUBSETS = (("beyond_original", "original_window"), ("beyond_target", "target_window"))


def experiment_windows(exp: ExperimentDir, cfg: ExperimentConfig) -> dict[str, Any]:
    """The pre-trained window M and the target window of an experiment, from its provenance and config.

    M is provenance.json's `original_window` (the model config's window after `ori_max_position_embeddings`; a shard's
    provenance.shard-i-of-n.json when unsharded provenance is absent), else config.json's `ori_max_position_embeddings`;
    the target is config.json's `max_pe`. Never parsed from the experiment name; unknown values are None.
    """
    window, source = None, None
    for path in [exp.provenance_path, *sorted(exp.path.glob("provenance.shard-*.json"))]:
        try:
            value = json.loads(path.read_text()).get("original_window")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and value > 0:
            window, source = value, path.name
            break
    if window is None and cfg.ori_max_position_embeddings:
        window, source = cfg.ori_max_position_embeddings, "config.json (ori_max_position_embeddings)"
    return {"original_window": window, "original_window_source": source, "target_window": cfg.max_pe}


def score_length_subsets(task: Task, subset: str, records: list[dict[str, Any]],
                         windows: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Re-score the records with `prompt_len >= threshold` (same `task.score`) for each known window.

    Keys `beyond_original` (threshold M, the reference's result_o) and `beyond_target` (threshold max_pe, its
    result_t); each value holds the task metrics plus `threshold`, `n_scored` and `n_of` (records of the full set).
    An empty subset has score None.
    """
    out: dict[str, dict[str, Any]] = {}
    for key, window_key in LENGTH_SUBSETS:
        threshold = windows.get(window_key)
        if not threshold:
            continue
        chosen = [r for r in records if isinstance(r.get("prompt_len"), (int, float)) and r["prompt_len"] >= threshold]
        metrics: dict[str, Any] = task.score(subset, chosen) if chosen else {"score": None}
        metrics.update(threshold=threshold, n_scored=len(chosen), n_of=len(records))
        out[key] = metrics
    return out


def score_safely(task: Task, subset: str, records: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """`task.score` on the records, so that one record that cannot be scored does not stop gali-eval.

    If scoring the whole set raises, every record is scored alone: those that raise become scoring errors
    (`{"id", "error"}`) and the others are scored together. Returns (metrics, scored records, scoring errors).
    """
    if not records:
        return {"score": None}, [], []
    try:
        return task.score(subset, records), records, []
    except HarnessError:
        raise
    except Exception as exc:
        log.debug("%s: scoring the whole set failed (%s: %s); scoring record by record", subset,
                  type(exc).__name__, exc)
    good, errors = [], []
    for record in records:
        try:
            task.score(subset, [record])
        except HarnessError:
            raise
        except Exception as exc:
            log.error("%s/%s: cannot be scored (%s: %s); counted as an error", subset, record.get("id"),
                      type(exc).__name__, exc)
            errors.append({"id": record.get("id"), "error": f"{type(exc).__name__}: {exc}"[:500]})
        else:
            good.append(record)
    return (task.score(subset, good) if good else {"score": None}), good, errors


def shard_report(paths: list[Path], expected_ids: list[str] | None = None) -> dict[str, Any] | None:
    """Which shard files of one subset exist vs N, per-shard progress, and whether the shards are disjoint.

    Returns None for an unsharded subset. `problems` lists human-readable findings (empty when all is well);
    `incomplete` is true when a shard file is missing or (with `expected_ids`) has not finished its examples.
    """
    files: dict[tuple[int, int], set[str]] = {}  # (i, n) -> ids finished in that file
    seen: dict[str, int] = {}
    for path in paths:
        m = SHARD_RE.match(path.stem)
        key = (int(m.group("i")), int(m.group("n"))) if m else (0, 1)
        files[key] = {r["id"] for r in iter_jsonl(path) if "error" not in r}
        for x in files[key]:
            seen[x] = seen.get(x, 0) + 1
    counts = sorted({n for _, n in files})
    if counts == [1]:
        return None
    problems: list[str] = []
    if len(counts) > 1:
        problems.append(f"files from different splits (N = {', '.join(map(str, counts))}; stale files of an "
                        "earlier run?), merged by id")
    report: dict[str, Any] = {"n": [n for n in counts if n > 1], "unsharded_file": 1 in counts}
    incomplete = False
    for n in report["n"]:
        want = {i: {x for x in expected_ids if in_shard(x, (i, n))} for i in range(n)} if expected_ids else None
        missing = [i for i in range(n) if (i, n) not in files and (want is None or want[i])]
        partial = [i for i in range(n) if (i, n) in files and want is not None and not want[i] <= files[(i, n)]]
        report[f"of_{n}"] = {"present": sorted(i for i, k in files if k == n), "missing": missing, "partial": partial}
        if want is not None:
            report[f"of_{n}"]["progress"] = {i: [len(files.get((i, n), set()) & want[i]), len(want[i])]
                                             for i in range(n)}
        if missing:
            problems.append(f"missing shard file(s) {', '.join(f'{i}/{n}' for i in missing)}")
        if partial:
            problems.append("unfinished shard(s) " + ", ".join(
                f"{i}/{n} ({len(files[(i, n)] & want[i])}/{len(want[i])})" for i in partial))  # type: ignore[index]
        incomplete = incomplete or bool(missing or partial)
    overlap = sorted(x for x, c in seen.items() if c > 1)
    misplaced = sum(not in_shard(x, key) for key, ids in files.items() for x in ids)
    if overlap:
        problems.append(f"{len(overlap)} example id(s) finished in more than one file, e.g. {overlap[0]} "
                        "(shards not disjoint; each id is counted once)")
    if misplaced:
        problems.append(f"{misplaced} record(s) sit in a shard file whose hash split does not own them")
    report.update(incomplete=incomplete, overlapping_ids=len(overlap), misplaced_ids=misplaced, problems=problems)
    return report


def evaluate_experiment(exp: ExperimentDir) -> dict[str, Any]:
    """Score every subset with predictions; returns (and writes) the scores document."""
    plan = load_experiment_plan(exp)
    cfg = plan.cfg
    task = plan.build_task()
    files = exp.prediction_files()
    if not files:
        raise HarnessError(f"{exp.path}: no predictions yet. Fix: run `gali-run --cfg <config>` first")
    order = {s: i for i, s in enumerate(task.available_subsets())}  # the task's dataset order, unknown names last
    files = dict(sorted(files.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    windows = experiment_windows(exp, cfg)
    per_subset: dict[str, dict[str, Any]] = {}
    all_ok: list[dict[str, Any]] = []
    for subset, paths in files.items():
        records = latest_records(paths)
        ok = [r for r in records.values() if "error" not in r]
        all_ok += ok
        errors = len(records) - len(ok)
        expected = task.expected_count(subset)
        if expected is not None and cfg.max_examples is not None:
            expected = min(expected, cfg.max_examples)
        metrics, ok, scoring_errors = score_safely(task, subset, ok)
        metrics.update(n_scored=len(ok), n_errors=errors + len(scoring_errors), n_expected=expected,
                       complete=expected is None or len(ok) >= expected)
        if scoring_errors:
            metrics.update(n_scoring_errors=len(scoring_errors), scoring_errors=scoring_errors[:20])
        metrics.update(score_length_subsets(task, subset, ok, windows))
        sharded = any(SHARD_RE.match(p.stem) for p in paths)
        shards = shard_report(paths, _expected_ids(task, cfg, subset)) if sharded else None
        if shards is not None:
            metrics["shards"] = shards
            metrics["complete"] = metrics["complete"] and not shards["incomplete"]
            for problem in shards["problems"]:
                log.warning("%s/%s: %s", exp.name, subset, problem)
        per_subset[subset] = metrics
    doc = {
        "exp_name": cfg.exp_name, "task": cfg.task, "method": cfg.method, "model": cfg.model,
        "max_pe": cfg.max_pe, "params": cfg.params, "subsets": per_subset,
        "summary": task.summarize(per_subset),
        "complete": all(m["complete"] for m in per_subset.values()),
        "windows": windows,
        "length_subsets": {
            key: {"threshold": windows[wkey], "n_scored": sum(m[key]["n_scored"] for m in per_subset.values()),
                  "summary": task.summarize({s: m[key] for s, m in per_subset.items()})}
            for key, wkey in LENGTH_SUBSETS if windows.get(wkey)},
    }
    doc["speed"] = speed_summary(all_ok)
    write_json(exp.scores_path, doc)
    write_results_json(exp, doc)
    return doc
