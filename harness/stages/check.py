"""`gali-check` logic: a method's invariants on the configured model, at small lengths.

First the three preflight checks that `gali-run` also runs before every experiment (harness.stages.preflight: chunked
prefill = one shot, equal to the original where the method must be, cached decode = recomputation), then:

Generic invariants (every method): `finite` (no NaN/inf in logits and per-token NLL, in and beyond the window),
`equals_original_within_window` (for methods with `equals_original_within_window`: NLL of every position, last
logits and greedy tokens equal the unmodified model at L = M), `decode_within_window` / `decode_beyond_window`
(logits of a cached decode step equal a fresh prefill of the same sequence; beyond the window the length is chosen
so that both use the same forward schedule when the method chunks its prefill) and `memory_linear` (peak-memory
growth of one prefill at 2·L is at most ~2.5× the growth at L: linear, not quadratic).

Adding invariants for a method (no edit of this file needed):

* a registry entry, in the method's module::

      from harness.stages.check import CheckContext, CheckResult, invariant

      @invariant("selfextend_groups", methods=("selfextend",))
      def _groups(ctx: CheckContext) -> CheckResult: ...

  A method-specific entry with the name of a generic invariant replaces it for that method;
  `not_applicable(name, methods, reason)` turns a generic invariant into a documented skip.
* or a hook on the method class: `def check_invariants(self, ctx) -> Iterable[CheckResult | (name, passed, detail)]`
  (`passed` None means skipped); it runs after the registered invariants.

`ctx.reference` holds the unmodified model's results, computed before `method.apply`; `ctx.prefill(n)`,
`ctx.decode_after(n)`, `ctx.nll(n)` run the method (reseeded with `start_example` each time).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.core.memory import peak_mb, reset_peak
from harness.methods.base import Method, ModelInfo
from harness.model.engine import Engine
from harness.stages.preflight import probe_length, reference_logits, run_preflight

log = logging.getLogger(__name__)

GREEDY_TOKENS = 8


@dataclass
class CheckResult:
    """One row of the table: status is "pass", "fail" or "skip"."""

    name: str
    status: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def passed(name: str, ok: bool, detail: str) -> CheckResult:
    return CheckResult(name, "pass" if ok else "fail", detail)


@dataclass
class CheckContext:
    """Everything an invariant needs. Lengths: `window` (M), `long_len` (> M)."""

    cfg: Any
    model: torch.nn.Module
    info: ModelInfo
    method: Method
    engine: Engine
    device: str
    ids: list[int]
    long_len: int
    reference: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def window(self) -> int:
        return self.info.original_window

    @property
    def in_len(self) -> int:
        return min(self.window, self.long_len)

    @property
    def half(self) -> bool:
        return next(self.model.parameters()).dtype in (torch.float16, torch.bfloat16)

    def tolerance(self, scale: float = 1.0) -> float:
        """Allowed |difference| between two computations of the same logits (dtype-dependent)."""
        return (2e-2 if self.half else 1e-4) * max(1.0, scale)

    def reseed(self) -> None:
        self.method.start_example(int(getattr(self.cfg, "seed", 42)))

    def prefill(self, n: int) -> torch.Tensor:
        """Last-position logits of the method's prefill of the first n tokens."""
        self.reseed()
        return self.engine.prefill(self.ids[:n])[1]

    @torch.inference_mode()
    def decode_after(self, n: int) -> torch.Tensor:
        """Prefill n − 1 tokens, then one cached decode step with token n − 1: its logits."""
        self.reseed()
        cache, _ = self.engine.prefill(self.ids[:n - 1])
        return self.engine.step([self.ids[n - 1]], cache)[-1]

    def nll(self, n: int) -> torch.Tensor:
        """Per-token NLL of the first n tokens (memoised)."""
        key = f"nll{n}"
        if key not in self.cache:
            self.reseed()
            self.cache[key] = torch.from_numpy(self.engine.token_nll(self.ids[:n]))
        return self.cache[key]


Invariant = Callable[[CheckContext], CheckResult]
_GENERIC: dict[str, Invariant] = {}
_SPECIFIC: dict[str, dict[str, Invariant]] = {}


def invariant(name: str, methods: Sequence[str] | None = None) -> Callable[[Invariant], Invariant]:
    """Register an invariant: generic (methods None) or for the named canonical methods (adds or overrides)."""
    def deco(fn: Invariant) -> Invariant:
        if methods is None:
            _GENERIC[name] = fn
        else:
            for m in methods:
                _SPECIFIC.setdefault(m, {})[name] = fn
        return fn
    return deco


def not_applicable(name: str, methods: Sequence[str], reason: str) -> None:
    """Mark a generic invariant as not applicable to `methods` (reported as a skip with `reason`)."""
    invariant(name, methods)(lambda ctx: CheckResult(name, "skip", reason))


