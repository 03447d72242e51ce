"""`gali-check` logic: the generic invariants and the runner of a method's invariants on the configured model.

The invariant contract (`Invariant`, `CheckContext`, `CheckResult`, `equals_original_at`) lives in
harness/methods/invariants.py; a method declares its own invariants in `Method.invariants` (docs/methods/adding.md).
Here, the generic invariants every method gets, in table order:

Preflight invariants (`preflight=True`: also run before every `gali-run` by harness.stages.preflight), on a short
probe inside the window (`probe_length`: at most 256 tokens, 4 chunks) of fixed random token ids:
`chunked_prefill_equals_one_shot` (the probe fed in 4 chunks through the KV cache gives the logits of one forward,
and the cache holds every token, or `Method.cache_capacity` tokens for a bounded cache), `equals_original` (for a
method with an exact range, `Method.exact_length`: its logits there equal the original model's) and
`cached_decode_equals_recomputation` (one cached decode step gives the logits of a fresh forward). gali-check shows
them as `preflight:<name>` rows.

Then `finite` (no NaN/inf in logits and per-token NLL, in and beyond the window), `equals_original_within_window`
(for methods with `equals_original_within_window`: NLL of every position, last logits and greedy tokens equal the
unmodified model at L = M), `decode_within_window` / `decode_beyond_window` (logits of a cached decode step equal a
fresh prefill of the same sequence; beyond the window the length is chosen so that both use the same forward
schedule when the method chunks its prefill) and `memory_linear` (peak-memory growth of one prefill at 2·L is at
most ~2.5× the growth at L: linear, not quadratic). Then the method's own invariants, in declaration order.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import torch
from transformers import PretrainedConfig

from harness.core.config import ExperimentConfig
from harness.core.memory import peak_mb, reset_peak
from harness.methods.base import Method
from harness.methods.invariants import (
    CheckContext,
    CheckResult,
    Invariant,
    compare,
    equals_original_at,
    invariant,
    max_diff,
    passed,
    skipped,
)
from harness.model.engine import Engine, forward_hidden
from harness.model.info import ModelInfo
from harness.model.loading import load_model, load_tokenizer
from harness.stages.resolve import build_method

log = logging.getLogger(__name__)

GREEDY_TOKENS = 8
PROBE_MAX = 256  # tokens: short enough to cost a fraction of one example, long enough for 4 real chunks
PROBE_CHUNKS = 4
PROBE_SEED = 1234


# ---- preflight invariants (on the probe: ctx.ids) ----

@invariant("chunked_prefill_equals_one_shot", preflight=True)
def chunked_prefill_equals_one_shot(ctx: CheckContext) -> CheckResult:
    """The probe in PROBE_CHUNKS forwards through the KV cache = one forward; the cache then holds every token
    (`Method.cache_capacity` tokens for a bounded cache)."""
    n = len(ctx.ids)
    one = ctx.one_shot(n)
    cache = ctx.fresh_cache()
    bounds = [round(i * n / PROBE_CHUNKS) for i in range(PROBE_CHUNKS + 1)]
    chunked = torch.cat([ctx.engine.step(ctx.ids[a:b], cache) for a, b in zip(bounds, bounds[1:])])
    held, cap = int(cache.get_seq_length()), ctx.method.cache_capacity(ctx.info)
    want = n if cap is None else min(n, cap)  # a bounded cache (StreamingLLM) keeps at most its capacity
    return compare(ctx, "chunked_prefill_equals_one_shot", chunked, one,
                   f"the KV cache holds {held} of {n} tokens (expected {want})", extra_ok=held == want)


@invariant("equals_original", preflight=True)
def equals_original(ctx: CheckContext) -> CheckResult:
    """Every position of one forward equals the original up to `Method.exact_length` tokens."""
    exact = ctx.method.exact_length(ctx.info)
    if exact is None or exact < 2 or ctx.original_len < 2:
        return skipped("equals_original", "the method changes every length by design")
    n = len(ctx.ids)
    m = min(exact, n, ctx.original_len)
    got = ctx.one_shot(n)[:m] if m == n else ctx.one_shot(m)
    return compare(ctx, "equals_original", got, ctx.original_logits(m, every=True), f"first {m} tokens")


@invariant("cached_decode_equals_recomputation", preflight=True)
def cached_decode_equals_recomputation(ctx: CheckContext) -> CheckResult:
    """One cached decode step after n − 1 tokens = the last row of one forward of n tokens."""
    n = len(ctx.ids)
    one = ctx.one_shot(n)
    cache = ctx.fresh_cache()
    ctx.engine.step(ctx.ids[: n - 1], cache)
    step = ctx.engine.step(ctx.ids[n - 1:n], cache)[-1]
    return compare(ctx, "cached_decode_equals_recomputation", step, one[-1])


# ---- gali-check invariants ----

@invariant("finite")
def finite(ctx: CheckContext) -> CheckResult:
    """No NaN/inf in logits and per-token NLL, at M and beyond."""
    bad = []
    for n in sorted({ctx.in_len, ctx.long_len}):
        if not bool(torch.isfinite(ctx.nll(n)).all()):
            bad.append(f"NLL at L={n}")
        if not bool(torch.isfinite(ctx.prefill(n)).all()):
            bad.append(f"logits at L={n}")
    return passed("finite", not bad, "non-finite " + ", ".join(bad) if bad else
                  f"logits and NLL finite at L={ctx.in_len} and L={ctx.long_len}")


@invariant("equals_original_within_window")
def equals_original_within_window(ctx: CheckContext) -> CheckResult:
    """NLL of every position, last logits and greedy tokens equal the original at L = M."""
    name = "equals_original_within_window"
    if not type(ctx.method).equals_original_within_window:
        return skipped(name, "the method changes in-window behaviour by design")
    ref = ctx.reference
    n = ctx.in_len
    d_nll = max_diff(ctx.nll(n), ref["nll"])
    logits = equals_original_at(ctx, n, name)
    ctx.reseed()
    tokens = ctx.engine.generate(ctx.ids[:n - GREEDY_TOKENS], GREEDY_TOKENS).token_ids
    ok = d_nll <= ctx.tolerance() and not logits.failed and tokens == ref["greedy"]
    same = "identical" if tokens == ref["greedy"] else f"differ ({tokens} vs {ref['greedy']})"
    return passed(name, ok, f"L={n}: max|ΔNLL| {d_nll:.2e}, max|Δlogit| {logits.max_diff:.2e} "
                  f"(tol {logits.tolerance:.0e}), greedy tokens {same}", logits.max_diff, logits.tolerance)


def _decode_check(ctx: CheckContext, name: str, n: int) -> CheckResult:
    a, b = ctx.decode_after(n), ctx.prefill(n)
    res = compare(ctx, name, a, b)
    res.detail = f"L={n}: max|Δlogit| {res.max_diff:.2e} (tol {res.tolerance:.0e})"
    return res


def consistent_length(method: Any, lo: int, hi: int) -> int | None:
    """Largest n in [lo, hi] whose prefill schedule is that of n − 1 plus one token (decode == prefill there)."""
    for n in range(hi, lo - 1, -1):
        if method.prefill_chunks(n) == method.prefill_chunks(n - 1) + [1]:
            return n
    return None


@invariant("decode_within_window")
def decode_within_window(ctx: CheckContext) -> CheckResult:
    """A cached decode step at L = M equals a fresh prefill of the same tokens."""
    return _decode_check(ctx, "decode_within_window", ctx.in_len)


@invariant("decode_beyond_window")
def decode_beyond_window(ctx: CheckContext) -> CheckResult:
    """A cached decode step beyond M equals a fresh prefill (at a length with the same forward schedule)."""
    n = consistent_length(ctx.method, ctx.window + 1, ctx.long_len) or ctx.long_len
    return _decode_check(ctx, "decode_beyond_window", n)


def _prefill_growth(ctx: CheckContext, n: int) -> float:
    gc.collect()
    reset_peak(ctx.device)
    base = peak_mb(ctx.device) if not ctx.device.startswith("cuda") else torch.cuda.memory_allocated() / 2**20
    ctx.prefill(n)
    return max(0.0, peak_mb(ctx.device) - base)


@invariant("memory_linear")
def memory_linear(ctx: CheckContext) -> CheckResult:
    """Peak-memory growth of one prefill at 2·L is at most ~2.5× the growth at L."""
    n1 = max(ctx.window + 1, ctx.long_len // 2)
    n2 = 2 * n1
    _prefill_growth(ctx, n1)  # warm-up: one-time allocations do not count
    g1, g2 = _prefill_growth(ctx, n1), _prefill_growth(ctx, n2)
    slack = 4.0 if ctx.device.startswith("cuda") else 32.0
    ok = g2 <= 2.5 * g1 + slack
    return passed("memory_linear", ok, f"peak growth {g1:.1f} MiB at L={n1}, {g2:.1f} MiB at L={n2} "
                  f"(bound 2.5x + {slack:.0f} MiB; quadratic would be ~4x)")


GENERIC: tuple[Invariant, ...] = (
    chunked_prefill_equals_one_shot, equals_original, cached_decode_equals_recomputation,
    finite, equals_original_within_window, decode_within_window, decode_beyond_window, memory_linear)


# ---- the runner ----

def invariants_for(method_cls: type[Method]) -> list[Invariant]:
    """The generic invariants, each replaced in place by the method's invariant of the same name (which keeps the
    generic one's `preflight` flag), followed by the method's other invariants in declaration order."""
    own = {inv.name: inv for inv in method_cls.invariants}
    items = [replace(own.pop(g.name), preflight=g.preflight) if g.name in own else g for g in GENERIC]
    return items + list(own.values())


def run_invariants(ctx: CheckContext, invariants: Iterable[Invariant], catch: bool = True) -> list[CheckResult]:
    """Run `invariants` on ctx; each row carries its invariant's name. `catch`: a crash is a failed row."""
    ctx.defaults = {g.name: g for g in GENERIC}
    out = []
    for inv in invariants:
        t0 = time.perf_counter()
        try:
            res = inv(ctx)
        except Exception as exc:
            if not catch:
                raise
            log.debug("invariant %s crashed", inv.name, exc_info=True)
            res = CheckResult(inv.name, "fail", f"{type(exc).__name__}: {exc}")
        log.debug("%s: %.1fs", inv.name, time.perf_counter() - t0)
        out.append(replace(res, name=inv.name))
    return out


