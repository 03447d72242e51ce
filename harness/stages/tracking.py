"""Optional experiment tracking (`pip install 'gali-harness[track]'`): a config's `[tracking]` table makes
`gali-collect` log the experiment's config, scores (per dataset, headline, beyond-window, per length), speed/memory
and its figures to Weights & Biases or MLflow.

    [tracking]
    backend = "mlflow"      # or "wandb"
    project = "gali"        # W&B project / MLflow experiment (default "gali-harness")
    uri = "..."             # MLflow tracking URI (default: the file store <results_dir>/mlruns)
    mode = "offline"        # W&B mode: "offline" (default: no network; `wandb sync` later) or "online"

Each experiment maps to one run; its id is kept in `<exp>/tracking.json`, so collecting again updates the same run.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core import params as P
from harness.core.errors import ConfigError, HarnessError
from harness.core.results import ExperimentDir, write_json
from harness.stages.plots import file_stem
from harness.tasks.base import collect_task

log = logging.getLogger(__name__)

BACKENDS = ("wandb", "mlflow")


@dataclass
class TrackingOptions:
    """The `[tracking]` table."""

    backend: str
    project: str = "gali-harness"
    uri: str | None = None
    mode: str = "offline"


def tracking_options(table: dict[str, Any] | None, source: str = "<config>") -> TrackingOptions | None:
    """Validated options of a `[tracking]` table (None when the table is empty or absent)."""
    if not table:
        return None
    try:
        opts = P.build(TrackingOptions, dict(table), prefix="tracking.")
    except ConfigError as exc:
        raise exc.with_source(source) from None
    if opts.backend not in BACKENDS:
        raise ConfigError("tracking.backend", f"unknown backend '{opts.backend}'", 'use "wandb" or "mlflow"', source)
    if opts.mode not in ("offline", "online", "disabled"):
        raise ConfigError("tracking.mode", f"unknown W&B mode '{opts.mode}'", 'use "offline" or "online"', source)
    return opts


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise HarnessError(f"[tracking] backend = \"{name}\" needs the {name} package. Fix: pip install "
                           f"'gali-harness[track]' (or pip install {name}), or remove the [tracking] table") from None


def flat_params(config: dict[str, Any]) -> dict[str, Any]:
    """Config keys as flat `a.b` names (tables flattened; lists as text)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flat_params(value).items()})
        elif value is not None:
            out[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out


def flat_metrics(scores: dict[str, Any]) -> dict[str, float]:
    """The numbers of a scores document: score/<dataset>, headline/<key>, beyond_*/average, speed/<key>,
    needle acc_at_<length>, pg19 ppl_at_<length> (names MLflow accepts)."""
    def num(value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    out: dict[str, float] = {}
    for subset, metrics in (scores.get("subsets") or {}).items():
        if num(metrics.get("score")) is not None:
            out[f"score/{subset}"] = num(metrics["score"])  # type: ignore[assignment]
        for length, value in (metrics.get("by_length") or {}).items():
            if num(value) is not None:
                out[f"acc_at_{length}/{subset}"] = num(value)  # type: ignore[assignment]
    for key, value in (scores.get("summary") or {}).items():
        if num(value) is not None:
            out[f"headline/{key}"] = num(value)  # type: ignore[assignment]
    for key, info in (scores.get("length_subsets") or {}).items():
        value = num((info.get("summary") or {}).get("average"))
        if value is not None:
            out[f"{key}/average"] = value
    for key, value in (scores.get("speed") or {}).items():
        if num(value) is not None:
            out[f"speed/{key}"] = num(value)  # type: ignore[assignment]
    task = collect_task(str(scores.get("task", "")))
    for subset, metrics in (scores.get("subsets") or {}).items():
        row = None if metrics.get("by_length") else task.length_row(metrics)  # by_length is logged above
        if row is None:
            continue
        name, values = row
        for length, value in values.items():
            number = num(value)
            if number is not None:
                out[f"{name}_at_{length}/{subset}"] = number
    return {k.replace(" ", "_"): v for k, v in out.items()}


def _log_mlflow(opts: TrackingOptions, exp: ExperimentDir, run_id: str | None, params: dict[str, Any],
                metrics: dict[str, float], figures: list[Path]) -> str:
    mlflow = _module("mlflow")
    if opts.uri is None:  # the local file store (MLflow >= 3.x asks for this opt-in; it needs no database)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(opts.uri or (exp.path.parent / "mlruns").resolve().as_uri())
    mlflow.set_experiment(opts.project)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else exp.name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        for fig in figures:
            mlflow.log_artifact(str(fig), artifact_path="figures")
        return run.info.run_id


def _log_wandb(opts: TrackingOptions, exp: ExperimentDir, run_id: str | None, params: dict[str, Any],
               metrics: dict[str, float], figures: list[Path]) -> str:
    wandb = _module("wandb")
    run = wandb.init(project=opts.project, name=exp.name, id=run_id, resume="allow", mode=opts.mode,
                     dir=str(exp.path), config=params)
    run.summary.update(metrics)
    if figures:
        run.log({f"figures/{fig.stem}": wandb.Image(str(fig)) for fig in figures})
    run.finish()
    return run.id


def track_experiment(exp: ExperimentDir, scores: dict[str, Any], figures: list[Path]) -> str | None:
    """Log one experiment if its config has a `[tracking]` table; returns the run id (None: not tracked)."""
    config = exp.read_config()
    opts = tracking_options(config.get("tracking"), str(exp.config_path))
    if opts is None:
        return None
    state_path = exp.path / "tracking.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {}
    run_id = state.get("run_id") if state.get("backend") == opts.backend else None
    logger = _log_mlflow if opts.backend == "mlflow" else _log_wandb
    run_id = logger(opts, exp, run_id, flat_params(config), flat_metrics(scores), figures)

    write_json(state_path, {"backend": opts.backend, "project": opts.project, "run_id": run_id})
    log.info("%s: logged to %s (project %s, run %s)", exp.name, opts.backend, opts.project, run_id)
    return run_id


def figures_of(doc: dict[str, Any], figures: list[Path]) -> list[Path]:
    """The collected figures that show this experiment: its own needle heatmap, and its model's figures."""
    exp_stem = file_stem(str(doc.get("exp_name")))
    model_stem = file_stem(str(doc.get("model")))
    task = str(doc.get("task"))
    out = []
    for fig in figures:
        name = fig.stem
        if name == f"needle_{exp_stem}" or (name.startswith(task) and name.endswith(model_stem)):
            out.append(fig)
    return out


def track_all(exps: list[Any], figures: list[Path]) -> list[str]:
    """Log every experiment of `exps` that has scores and a `[tracking]` table; returns the run ids."""
    ids = []
    for exp in exps:
        if not exp.scores_path.is_file():
            continue
        try:
            config = exp.read_config()
            scores = json.loads(exp.scores_path.read_text())
        except (OSError, ValueError):
            continue
        if not config.get("tracking"):
            continue
        run_id = track_experiment(exp, scores, figures_of(scores, figures))
        if run_id:
            ids.append(run_id)
    return ids