def invariants_for(method: str) -> list[tuple[str, Invariant]]:
    """Generic invariants (with the method's overrides) followed by the method's own ones, in registration order."""
    own = _SPECIFIC.get(method, {})
    items = [(n, own.get(n, fn)) for n, fn in _GENERIC.items()]
    return items + [(n, fn) for n, fn in own.items() if n not in _GENERIC]


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


@invariant("finite")
def _finite(ctx: CheckContext) -> CheckResult:
    bad = []
    for n in sorted({ctx.in_len, ctx.long_len}):
        if not bool(torch.isfinite(ctx.nll(n)).all()):
            bad.append(f"NLL at L={n}")
        if not bool(torch.isfinite(ctx.prefill(n)).all()):
            bad.append(f"logits at L={n}")
    return passed("finite", not bad, "non-finite " + ", ".join(bad) if bad else
                  f"logits and NLL finite at L={ctx.in_len} and L={ctx.long_len}")


@invariant("equals_original_within_window")
def _equals_original(ctx: CheckContext) -> CheckResult:
    name = "equals_original_within_window"
    if not type(ctx.method).equals_original_within_window:
        return CheckResult(name, "skip", "the method changes in-window behaviour by design")
    ref = ctx.reference
    n = ctx.in_len
    d_nll = _maxdiff(ctx.nll(n), ref["nll"])
    d_logit = _maxdiff(ctx.prefill(n), ref["logits"])
    ctx.reseed()
    tokens = ctx.engine.generate(ctx.ids[:n - GREEDY_TOKENS], GREEDY_TOKENS).token_ids
    tol = ctx.tolerance(float(ref["logits"].abs().max()))
    ok = d_nll <= ctx.tolerance() and d_logit <= tol and tokens == ref["greedy"]
    same = "identical" if tokens == ref["greedy"] else f"differ ({tokens} vs {ref['greedy']})"
    return passed(name, ok, f"L={n}: max|ΔNLL| {d_nll:.2e}, max|Δlogit| {d_logit:.2e} (tol {tol:.0e}), "
                  f"greedy tokens {same}")


def _decode_check(ctx: CheckContext, name: str, n: int) -> CheckResult:
    a, b = ctx.decode_after(n), ctx.prefill(n)
    d = _maxdiff(a, b)
    tol = ctx.tolerance(float(b.abs().max()))
    return passed(name, d <= tol and bool(torch.isfinite(a).all()), f"L={n}: max|Δlogit| {d:.2e} (tol {tol:.0e})")


def consistent_length(method: Method, lo: int, hi: int) -> int | None:
    """Largest n in [lo, hi] whose prefill schedule is that of n − 1 plus one token (decode == prefill there)."""
    for n in range(hi, lo - 1, -1):
        if method.prefill_chunks(n) == method.prefill_chunks(n - 1) + [1]:
            return n
    return None


@invariant("decode_within_window")
def _decode_within(ctx: CheckContext) -> CheckResult:
    return _decode_check(ctx, "decode_within_window", ctx.in_len)


@invariant("decode_beyond_window")
def _decode_beyond(ctx: CheckContext) -> CheckResult:
    n = consistent_length(ctx.method, ctx.window + 1, ctx.long_len) or ctx.long_len
    return _decode_check(ctx, "decode_beyond_window", n)


def _prefill_growth(ctx: CheckContext, n: int) -> float:
    gc.collect()
    reset_peak(ctx.device)
    base = peak_mb(ctx.device) if not ctx.device.startswith("cuda") else torch.cuda.memory_allocated() / 2**20
    ctx.prefill(n)
    return max(0.0, peak_mb(ctx.device) - base)


