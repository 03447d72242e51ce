"""The task interface: examples in, one prediction record per example out, scores from records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from harness.core.registry import Registry

if TYPE_CHECKING:
    from harness.core.config import ExperimentConfig
    from harness.model.engine import Engine


@dataclass
class NoOptions:
    """A task without [task_options]."""


@dataclass
class Example:
    """One unit of work. `id` is stable across runs and shards (it keys resume and seeds)."""

    id: str
    subset: str
    inputs: Any
    references: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class. Subclasses set `name`, `Options` and implement `subsets`, `examples`, `run`, `score`.

    `run` returns the task-specific part of the prediction record (at least `prediction`); the runner adds id,
    timing, memory and lengths. `score` turns the records of one subset into metrics (used by gali-eval).
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    description: ClassVar[str] = ""

    def __init__(self, cfg: ExperimentConfig, options: Any, tokenizer: Any = None):
        self.cfg = cfg
        self.options = options
        self.tokenizer = tokenizer

    @classmethod
    def validate(cls, cfg: ExperimentConfig, options: Any) -> None:
        """Raise ConfigError for missing or impossible task keys (e.g. `times` for needle)."""

    def subsets(self) -> list[str]:
        """Names of the prediction files (datasets, or one name for single-set tasks)."""
        raise NotImplementedError

    def available_subsets(self) -> list[str]:
        """Every subset that `subsets = [...]` may select (default: the default subsets)."""
        return self.subsets()

    def max_new_tokens(self, subset: str) -> int | None:
        """Generation budget of `subset` (None for scoring-only tasks such as perplexity)."""
        return None

    def examples(self, subset: str) -> list[Example]:
        """All examples of `subset`, in a deterministic order (selection is applied by the runner)."""
        raise NotImplementedError

    def run(self, example: Example, engine: Engine) -> dict[str, Any]:
        """Process one example; return record fields such as prediction, references, prompt_len."""
        raise NotImplementedError

    def input_length(self, example: Example) -> int | None:
        """Token length of the model input for the dry-run plan (None if unknown without a tokenizer)."""
        return None

    def score(self, subset: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Metrics for one subset from its records; the main number is under key "score"."""
        raise NotImplementedError

    def summarize(self, per_subset: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Task-level numbers from the per-subset metrics (default: mean of the subsets' "score")."""
        values = [m["score"] for m in per_subset.values() if isinstance(m.get("score"), (int, float))]
        return {"average": round(sum(values) / len(values), 2) if values else None}

    def expected_count(self, subset: str) -> int | None:
        """How many examples a complete run of `subset` has (for n scored / n expected); None if unknown."""
        return None


TASKS: Registry[Task] = Registry("task", "harness.tasks")
