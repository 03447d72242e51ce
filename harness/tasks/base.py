"""The task interface: examples in, one prediction record per example out, scores from records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError
from harness.core.registry import Registry

if TYPE_CHECKING:
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


Doc = dict[str, Any]
"""A scores.json document written by gali-eval (`exp_name`, `model`, `method`, `subsets`, `summary`, `windows`)."""


@dataclass(frozen=True)
class FigureJob:
    """One figure file of gali-collect: `draw(*args)` returns a matplotlib Figure, saved as `<stem>.png`.

    `draw` is a module-level function and `args` plain data (the documents it shows): the args key the figure's
    signature, so a figure whose data did not change is not drawn again, and a job can be drawn in another process.
    """

    stem: str
    draw: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True)
class ReportTable:
    """An extra gali-collect table of a task: `build(documents) -> DataFrame`, written as `<name>.csv` / `.md` and a
    workbook sheet (e.g. RULER's `ruler_by_length`)."""

    name: str
    build: Callable[[list[Doc]], Any]


FigurePlan = Callable[[list[Doc]], list[FigureJob]]
"""What a task draws: documents of one task (sorted by experiment) -> the figure files they make."""


class Task:
    """Base class. Subclasses set `name`, `Options` and implement `subsets`, `examples`, `run`, `score`.

    `run` returns the task-specific part of the prediction record (at least `prediction`); the runner adds id,
    timing, memory and lengths. `score` turns the records of one subset into metrics and `summarize` aggregates the
    subsets (used by gali-eval). For gali-collect a task declares what its headline number is (`metric`,
    `headline_metric`), its extra summary columns (`summary_columns`), its method x length row (`length_row`), its
    extra tables (`tables`) and its figures (`figures`); the stages consult these declarations, never task names.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    description: ClassVar[str] = ""
    metric: ClassVar[str] = "average score"
    """What the headline number (`summary.average`) is, for the comparison sheet."""
    tables: ClassVar[tuple[ReportTable, ...]] = ()
    figures: ClassVar[tuple[FigurePlan, ...]] = ()

    def __init__(self, cfg: ExperimentConfig, options: Any, tokenizer: Any = None):
        self.cfg = cfg
        self.options = options
        self.tokenizer = tokenizer

    @classmethod
    def validate(cls, cfg: ExperimentConfig, options: Any) -> None:
        """Raise ConfigError for missing or impossible task keys (e.g. `times` for needle)."""

    def need(self, key: str) -> int:
        """The integer config key `key` (e.g. `max_pe`) that this task requires and `validate` has checked."""
        value = getattr(self.cfg, key)
        if value is None:
            raise ConfigError(key, f"task '{self.name}' needs {key}", f"set {key} in the experiment config")
        return int(value)

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

    # -- gali-collect declarations ----------------------------------------------------------------------------------
    @classmethod
    def headline_metric(cls, doc: Doc) -> str:
        """What `doc`'s headline number is (default: `metric`)."""
        return cls.metric

    @classmethod
    def summary_columns(cls, doc: Doc) -> dict[str, Any]:
        """Task-specific columns of the experiment's row in the task's sheet, e.g. `acc@<L>` per length (default:
        none). Columns named `<prefix>@<number>[subset]` are sorted by subset and number, after the others."""
        return {}

    @classmethod
    def length_row(cls, metrics: dict[str, Any]) -> tuple[str, dict[int, Any]] | None:
        """(metric name, {length: value}) of one subset for the method x length comparison table (default: none)."""
        return None


TASKS: Registry[Task] = Registry("task", "harness.tasks")


def collect_task(name: str) -> type[Task]:
    """The class whose declarations gali-collect uses for task `name`: the registered task, or `Task` (nothing
    task-specific) for a name that is not registered (results of a task since removed)."""
    try:
        return TASKS.get(name)
    except ConfigError:
        return Task
