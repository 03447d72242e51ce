"""Preflight: before the first example, prove on the loaded model that the configured method is wired right.

Three checks at a short length inside the pre-trained window (`probe_length`: at most 256 tokens, 4 chunks), on
fixed random token ids:

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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import transformers

from harness.core.errors import HarnessError
from harness.methods.base import Method, ModelInfo
from harness.model.engine import Engine

PROBE_MAX = 256  # tokens: short enough to cost a fraction of one example, long enough for 4 real chunks
PROBE_CHUNKS = 4
PROBE_SEED = 1234


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


def probe_length(info: ModelInfo) -> int:
    """Tokens the preflight uses: the window or PROBE_MAX, whichever is smaller (at least PROBE_CHUNKS + 1)."""
    return max(PROBE_CHUNKS + 1, min(info.original_window, PROBE_MAX))


def probe_ids(vocab_size: int, n: int, seed: int = PROBE_SEED) -> list[int]:
    """Fixed pseudo-random token ids (no tokenizer needed)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(min(3, vocab_size - 1), vocab_size, (n,), generator=gen).tolist()


def tolerance(model: torch.nn.Module, scale: float) -> float:
    """Allowed |Δlogit| between two computations of the same logits (dtype-dependent, relative to the logit scale)."""
    half = next(model.parameters()).dtype in (torch.float16, torch.bfloat16)
    return (2e-2 if half else 1e-4) * max(1.0, scale)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


class _Probe:
    """Runs the method on the probe ids; every sequence starts with `start_example`."""

    def __init__(self, engine: Engine, ids: Sequence[int], seed: int):
        self.engine, self.ids, self.seed = engine, list(ids), seed

    def fresh(self) -> Any:
        self.engine.method.start_example(self.seed)
        return self.engine.new_cache()

    def one_shot(self, n: int) -> torch.Tensor:
        return self.engine.step(self.ids[:n], self.fresh())


def _check(name: str, got: torch.Tensor, want: torch.Tensor, model: torch.nn.Module,
           detail: str = "", extra_ok: bool = True) -> PreflightCheck:
    d = _max_diff(got, want)
    tol = tolerance(model, float(want.float().abs().max()))
    finite = bool(torch.isfinite(got).all())
    ok = finite and extra_ok and d <= tol
    return PreflightCheck(name, ok, d if finite else float("inf"), tol, detail)


def reference_logits(engine: Engine, n: int, seed: int = PROBE_SEED) -> torch.Tensor:
    """Logits of every position of the unmodified model on the probe ids (call before `method.apply`)."""
    ids = probe_ids(int(engine.model.config.get_text_config().vocab_size), n, seed)
    return engine.step(ids, engine.new_cache())


def run_preflight(engine: Engine, info: ModelInfo, reference: torch.Tensor | None, seed: int = PROBE_SEED
                  ) -> PreflightReport:
    """The three checks on the method-modified model (see the module docstring)."""
    t0 = time.perf_counter()
    model, method = engine.model, engine.method
    n = probe_length(info)
    probe = _Probe(engine, probe_ids(int(model.config.get_text_config().vocab_size), n, seed), seed)
    report = PreflightReport(method.name or "original", n, transformers.__version__)
    with torch.inference_mode():
        one = probe.one_shot(n)
        cache = probe.fresh()
        bounds = [round(i * n / PROBE_CHUNKS) for i in range(PROBE_CHUNKS + 1)]
        chunked = torch.cat([engine.step(probe.ids[a:b], cache) for a, b in zip(bounds, bounds[1:])])
        held, cap = int(cache.get_seq_length()), method.cache_capacity(info)
        want = n if cap is None else min(n, cap)  # a bounded cache (StreamingLLM) keeps at most its capacity
        report.checks.append(_check("chunked_prefill_equals_one_shot", chunked, one, model,
                                    f"the KV cache holds {held} of {n} tokens (expected {want})",
                                    extra_ok=held == want))
        exact = method.exact_length(info)
        if exact is not None and exact >= 2 and reference is not None:
            m = min(exact, n, reference.shape[0])
            got = one[:m] if m == n else probe.one_shot(m)
            report.checks.append(_check("equals_original", got, reference[:m], model, f"first {m} tokens"))
        cache = probe.fresh()
        engine.step(probe.ids[: n - 1], cache)
        step = engine.step(probe.ids[n - 1:n], cache)[-1]
        report.checks.append(_check("cached_decode_equals_recomputation", step, one[-1], model))
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def apply_with_preflight(model: torch.nn.Module, tokenizer: Any, method: Method, info: ModelInfo, device: str,
                         enabled: bool = True, on_report: Callable[[PreflightReport], None] | None = None
                         ) -> PreflightReport | None:
    """Apply the method to the loaded model and, if `enabled`, run the preflight (raises PreflightError on failure).

    The original model's reference logits are computed first, only when the method must equal it somewhere.
    `on_report` sees the report before a failure is raised (e.g. to record it in provenance).
    """
    if not enabled:
        method.apply(model, info)
        return None
    reference = None
    n = probe_length(info)
    if type(method).equals_original_within_window or _may_equal_original(method):
        reference = reference_logits(Engine(model, tokenizer, Method(None, method.cfg), device), n)
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
