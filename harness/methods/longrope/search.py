"""LongRoPE's evolutionary search (arXiv 2402.13753 §3.2; microsoft/LongRoPE `evolution/`), budgeted and resumable.

A genome is d/2 non-decreasing rescale factors λ_i in [1, 1 + s] on a grid of `step` (the repository's `dim_mono`
space) plus n̂, the count of initial positions that keep the original RoPE (the paper's search space, chosen from
`N_HAT_CHOICES`). The initial population holds the hand-set factor families (PI, NTK, NTK-by-parts, n̂ = 0) and
mutations of them; each iteration keeps the `parents` best, adds `mutations` mutated parents and `crossovers`
children of two parents (genes taken from the second parent with probability 0.3 · 0.5, as the repository).
Genomes already evaluated are not evaluated again. The search stops after `evals` evaluations.

Resuming: the state file records the settings and every evaluation (genome → objective). The search is a
deterministic function of the seed and those objectives, so a rerun replays it from the state file, evaluating
only genomes it has not seen, and continues where it stopped (or extends to a larger `evals`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import HarnessError

log = logging.getLogger(__name__)

#: n̂ candidates of the paper (positions that keep the original RoPE); choices >= the window are dropped.
N_HAT_CHOICES = (0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 64, 128, 256)
MUTATE_P = 0.3  # per-gene mutation / crossover probability (repository)


@dataclass
class SearchSettings:
    """Hyper-parameters; the paper / repository defaults are population 64, parents 32, 16 + 16 children, 40 rounds."""

    scale: float
    population: int = 64
    parents: int = 32
    mutations: int = 16
    crossovers: int = 16
    evals: int = 64 + 40 * 32
    step: float = 0.01
    seed: int = 0
    search_n_hat: bool = True
    max_crossover_try: int = 20


@dataclass(frozen=True)
class Genome:
    factors: tuple[float, ...]
    n_hat: int = 0

    @staticmethod
    def make(factors: np.ndarray | list[float], n_hat: int = 0) -> Genome:
        return Genome(tuple(round(float(x), 6) for x in factors), int(n_hat))


Objective = Callable[[Genome], float]


class BudgetSpent(Exception):
    """Raised inside the search when the evaluation budget is used up."""


class Search:
    """The evolutionary search; `objective(genome)` returns the perplexity to minimise."""

    def __init__(self, settings: SearchSettings, objective: Objective, initial: list[np.ndarray], window: int,
                 state_path: str | Path | None = None, context: dict[str, Any] | None = None):
        if settings.parents > settings.population:
            raise HarnessError(f"--parents {settings.parents} exceeds --population {settings.population}. "
                               "Fix: use parents <= population")
        self.s = settings
        self.objective = objective
        self.initial = [np.asarray(f, dtype=np.float64) for f in initial]
        self.n_hats = [n for n in N_HAT_CHOICES if n < window] if settings.search_n_hat else [0]
        self.rng = np.random.default_rng(settings.seed)
        self.top = 1.0 + settings.scale
        self.state_path = Path(state_path) if state_path else None
        self.context = {"settings": asdict(settings), **(context or {})}
        self.memo: dict[Genome, float] = {}
        self.order: list[Genome] = []  # evaluation order (what the budget counts)
        self._load()

    # ------------------------------------------------------------------------------------------------- state
    def _load(self) -> None:
        if not self.state_path or not self.state_path.is_file():
            return
        state = json.loads(self.state_path.read_text())
        saved = {k: v for k, v in state.get("context", {}).items() if k != "settings"}
        mine = {k: v for k, v in self.context.items() if k != "settings"}
        fixed = {k: v for k, v in state["context"]["settings"].items() if k != "evals"}
        if saved != mine or fixed != {k: v for k, v in self.context["settings"].items() if k != "evals"}:
            raise HarnessError(f"--state {self.state_path} belongs to a search with other settings. Fix: use the "
                               "same model, data, target length and hyper-parameters, or a new --state file")
        for row in state["evaluations"]:
            g = Genome.make(row["long_factor"], row["n_hat"])
            self.memo[g] = float(row["ppl"])
        log.info("resuming from %s: %d evaluations recorded", self.state_path, len(self.memo))

    def _save(self) -> None:
        if not self.state_path:
            return
        done = set(self.order)
        rows = [{"long_factor": list(g.factors), "n_hat": g.n_hat, "ppl": self.memo[g]} for g in self.order]
        rows += [{"long_factor": list(g.factors), "n_hat": g.n_hat, "ppl": v} for g, v in self.memo.items()
                 if g not in done]  # recorded by an earlier, longer run: keep them
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(self.state_path.suffix + ".tmp")
        tmp.write_text(json.dumps({"context": self.context, "evaluations": rows}) + "\n")
        tmp.replace(self.state_path)

    # ----------------------------------------------------------------------------------------------- scoring
    def evaluate(self, g: Genome) -> float:
        """Objective of `g` (from the state file when known); raises BudgetSpent past the budget."""
        if g in self.order:
            return self.memo[g]
        if len(self.order) >= self.s.evals:
            raise BudgetSpent
        if g not in self.memo:
            value = float(self.objective(g))
            self.memo[g] = value if np.isfinite(value) else float("inf")
        self.order.append(g)
        self._save()
        return self.memo[g]

    # ------------------------------------------------------------------------------------------ operators
    def _grid(self, lo: float, hi: float) -> np.ndarray:
        grid = np.round(np.arange(lo, hi + self.s.step / 2, self.s.step), 6)
        return grid[grid <= hi]  # steps from lo: never past the upper neighbour (keeps λ monotone)

    def mutate(self, g: Genome) -> Genome:
        """Resample each factor with probability 0.3 between its neighbours (keeps λ monotone); maybe move n̂."""
        for _ in range(1000):
            f = np.array(g.factors)
            for i in range(f.size):
                if self.rng.random() < MUTATE_P:
                    lo = 1.0 if i == 0 else f[i - 1]
                    hi = self.top if i == f.size - 1 else f[i + 1]
                    grid = self._grid(lo, hi)
                    if grid.size:
                        f[i] = grid[self.rng.integers(grid.size)]
            n_hat = g.n_hat
            if len(self.n_hats) > 1 and self.rng.random() < MUTATE_P:
                k = self.n_hats.index(n_hat) if n_hat in self.n_hats else 0
                n_hat = self.n_hats[int(np.clip(k + self.rng.choice([-1, 1]), 0, len(self.n_hats) - 1))]
            child = Genome.make(f, n_hat)
            if child not in self.order:
                return child
        return child

    def crossover(self, a: Genome, b: Genome) -> Genome | None:
        """Genes of `a`, each taken from `b` with probability 0.3 · 0.5; None if no new monotone child is found."""
        if a == b:
            return None
        for _ in range(self.s.max_crossover_try):
            f = np.array(a.factors)
            n_hat = a.n_hat
            for i in range(f.size + 1):
                if self.rng.random() < MUTATE_P and self.rng.random() < 0.5:
                    if i == f.size:
                        n_hat = b.n_hat
                    else:
                        f[i] = b.factors[i]
            child = Genome.make(f, n_hat)
            if np.all(np.diff(f) >= 0) and child not in self.order:
                return child
        return None

    # ------------------------------------------------------------------------------------------------ loop
    def run(self) -> tuple[Genome, float]:
        """Search until the budget is spent; return the best genome and its objective."""
        try:
            population = [Genome.make(np.clip(np.maximum.accumulate(f), 1.0, self.top)) for f in self.initial]
            for g in population:
                self.evaluate(g)
            while len(population) < self.s.population:
                child = self.mutate(population[int(self.rng.integers(len(self.initial)))])
                self.evaluate(child)
                population.append(child)
            while True:
                parents = sorted(population, key=lambda g: self.memo[g])[: self.s.parents]
                log.info("round: best ppl %.4f (n_hat %d), %d evaluations", self.memo[parents[0]], parents[0].n_hat,
                         len(self.order))
                population = list(parents)
                for _ in range(self.s.mutations):
                    child = self.mutate(parents[int(self.rng.integers(len(parents)))])
                    self.evaluate(child)
                    population.append(child)
                for _ in range(self.s.crossovers):
                    i, j = sorted(self.rng.choice(len(parents), 2, replace=False)) if len(parents) > 1 else (0, 0)
                    child = self.crossover(parents[i], parents[j]) or self.mutate(parents[i])
                    self.evaluate(child)
                    population.append(child)
        except BudgetSpent:
            pass
        best = min(self.order, key=lambda g: self.memo[g])
        return best, self.memo[best]