@invariant("memory_linear")
def _memory(ctx: CheckContext) -> CheckResult:
    n1 = max(ctx.window + 1, ctx.long_len // 2)
    n2 = 2 * n1
    _prefill_growth(ctx, n1)  # warm-up: one-time allocations do not count
    g1, g2 = _prefill_growth(ctx, n1), _prefill_growth(ctx, n2)
    slack = 4.0 if ctx.device.startswith("cuda") else 32.0
    ok = g2 <= 2.5 * g1 + slack
    return passed("memory_linear", ok, f"peak growth {g1:.1f} MiB at L={n1}, {g2:.1f} MiB at L={n2} "
                  f"(bound 2.5x + {slack:.0f} MiB; quadratic would be ~4x)")


# ---- method-specific registrations kept here for methods whose modules are not meant to import this one ----
not_applicable("decode_beyond_window", ["dynamic_ntk"],
               "inherent: cached keys keep the base they were rotated with, a fresh prefill rotates all keys with "
               "the current base (transformers' dynamic NTK)")


@invariant("decode_beyond_window", methods=("gali",))
def _gali_decode(ctx: CheckContext) -> CheckResult:
    kernel = getattr(ctx.method, "kernel", None)
    if kernel is None or not kernel.noise.active:
        return _decode_beyond(ctx)
    with kernel.without_noise():  # noise is random per forward: check the noise-free path
        res = _decode_beyond(ctx)
    return CheckResult(res.name, res.status, res.detail + " (noise off for this check)")


@invariant("gali_positions", methods=("gali",))
def _gali_positions(ctx: CheckContext) -> CheckResult:
    from harness.methods.gali.positions import positions

    m, w = ctx.window, ctx.method.params.local_window
    bad = []
    for t in sorted({m + 1, ctx.long_len, 4 * m + 3}):
        p = positions(t, m, w)
        gaps = p.diff()
        tail = int((gaps.flip(0) == 1).cumprod(0).sum()) + 1
        if not (len(p) == t and p[0] == 0 and p[-1] == m - 1 and bool((gaps > 0).all()) and tail >= w):
            bad.append(str(t))
    return passed("gali_positions", not bad, f"T={', '.join(bad)} violate" if bad else
                  "length T, first 0, last M-1, increasing, unit tail >= local_window for T in "
                  f"{sorted({m + 1, ctx.long_len, 4 * m + 3})}")


@invariant("gali_prefix_equals_original", methods=("gali",))
def _gali_prefix(ctx: CheckContext) -> CheckResult:
    n = ctx.in_len
    d = _maxdiff(ctx.nll(ctx.long_len)[: n - 1], ctx.reference["nll"])
    return passed("gali_prefix_equals_original", d <= ctx.tolerance(),
                  f"first {n} positions of L={ctx.long_len}: max|ΔNLL| {d:.2e} vs the original on {n} tokens")


def _hook_results(ctx: CheckContext) -> list[CheckResult]:
    hook = getattr(ctx.method, "check_invariants", None)
    if not callable(hook):
        return []
    out = []
    for item in hook(ctx) or ():
        if isinstance(item, CheckResult):
            out.append(item)
        else:
            name, ok, detail = item
            out.append(CheckResult(name, "skip" if ok is None else "pass" if ok else "fail", detail))
    return out


def _token_ids(vocab: int, n: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, max(4, vocab), (n,), generator=gen).tolist()


def run_checks(cfg: Any, max_len: int | None = None) -> tuple[list[CheckResult], dict[str, Any]]:
    """Load the model, compute the original's reference results, apply the method, run its invariants."""
    from harness.model.loading import load_model, load_tokenizer
    from harness.stages.resolve import build_method

    model, info, device = load_model(cfg)
    tokenizer = load_tokenizer(cfg)
    m = info.original_window
    long_len = cfg.max_pe if cfg.max_pe and cfg.max_pe > m else 2 * m
    if max_len:
        long_len = max(m + 2, min(long_len, max_len))
    ids = _token_ids(int(model.config.get_text_config().vocab_size), 2 * max(m + 1, long_len // 2) + 1, int(cfg.seed))
    n_in = min(m, long_len)
    base = Engine(model, tokenizer, Method(None, cfg), device)
    reference = {"nll": torch.from_numpy(base.token_nll(ids[:n_in])), "logits": base.prefill(ids[:n_in])[1],
                 "greedy": base.generate(ids[:n_in - GREEDY_TOKENS], GREEDY_TOKENS).token_ids}
    method = build_method(cfg)
    pre_ref = reference_logits(base, probe_length(info))
    method.apply(model, info)
    ctx = CheckContext(cfg, model, info, method, Engine(model, tokenizer, method, device), device, ids, long_len,
                       reference)
    results = [CheckResult(f"preflight:{c.name}", "pass" if c.passed else "fail",
                           f"L={report.length}: max|Δlogit| {c.max_diff:.2e} (tol {c.tolerance:.0e})"
                           + (f"; {c.detail}" if c.detail else ""))
               for report in [run_preflight(ctx.engine, info, pre_ref)] for c in report.checks]
    for name, fn in invariants_for(cfg.method):
        t0 = time.perf_counter()
        try:
            res = fn(ctx)
        except Exception as exc:
            log.debug("invariant %s crashed", name, exc_info=True)
            res = CheckResult(name, "fail", f"{type(exc).__name__}: {exc}")
        log.debug("%s: %.1fs", name, time.perf_counter() - t0)
        results.append(res)
    results.extend(_hook_results(ctx))
    meta = {"model": cfg.model, "method": cfg.method, "window": m, "long_len": long_len, "device": device,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
    return results, meta


def format_table(results: Iterable[CheckResult]) -> str:
    """Plain-text pass/fail table."""
    rows = [(r.name, r.status.upper(), r.detail) for r in results]
    width = max([len("check")] + [len(r[0]) for r in rows])
    lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{n:<{width}}  {s:<6}  {d}" for n, s, d in rows]
    return "\n".join(lines)


def summary_line(results: Sequence[CheckResult]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    return f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"


__all__ = ["CheckContext", "CheckResult", "consistent_length", "format_table", "invariant", "invariants_for",
           "not_applicable", "run_checks", "summary_line"]