def probe_length(info: ModelInfo) -> int:
    """Tokens the preflight uses: the window or PROBE_MAX, whichever is smaller (at least PROBE_CHUNKS + 1)."""
    return max(PROBE_CHUNKS + 1, min(info.original_window, PROBE_MAX))


def vocab_size(model: Any) -> int:
    """The vocabulary size of a transformers model (from its text config: multimodal models nest it)."""
    return int(model.config.get_text_config().vocab_size)


def probe_ids(vocab: int, n: int, seed: int = PROBE_SEED) -> list[int]:
    """Fixed pseudo-random token ids (no tokenizer needed)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(min(3, vocab - 1), vocab, (n,), generator=gen).tolist()


@torch.inference_mode()
def original_hidden(engine: Engine, ids: Sequence[int]) -> torch.Tensor:
    """The model's last hidden states on `ids` (call before `method.apply`: the original's, for
    `CheckContext.original_logits`); n × hidden_size, not n × vocabulary."""
    t = torch.tensor([list(ids)], dtype=torch.long, device=engine.input_device)
    return forward_hidden(engine.model, t, engine.new_cache())[0]


def probe_reference(engine: Engine, info: ModelInfo, seed: int = PROBE_SEED) -> dict[str, Any]:
    """The unmodified model's results on the probe (call before `method.apply`)."""
    return {"hidden": original_hidden(engine, probe_ids(vocab_size(engine.model), probe_length(info),
                                                        seed))}


