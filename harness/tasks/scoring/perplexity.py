"""PG19 perplexity aggregation from per-document arrays of per-token negative log-likelihoods (natural log).

:func:`aggregate_ppl` is the harness's scorer: at each evaluation length L only documents with at least L scored
tokens take part (the others are counted as excluded), and both the reference's mean of per-document PPLs and the
token-weighted PPL are reported. :func:`reference_ppl_quirk` reproduces GALI's ``pg19_eval`` instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

NllArrays = Sequence[Sequence[float] | np.ndarray]


def evaluation_lengths(max_length: int, step: int = 1024) -> list[int]:
    """``[step, 2*step, ...]`` up to and including ``max_length`` (empty if ``max_length < step``)."""
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    return list(range(step, max_length + 1, step))


def aggregate_ppl(nlls: NllArrays, step: int = 1024, max_length: int | None = None,
                  lengths: Sequence[int] | None = None) -> dict[int, dict[str, Any]]:
    """Perplexity at each length L (default: multiples of ``step`` up to ``max_length`` or the longest document).

    For each L, the documents with ``len(nll) >= L`` contribute their first L NLLs:

    - ``ppl_mean_of_docs`` = mean over documents of ``exp(mean(nll[:L]))`` (the reference's aggregation);
    - ``ppl_token_weighted`` = ``exp(sum of all those NLLs / (n_docs * L))`` (every document gives exactly L tokens);
    - ``n_docs`` / ``n_excluded``: documents used / documents too short for L.

    Both PPLs are None when no document is long enough. Computed in float64.
    """
    arrays = [np.asarray(x, dtype=np.float64).reshape(-1) for x in nlls]
    sizes = [a.size for a in arrays]
    if lengths is None:
        top = max_length if max_length is not None else max(sizes, default=0)
        lengths = evaluation_lengths(top, step)
    cumsums = [np.cumsum(a) for a in arrays]
    result: dict[int, dict[str, Any]] = {}
    for length in lengths:
        if length <= 0:
            raise ValueError(f"evaluation lengths must be positive, got {length}")
        means = np.array([c[length - 1] / length for c, size in zip(cumsums, sizes) if size >= length])
        n_docs = int(means.size)
        result[int(length)] = {
            "ppl_mean_of_docs": float(np.mean(np.exp(means))) if n_docs else None,
            "ppl_token_weighted": float(math.exp(float(np.mean(means)))) if n_docs else None,
            "n_docs": n_docs,
            "n_excluded": len(arrays) - n_docs,
        }
    return result


def reference_ppl_quirk(nlls: NllArrays, base: int = 1024, max_step: int = 64, slack: int = 20,
                        dtype: Any = np.float32) -> dict[str, float | None]:
    """GALI ``pg19_eval`` exactly as written (keys ``"1024"`` … ``"65536"``).

    A document takes part at length L if ``L <= len(nll) + slack`` (20: "exclude some special tokens"), and its PPL is
    ``exp(sum(nll[:L]) / L)`` even when it has fewer than L tokens, which deflates the PPL. The value is the mean of
    those per-document PPLs. Arithmetic in ``dtype`` (float32 like the reference's ``torch.tensor``); the summation
    order may differ from torch's in the last bits. Lengths without a document give None (the reference writes NaN).
    """
    ftype = np.dtype(dtype).type
    arrays = [np.asarray(x, dtype=ftype).reshape(-1) for x in nlls]
    result: dict[str, float | None] = {}
    for i in range(1, max_step + 1):
        length = base * i
        ppls = [np.exp(a[:length].sum(dtype=ftype) / ftype(length)) for a in arrays if length <= a.size + slack]
        result[str(length)] = float(np.mean(np.array(ppls, dtype=ftype), dtype=ftype)) if ppls else None
    return result


PPL_KEYS = ("ppl_token_weighted", "ppl", "ppl_mean_of_docs")


def ppl_curve(ppl: dict[str, Any]) -> list[tuple[int, float]]:
    """Sorted (length, PPL) points of a scores document's `{"<L>": number | {"ppl_token_weighted": ...}}` table
    (the first of PPL_KEYS present; None, NaN, non-positive values and non-numeric lengths dropped)."""
    points = []
    for key, value in (ppl or {}).items():
        if isinstance(value, dict):
            value = next((value[k] for k in PPL_KEYS if _finite(value.get(k)) is not None), None)
        y = _finite(value)
        try:
            x = int(float(key))
        except (TypeError, ValueError, OverflowError):
            continue
        if y is not None and y > 0:
            points.append((x, y))
    return sorted(points)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
