"""The invariant contract: how a method declares what `gali-check` and the preflight verify about it.

An invariant is a named property checked on the loaded, method-modified model at small lengths. A method lists its
own in `Method.invariants` (a tuple of `Invariant`, defined in its package's `checks.py`):

    @invariant("toy_chunks_cover_the_prompt")
    def chunks_cover(ctx: CheckContext) -> CheckResult:
        sizes = ctx.method.prefill_chunks(ctx.long_len)
        return passed("toy_chunks_cover_the_prompt", sum(sizes) == ctx.long_len, f"sizes {sizes}")

    class Toy(Method[ToyParams]):
        invariants = (chunks_cover,)

The generic invariants every method gets are defined in harness/stages/check.py (which runs them all). A declared
invariant named like a generic one replaces it for that method, in its place (`ctx.default(name)` runs the generic
one, e.g. with a feature switched off); `not_applicable(name, reason)` turns a generic one into a documented skip.
`preflight=True` marks the invariants that also run before every `gali-run` (on a short probe; see
harness/stages/preflight.py). See docs/methods/adding.md.

This module is part of the methods layer: it imports no stage, so a method package never imports harness.stages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from harness.model.info import ModelInfo


@dataclass
class CheckResult:
    """One row of the `gali-check` table: status is "pass", "fail" or "skip".

    `max_diff` / `tolerance`: the measured |difference| and its bound, for checks that compare two computations
    (the preflight records them in provenance.json)."""

    name: str
    status: str
    detail: str = ""
    max_diff: float | None = None
    tolerance: float | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def passed(name: str, ok: bool, detail: str, max_diff: float | None = None, tolerance: float | None = None
           ) -> CheckResult:
    """A pass (ok) or a fail."""
    return CheckResult(name, "pass" if ok else "fail", detail, max_diff, tolerance)


def skipped(name: str, reason: str) -> CheckResult:
    """A documented skip: the invariant does not apply (`reason` says why)."""
    return CheckResult(name, "skip", reason)


class Runner(Protocol):
    """What an invariant may ask of the engine running the method (harness.model.engine.Engine provides it)."""

    model: torch.nn.Module

    def new_cache(self) -> Any: ...

    def step(self, ids: Sequence[int], cache: Any) -> torch.Tensor: ...

    def logits(self, hidden: torch.Tensor) -> torch.Tensor: ...

    def prefill(self, input_ids: Sequence[int], stride: int | None = None) -> tuple[Any, torch.Tensor]: ...

    def token_nll(self, input_ids: Sequence[int], stride: int | None = None) -> np.ndarray: ...

    def generate(self, input_ids: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int] = (),
                 min_new_tokens: int = 0) -> Any: ...


@dataclass
class CheckContext:
    """Everything an invariant needs. Lengths: `window` (M), `long_len` (> M in gali-check; the probe length in
    the preflight, where `ids` is the probe).

    `method` is the applied method (typed Any: invariants read method-specific attributes such as `kernel`).
    `reference["hidden"]` holds the unmodified model's last hidden states on `ids` (computed before
    `method.apply`, up to min(M, long_len) tokens); `original_logits(n)` reads the original's logits from it.
    """

    model: torch.nn.Module
    info: ModelInfo
    method: Any
    engine: Runner
    device: str
    ids: list[int]
    long_len: int
    seed: int = 42
    reference: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Invariant] = field(default_factory=dict)

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
        self.method.start_example(self.seed)

    def fresh_cache(self) -> Any:
        """An empty KV cache, with the method reseeded (a new sequence starts)."""
        self.reseed()
        return self.engine.new_cache()

    def one_shot(self, n: int) -> torch.Tensor:
        """Logits of every position of one forward of the first n tokens (no chunking by the method; memoised)."""
        key = f"one_shot{n}"
        if key not in self.cache:
            self.cache[key] = self.engine.step(self.ids[:n], self.fresh_cache())
        return self.cache[key]

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

    @property
    def original_len(self) -> int:
        """Tokens for which the original model's results are known (0 when none were computed)."""
        hidden = self.reference.get("hidden")
        return 0 if hidden is None else int(hidden.shape[0])

    @torch.inference_mode()
    def original_logits(self, n: int, every: bool = False) -> torch.Tensor:
        """The unmodified model's logits on the first n tokens: of the last position, or of `every` position."""
        if n > self.original_len:
            raise ValueError(f"the original's results are known for {self.original_len} tokens, not {n}")
        hidden = self.reference["hidden"]
        logits = self.engine.logits(hidden[:n] if every else hidden[n - 1:n])
        return logits if every else logits[0]

    def default(self, name: str) -> CheckResult:
        """Run the generic invariant `name` (the one a method's invariant of the same name replaces)."""
        return self.defaults[name](self)