def run_probe(engine: Engine, info: ModelInfo, reference: dict[str, Any] | None, seed: int = PROBE_SEED,
              catch: bool = False) -> tuple[int, list[CheckResult]]:
    """The method's preflight invariants on the probe: (probe length, results); skips are dropped."""
    n = probe_length(info)
    ctx = CheckContext(engine.model, info, engine.method, engine, engine.device,
                       probe_ids(vocab_size(engine.model), n, seed), n, seed, dict(reference or {}))
    todo = [inv for inv in invariants_for(type(engine.method)) if inv.preflight]
    with torch.inference_mode():
        results = run_invariants(ctx, todo, catch=catch)
    return n, [r for r in results if r.status != "skip"]


def _token_ids(vocab: int, n: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, max(4, vocab), (n,), generator=gen).tolist()


def run_checks(cfg: ExperimentConfig, max_len: int | None = None,
               model_config: PretrainedConfig | None = None) -> tuple[list[CheckResult], dict[str, Any]]:
    """Load the model, compute the original's reference results, apply the method, run its invariants.

    `model_config`: the one a RunPlan already read (read here when None)."""
    model, info, device = load_model(cfg, model_config)
    tokenizer = load_tokenizer(cfg, model_config)
    m = info.original_window
    long_len = cfg.max_pe if cfg.max_pe and cfg.max_pe > m else 2 * m
    if max_len:
        long_len = max(m + 2, min(long_len, max_len))
    seed = int(cfg.seed)
    ids = _token_ids(vocab_size(model), 2 * max(m + 1, long_len // 2) + 1, seed)
    n_in = min(m, long_len)
    base = Engine(model, tokenizer, Method(None, cfg), device)
    reference = {"nll": torch.from_numpy(base.token_nll(ids[:n_in])), "hidden": original_hidden(base, ids[:n_in]),
                 "greedy": base.generate(ids[:n_in - GREEDY_TOKENS], GREEDY_TOKENS).token_ids}
    method = build_method(cfg)
    pre_ref = probe_reference(base, info)
    method.apply(model, info)
    engine = Engine(model, tokenizer, method, device)
    n, probe = run_probe(engine, info, pre_ref, catch=True)
    results = [replace(r, name=f"preflight:{r.name}", detail=_probe_detail(n, r)) for r in probe]
    ctx = CheckContext(model, info, method, engine, device, ids, long_len, seed, reference)
    results += run_invariants(ctx, [inv for inv in invariants_for(type(method)) if not inv.preflight])
    meta = {"model": cfg.model, "method": cfg.method, "window": m, "long_len": long_len, "device": device,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
    return results, meta


def _probe_detail(n: int, r: CheckResult) -> str:
    if r.max_diff is None or r.tolerance is None:  # a crash (or a check without a measured difference)
        return f"L={n}: {r.detail}"
    return f"L={n}: max|Δlogit| {r.max_diff:.2e} (tol {r.tolerance:.0e})" + (f"; {r.detail}" if r.detail else "")


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


__all__ = ["GENERIC", "PROBE_SEED", "CheckContext", "CheckResult", "consistent_length", "format_table",
           "invariants_for", "original_hidden", "probe_length", "probe_reference", "run_checks", "run_invariants",
           "run_probe", "summary_line"]
