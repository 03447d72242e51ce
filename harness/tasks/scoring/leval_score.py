"""L-Eval scoring: a task's rows -> exact-match scores with the official parsers
(:mod:`harness.tasks.scoring.leval_metrics`) or, with ``strict``, the corrected ones
(:mod:`harness.tasks.scoring.leval_strict`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.tasks.scoring import leval_strict as s
from harness.tasks.scoring.leval_metrics import (
    SUPPORT_METRICS,
    WITH_OPTION_TASKS,
    leval_exam_metrics,
    process_gt_code,
    process_gt_judge,
    process_gt_mc,
    process_math,
    process_output_code,
    process_output_judge,
    process_output_mc,
)

logger = logging.getLogger("harness.tasks.scoring.leval_metrics")


def _route(task: str) -> str:
    """Branch of the official evaluator, decided on the task name with the official substring tests and order."""
    if any(name in task for name in WITH_OPTION_TASKS):
        return "mc"
    for key, route in (("gsm", "math"), ("codeU", "code"), ("topic_retrieval_longchat", "topic"),
                       ("sci_fi", "judge")):
        if key in task:
            return route
    return "raw"


def _parsers(strict: bool) -> Mapping[str, Callable[..., Any]]:
    if strict:
        return {"mc": s.process_output_mc_strict, "math": s.process_math_strict, "code": s.process_output_code_strict,
                "judge": s.process_output_judge_strict}
    return {"mc": process_output_mc, "math": process_math, "code": process_output_code, "judge": process_output_judge}


def _prediction_key(row: Mapping[str, Any]) -> str:
    for key in row:
        if "pred" in key:
            return key
    raise ValueError(f"no prediction field (a key containing 'pred') in row with keys {list(row)}")


def score_leval_task(task: str, rows: Sequence[Mapping[str, Any]], *, strict: bool = False,
                     min_prefill_len: int | None = None) -> dict[str, Any]:
    """Score one L-Eval closed-ended task in the reference ``result.json`` layout.

    ``rows`` are the prediction records (``gt``, ``pred`` — the first key containing "pred" —, ``evaluation``,
    optionally ``prefill_len``). Rows whose ``evaluation`` is not f1/rouge/exam are skipped (a missing one counts as
    exam). ``min_prefill_len`` keeps rows with ``prefill_len >= min_prefill_len`` (the ``result_o`` subset) while
    topic questions keep their original ``i % 3`` slot. Layouts:

    - ordinary task: ``{task: metrics}`` (see :func:`leval_exam_metrics`);
    - topic retrieval: ``{task_1, task_2, task_3: metrics of rows i%3 == 0, 1, 2 (lower-cased),
      task: {"LEval_score": mean of the three EMs}}``;
    - sci_fi: ``{task_loyalty, task_fact: metrics, task: {"LEval_score": mean of the two EMs}}``.

    The task means are not rounded again (as in the reference: the sum of the 4-decimal EMs divided by 3 or 2).
    Empty ``rows`` give ``{}`` (the reference skips the file).
    """
    if not rows:
        logger.warning("no rows for L-Eval task %s; nothing to score", task)
        return {}
    pred_key = _prediction_key(rows[0])
    route = _route(task)
    parse = _parsers(strict)
    n_groups = {"topic": 3, "judge": 2}.get(route, 1)
    preds: list[list[str]] = [[] for _ in range(n_groups)]
    refs: list[list[list[str]]] = [[] for _ in range(n_groups)]
    config_name = None
    for i, row in enumerate(rows):
        evaluation = row.get("evaluation", "exam")
        if evaluation not in SUPPORT_METRICS:
            continue
        config_name = evaluation
        if min_prefill_len is not None and row.get("prefill_len", -1) < min_prefill_len:
            continue
        gt, pred = row["gt"], row[pred_key]
        if route == "mc":
            refs[0].append([process_gt_mc(gt)])
            preds[0].append(parse["mc"](pred, task))
        elif route == "math":
            refs[0].append([parse["math"](gt)])
            preds[0].append(parse["math"](pred))
        elif route == "code":
            refs[0].append([process_gt_code(gt)])
            preds[0].append(parse["code"](pred, gt))
        elif route == "topic":
            refs[i % 3].append([gt.lower()])
            preds[i % 3].append(pred.lower())
        elif route == "judge":
            loyalty, fact = process_gt_judge(gt)
            loyalty_pred, fact_pred = parse["judge"](pred)
            refs[0].append([loyalty])
            refs[1].append([fact])
            preds[0].append(loyalty_pred)
            preds[1].append(fact_pred)
        else:
            refs[0].append([gt])
            preds[0].append(pred)
    if config_name is None:
        logger.warning("no row of L-Eval task %s has a supported evaluation tag; nothing to score", task)
        return {}
    if config_name != "exam":
        logger.warning("L-Eval task %s is tagged %r; only exact match (exam) is implemented", task, config_name)
    metrics = [leval_exam_metrics(p, r) for p, r in zip(preds, refs)]
    if route == "topic":
        out: dict[str, Any] = {f"{task}_{k + 1}": m for k, m in enumerate(metrics)}
    elif route == "judge":
        out = {f"{task}_loyalty": metrics[0], f"{task}_fact": metrics[1]}
    else:
        return {task: metrics[0]}
    out[task] = {"LEval_score": sum(m["exact_match"] for m in metrics) / len(metrics)}
    return out