@dataclass(frozen=True)
class Invariant:
    """A named check of the method-modified model. `preflight`: it also runs before every gali-run."""

    name: str
    fn: Callable[[CheckContext], CheckResult]
    preflight: bool = False
    doc: str = ""

    def __call__(self, ctx: CheckContext) -> CheckResult:
        return self.fn(ctx)


def invariant(name: str, preflight: bool = False) -> Callable[[Callable[[CheckContext], CheckResult]], Invariant]:
    """Decorator: turn `fn(ctx) -> CheckResult` into an `Invariant` called `name` (its docstring documents it)."""
    def deco(fn: Callable[[CheckContext], CheckResult]) -> Invariant:
        return Invariant(name, fn, preflight, (fn.__doc__ or "").strip())
    return deco


def not_applicable(name: str, reason: str) -> Invariant:
    """Declare the generic invariant `name` not applicable to the method (reported as a skip with `reason`)."""
    return Invariant(name, lambda ctx: skipped(name, reason), doc=f"not applicable: {reason}")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| in fp32 (0 for empty tensors)."""
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def compare(ctx: CheckContext, name: str, got: torch.Tensor, want: torch.Tensor, detail: str = "",
            extra_ok: bool = True) -> CheckResult:
    """`got` must equal `want` within the dtype tolerance (relative to want's scale) and be finite."""
    d = max_diff(got, want)
    tol = ctx.tolerance(float(want.float().abs().max()))
    finite = bool(torch.isfinite(got).all())
    return passed(name, finite and extra_ok and d <= tol, detail, d if finite else float("inf"), tol)


def equals_original_at(ctx: CheckContext, n: int | None, name: str, what: str = "", reason: str = ""
                       ) -> CheckResult:
    """The method's prefill of the first n tokens gives the unmodified model's last-position logits.

    The one "equals the original" routine: for n = M it is part of the generic `equals_original_within_window`;
    methods declare it at their own exact length (`ctx.method.exact_length(ctx.info)`, a window size, a chunk
    length). n None or < 2: a skip with `reason`.
    """
    if n is None or n < 2:
        return skipped(name, reason or "no length at which the method must equal the original")
    if n > ctx.original_len:
        return skipped(name, f"L={n} is beyond the {ctx.original_len} tokens the original was run on")
    ref = ctx.original_logits(n)
    res = compare(ctx, name, ctx.prefill(n), ref)
    at = f"L={n} ({what})" if what else f"L={n}"
    res.detail = f"{at}: max|Δlogit| {res.max_diff:.2e} vs the unmodified model (tol {res.tolerance:.0e})"
    return res


def exact_range_equals_original(name: str, what: str = "") -> Invariant:
    """An invariant called `name`: the method equals the original at `Method.exact_length` tokens (the range
    where it declares itself the unmodified model)."""
    @invariant(name)
    def check(ctx: CheckContext) -> CheckResult:
        return equals_original_at(ctx, ctx.method.exact_length(ctx.info), name, what)
    return check


__all__ = ["CheckContext", "CheckResult", "Invariant", "Runner", "compare", "equals_original_at",
           "exact_range_equals_original", "invariant", "max_diff", "not_applicable", "passed", "skipped"]
