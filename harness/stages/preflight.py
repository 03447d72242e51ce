"""Preflight: before the first example, prove on the loaded model that the configured method is wired right.

It runs the invariants flagged `preflight=True` (harness/stages/check.py: the generic ones, with a method's
replacements, and any of the method's own flagged ones) at a short length inside the pre-trained window
(`probe_length`: at most 256 tokens, 4 chunks), on fixed random token ids:

* `chunked_prefill_equals_one_shot` — the prompt fed in 4 chunks through the KV cache gives the logits of one
  forward, and the cache then holds every token, or `Method.cache_capacity` tokens for a bounded cache (the cache
  is written and read);
* `equals_original` — for a method that must equal the unmodified model up to `Method.exact_length` tokens, its
  logits there equal the original model's (computed on the same weights before the method was applied);
* `cached_decode_equals_recomputation` — one cached decode step gives the logits of a fresh forward of the same
  tokens.

A mis-wired method (a kernel that ignores the cache, a release of transformers that passes the cache under another
name, a rotary embedding applied twice) fails at least one of them. On failure the run stops before any prediction
is written, with one line naming the method, the check, the measured difference and the transformers version
(`PreflightError`, exit code 3). `gali-run --skip-preflight` bypasses it; the outcome goes into provenance.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import transformers

from harness.core.errors import HarnessError
from harness.methods.base import Method
from harness.model.engine import Engine
from harness.model.info import ModelInfo
from harness.stages.check import PROBE_SEED, probe_length, probe_reference, run_probe


class PreflightError(HarnessError):
    """The method failed the preflight: its numbers would be wrong. Exit code 3."""

    exit_code = 3


@dataclass
class PreflightCheck:
    """One check: the largest |difference| of logits against what it must equal, and the allowed tolerance."""

    name: str
    passed: bool
    max_diff: float
    tolerance: float
    detail: str = ""


@dataclass
class PreflightReport:
    """Outcome of the preflight (stored in provenance.json under "preflight")."""

    method: str
    length: int
    transformers: str
    checks: list[PreflightCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[PreflightCheck]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, **asdict(self)}

    def error_line(self) -> str:
        """One line for the user: method, failed check(s), measured difference, transformers version."""
        parts = [f"{c.name} (max|Δlogit| {c.max_diff:.3g}, tolerance {c.tolerance:.1g}; {c.detail})" if c.detail
                 else f"{c.name} (max|Δlogit| {c.max_diff:.3g}, tolerance {c.tolerance:.1g})" for c in self.failures()]
        return (f"preflight failed for method '{self.method}' at {self.length} tokens: {', '.join(parts)} "
                f"[transformers {self.transformers}, torch {torch.__version__}]. The method is mis-wired for this "
                "model or library release, so its numbers would be wrong. Fix: install the locked versions "
                "(scripts/setup.sh), or report the failure; --skip-preflight runs anyway")


def run_preflight(engine: Engine, info: ModelInfo, reference: dict[str, Any] | None, seed: int = PROBE_SEED
                  ) -> PreflightReport:
    """The preflight invariants on the method-modified model (see the module docstring). `reference`: the
    original's results on the probe (`probe_reference`), None when the method never equals the original."""
    t0 = time.perf_counter()
    n, results = run_probe(engine, info, reference, seed)
    report = PreflightReport(engine.method.name or "original", n, transformers.__version__)
    for r in results:
        diff = r.max_diff if r.max_diff is not None else 0.0 if not r.failed else float("inf")
        report.checks.append(PreflightCheck(r.name, not r.failed, diff, r.tolerance or 0.0, r.detail))
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def apply_with_preflight(model: torch.nn.Module, tokenizer: Any, method: Method, info: ModelInfo, device: str,
                         enabled: bool = True, on_report: Callable[[PreflightReport], None] | None = None
                         ) -> PreflightReport | None:
    """Apply the method to the loaded model and, if `enabled`, run the preflight (raises PreflightError on failure).

    The original model's reference results are computed first, only when the method must equal it somewhere.
    `on_report` sees the report before a failure is raised (e.g. to record it in provenance).
    """
    if not enabled:
        method.apply(model, info)
        return None
    reference = None
    if type(method).equals_original_within_window or _may_equal_original(method):
        reference = probe_reference(Engine(model, tokenizer, Method(None, method.cfg), device), info)
    method.apply(model, info)
    report = run_preflight(Engine(model, tokenizer, method, device), info, reference)
    if on_report is not None:
        on_report(report)
    if not report.passed:
        raise PreflightError(report.error_line())
    return report


def _may_equal_original(method: Method) -> bool:
    """True when the method's class overrides `exact_length` (its exact range is only known after `apply`)."""
    return type(method).exact_length is not Method.exact_length


__all__ = ["PreflightCheck", "PreflightError", "PreflightReport", "apply_with_preflight", "probe_length",
           "run_preflight"]
