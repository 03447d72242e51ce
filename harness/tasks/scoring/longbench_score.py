"""LongBench v1 scoring: a dataset's predictions -> the official score (``scorer`` / ``scorer_e``), with the official
metrics (:mod:`harness.tasks.scoring.longbench_metrics`) or, with ``strict``, the corrected variants
(:mod:`harness.tasks.scoring.longbench_strict`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.tasks.scoring.longbench_metrics import DATASET2METRIC, FIRST_LINE_DATASETS, LONGBENCH_E_BUCKETS, Metric
from harness.tasks.scoring.longbench_strict import STRICT_DATASET2METRIC

logger = logging.getLogger("harness.tasks.scoring.longbench_metrics")


def _metric_table(strict: bool) -> dict[str, Metric]:
    return STRICT_DATASET2METRIC if strict else DATASET2METRIC


def _resolve(dataset: str, strict: bool) -> tuple[str, Metric]:
    table = _metric_table(strict)
    if dataset not in table and dataset.endswith("_e") and dataset[:-2] in table:
        dataset = dataset[:-2]  # LongBench-E config names ("qasper_e") score like their base set
    if dataset not in table:
        raise KeyError(f"unknown LongBench dataset {dataset!r}; known: {sorted(table)}")
    return dataset, table[dataset]


def _per_example_classes(all_classes: Any, n: int) -> list[Any]:
    """One class list per example: a per-dataset list is shared, a list of per-example lists is used as is."""
    if (
        isinstance(all_classes, (list, tuple))
        and len(all_classes) == n
        and n > 0
        and all(c is None or isinstance(c, (list, tuple)) for c in all_classes)
    ):
        return list(all_classes)
    return [all_classes] * n


def score_example(dataset: str, prediction: str, ground_truths: Sequence[str], all_classes: Any = None,
                  *, strict: bool = False) -> float:
    """Max over references of the dataset metric (first line only for trec/triviaqa/samsum/lsht); 0 if none."""
    dataset, metric = _resolve(dataset, strict)
    if not isinstance(prediction, str):
        logger.warning("non-string prediction %r for %s (the official code crashes); scoring it as ''",
                       prediction, dataset)
        prediction = ""
    if dataset in FIRST_LINE_DATASETS:
        prediction = prediction.lstrip("\n").split("\n")[0]
    score = 0.0
    for ground_truth in ground_truths:
        score = max(score, metric(prediction, ground_truth, all_classes=all_classes))
    return score


def score_dataset(dataset: str, predictions: Sequence[str], answers: Sequence[Sequence[str]],
                  all_classes: Any = None, *, strict: bool = False) -> float:
    """Official LongBench ``scorer``: ``round(100 * sum(max-over-refs) / len(predictions), 2)``.

    ``all_classes`` is the dataset's class list (the official script uses the last row's) or one list per example.
    An empty prediction list (the official code divides by zero) scores 0.0 with a warning.
    """
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
    if len(predictions) == 0:
        logger.warning("no predictions for %s (the official scorer divides by zero); scoring 0.0", dataset)
        return 0.0
    classes = _per_example_classes(all_classes, len(predictions))
    total_score = 0.0
    for prediction, ground_truths, cls in zip(predictions, answers, classes):
        total_score += score_example(dataset, prediction, ground_truths, cls, strict=strict)
    return round(100 * total_score / len(predictions), 2)


def longbench_e_bucket(length: int) -> str:
    """LongBench-E bucket of the dataset's ``length`` field (words): <4000, <8000, else 8k+."""
    if length < 4000:
        return "0-4k"
    if length < 8000:
        return "4-8k"
    return "8k+"


def score_longbench_e(dataset: str, predictions: Sequence[str], answers: Sequence[Sequence[str]],
                      lengths: Sequence[int], all_classes: Any = None, *,
                      strict: bool = False) -> dict[str, float | None]:
    """Official ``scorer_e``: ``round(100 * np.mean(bucket), 2)`` per length bucket; an empty bucket gives None
    (the official code writes NaN)."""
    if not len(predictions) == len(answers) == len(lengths):
        raise ValueError("predictions, answers and lengths must have the same length")
    buckets: dict[str, list[float]] = {key: [] for key in LONGBENCH_E_BUCKETS}
    classes = _per_example_classes(all_classes, len(predictions))
    for prediction, ground_truths, length, cls in zip(predictions, answers, lengths, classes):
        buckets[longbench_e_bucket(length)].append(
            score_example(dataset, prediction, ground_truths, cls, strict=strict))
    return {key: (float(round(100 * np.mean(vals), 2)) if vals else None) for key, vals in buckets.items()}
