"""Run an experiment: iterate a task's examples, append one JSON line per finished example, resume on rerun.

Per-example seeds come from (run seed, subset, id), so results do not depend on order or sharding. A failing
example (any exception but a HarnessError: its prompt cannot be built, OOM, generation error) becomes an error line
and the run goes on; it is retried on the next run.
SIGTERM / SIGUSR1 (sent by SLURM before a time limit) stop the run after the current example.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from harness.core import memory, provenance
from harness.core.config import ExperimentConfig, changed_keys
from harness.core.errors import ConfigError, HarnessError, suggest
from harness.core.locking import experiment_lock
from harness.core.results import ExperimentDir, JsonlAppender, io_error, latest_records, repair_jsonl, write_json
from harness.core.seeding import derive_seed, in_shard
from harness.core.tomlio import write_config_toml
from harness.model.engine import Engine
from harness.model.loading import load_model, load_tokenizer, model_identity
from harness.stages import samples
from harness.stages.preflight import PreflightReport, apply_with_preflight
from harness.stages.resolve import RunPlan, ensure_model_config
from harness.stages.run_checks import check_plan_size, check_prompts, check_runtime
from harness.tasks.base import Example, Task
from harness.tasks.data_identity import DATA_FILES, recording

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def selected_subsets(task: Task, cfg: ExperimentConfig) -> list[str]:
    """The task's subsets, filtered by `subsets` (unknown names are a config error)."""
    default = task.subsets()
    if not cfg.subsets:
        return default
    available = task.available_subsets()
    for name in cfg.subsets:
        if name not in available:
            raise ConfigError("subsets", f"unknown subset '{name}' for task '{cfg.task}'{suggest(name, available)}",
                              f"use some of: {', '.join(available)}", cfg.source)
    return list(cfg.subsets)


def select_examples(task: Task, subset: str, cfg: ExperimentConfig, shard: tuple[int, int]) -> list[Example]:
    """`max_examples` first (in task order, so shards partition the same set), then the shard."""
    check_plan_size(task, cfg, subset)
    examples = task.examples(subset)
    if cfg.max_examples is not None:
        examples = examples[: cfg.max_examples]
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        raise HarnessError(f"task '{cfg.task}' produced duplicate example ids in '{subset}' (a task bug)")
    return [e for e in examples if in_shard(e.id, shard)]


class StopFlag:
    """Set by SIGTERM/SIGUSR1: finish the current example, flush, exit cleanly."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
            if sig is not None:
                try:
                    self._old[sig] = signal.signal(sig, self._handle)
                except ValueError:  # not in the main thread
                    pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("signal %d received: stopping after the current example", signum)
        self.stop = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class RunSummary:
    exp_dir: str
    done: int = 0
    errors: int = 0
    skipped: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    per_subset: dict[str, int] = field(default_factory=dict)


def prepare_dir(exp: ExperimentDir, cfg: ExperimentConfig, overwrite: bool, shard: tuple[int, int] = (0, 1),
                data_sources: dict[str, Any] | None = None) -> None:
    """Create the experiment dir or check that an existing one ran the same config and data (else refuse).

    An experiment without predictions takes the new config. With `overwrite`, a sharded run discards only its own
    shard file(s), so shards running at once keep each other's. Call it holding the experiment lock.
    """
    try:
        exp.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(exc, "creating", exp.path) from None
    if exp.exists() and overwrite:
        if shard[1] > 1:
            for path in exp.predictions_dir.glob(f"*.shard-{shard[0]}-of-{shard[1]}.jsonl"):
                path.unlink(missing_ok=True)
        else:
            shutil.rmtree(exp.predictions_dir, ignore_errors=True)
        exp.scores_path.unlink(missing_ok=True)
    elif exp.has_predictions():
        refuse_changes(exp, cfg, data_sources)
    elif exp.exists():
        log.info("%s: no predictions yet, so the experiment takes the current config", exp.path)
    try:
        write_json(exp.config_path, cfg.to_dict())
    except HarnessError:
        if not exp.config_path.is_file():
            raise
        log.debug("config.json written concurrently by another shard")  # it renamed our temp file: same config
    try:
        write_config_toml(exp, cfg)  # the resolved config as TOML: `gali-run --cfg <exp>/config.toml` reruns it
    except FileNotFoundError:  # a shard starting at the same moment renamed the shared temp file: same config
        log.debug("config.toml written concurrently by another shard")
    except OSError as exc:
        raise io_error(exc, "writing", exp.path / "config.toml") from None
    if data_sources is not None:
        old = _read_data_sources(exp) if not overwrite else {}
        write_json(exp.data_path, {**old, **data_sources})


def _read_data_sources(exp: ExperimentDir) -> dict[str, Any]:
    try:
        doc = json.loads(exp.data_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def refuse_changes(exp: ExperimentDir, cfg: ExperimentConfig, data_sources: dict[str, Any] | None) -> None:
    """HarnessError naming the changed keys (`params.chunk_coe`) or data when `exp` has predictions of another
    config or of other data; the message gives the real path of the experiment."""
    new = cfg.fingerprint()
    old = {k: v for k, v in exp.read_config().items() if k in new}
    changed = changed_keys(old, new)
    if data_sources:
        before = _read_data_sources(exp)
        for subset, entry in sorted(data_sources.items()):
            prev = before.get(subset)
            if isinstance(prev, dict) and prev.get("sha256") != entry.get("sha256"):
                changed.append(f"data of '{subset}' (was {', '.join(prev.get('files') or ['?'])}, now "
                               f"{', '.join(entry.get('files') or ['?'])}, with different content)")
    if changed:
        raise HarnessError(
            f"{cfg.source}: {exp.path} was produced with a different config (changed: {', '.join(changed)}). Fix: "
            f"pass --overwrite to discard the old predictions, or choose a new exp_name (e.g. --set "
            f"exp_name={cfg.exp_name}-v2)")


def provenance_path(exp: ExperimentDir, shard: tuple[int, int]) -> Path:
    """provenance.json, or provenance.shard-I-of-N.json for a sharded run (each shard writes its own)."""
    return exp.provenance_path if shard[1] <= 1 else exp.path / f"provenance.shard-{shard[0]}-of-{shard[1]}.json"


def run_example(task: Task, example: Example, engine: Engine, cfg: ExperimentConfig, device: str) -> dict[str, Any]:
    """Run one example; failures become an error record."""
    seed = derive_seed(cfg.seed, example.subset, example.id)
    seed_everything(seed)
    engine.method.start_example(seed)
    memory.reset_peak(device)
    t0 = time.perf_counter()
    base = {"id": example.id, "subset": example.subset, "seed": seed}
    try:
        fields = samples.run_logged(task, example, engine, cfg.log_samples)
    except HarnessError:
        raise
    except Exception as exc:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        log.error("example %s/%s failed: %s: %s", example.subset, example.id, type(exc).__name__, exc)
        log.debug("traceback of %s/%s", example.subset, example.id, exc_info=True)
        return {**base, "error": f"{type(exc).__name__}: {exc}"[:2000], "meta": example.meta}
    return {**base, **fields, "meta": example.meta, "seconds": round(time.perf_counter() - t0, 4),
            "peak_mem_mb": round(memory.peak_mb(device), 1)}


def select_work(task: Task, cfg: ExperimentConfig, shard: tuple[int, int]) -> tuple[dict[str, list[Example]],
                                                                                     dict[str, Any]]:
    """Every selected subset's examples of this shard, and the data each came from ({subset: {"files": [...],
    "sha256": ...}}); raises for unknown subsets, missing or broken data, or an unusable prompt format."""
    work: dict[str, list[Example]] = {}
    sources: dict[str, Any] = {}
    for subset in selected_subsets(task, cfg):
        with recording() as read:
            work[subset] = select_examples(task, subset, cfg, shard)
        check_prompts(task, work[subset])
        if read:
            digest = hashlib.sha256("\n".join(sorted(read.values())).encode()).hexdigest()
            sources[subset] = {"files": sorted(read), "sha256": digest}
    return work, sources


def work_summary(plan: RunPlan, shard: tuple[int, int] = (0, 1), tokenizer: Any = None) -> dict[str, Any]:
    """What a run would do (no weights loaded): per subset, example counts, input lengths, max new tokens.

    Checks what the run would check first (device, results directory, plan size, data), so a dry run fails the
    same way."""
    cfg = plan.cfg
    check_runtime(cfg)
    task = plan.build_task(tokenizer)
    out: dict[str, Any] = {}
    work, _ = select_work(task, cfg, shard)
    for subset, examples in work.items():
        lengths, prompt_errors = [], 0
        for e in examples:
            try:
                n = task.input_length(e)
            except HarnessError:
                raise
            except Exception as exc:
                log.warning("example %s/%s: cannot build its prompt (%s: %s)", subset, e.id, type(exc).__name__, exc)
                prompt_errors += 1
                continue
            if n is not None:
                lengths.append(n)
        entry: dict[str, Any] = {"examples": len(examples), "max_new_tokens": task.max_new_tokens(subset)}
        if prompt_errors:
            entry["prompt_errors"] = prompt_errors
        if lengths:
            entry["tokens"] = {"min": min(lengths), "median": int(np.median(lengths)), "max": max(lengths)}
        out[subset] = entry
    return out


def run_experiment(plan: RunPlan, overwrite: bool = False, shard: tuple[int, int] = (0, 1),
                   preflight: bool = True) -> RunSummary:
    """Run (or resume) one resolved experiment; returns counts. Raises HarnessError for user-fixable problems.

    Everything that can be checked is checked before the experiment directory is touched; the run then holds
    the experiment's lock (see harness.core.locking) while it writes. With `preflight` (the default) the method is
    checked on the loaded model before the first example (harness.stages.preflight); a failure raises PreflightError
    before any prediction is written.
    """
    plan = ensure_model_config(plan)  # the plan holds the model config read at resolution (loaded here if not)
    cfg = plan.cfg
    exp = ExperimentDir(cfg.results_dir, cfg.exp_name)
    device = check_runtime(cfg)
    tokenizer = load_tokenizer(cfg, plan.model_config)
    task = plan.build_task(tokenizer)
    selected, sources = select_work(task, cfg, shard)
    prepare_parent(exp)
    with experiment_lock(exp.path, shard):
        prepare_dir(exp, cfg, overwrite, shard, sources)
        return _run_locked(plan, device, exp, task, tokenizer, selected, shard, preflight)


def prepare_parent(exp: ExperimentDir) -> None:
    """Create the experiment directory (for its lock file)."""
    try:
        exp.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(exc, "creating", exp.path) from None


def _run_locked(plan: RunPlan, device: str, exp: ExperimentDir, task: Task, tokenizer: Any,
                selected: dict[str, list[Example]], shard: tuple[int, int], preflight: bool = True) -> RunSummary:
    """The run proper: skip finished examples, load the model, append one record per example."""
    cfg = plan.cfg
    work: dict[str, list[Example]] = {}
    summary = RunSummary(str(exp.path))
    for subset, examples in selected.items():
        path = exp.predictions_path(subset, shard)
        try:
            repair_jsonl(path)  # torn last line cut, broken lines moved to <file>.bad: their examples rerun
        except OSError as exc:
            raise io_error(exc, "repairing", path) from None
        done = {i for i, r in latest_records([path]).items() if "error" not in r}
        todo = [e for e in examples if e.id not in done]
        summary.skipped += len(examples) - len(todo)
        if todo:
            work[subset] = todo
    if not work:
        log.info("%s: nothing to do (%d examples already finished)", cfg.exp_name, summary.skipped)
        return summary
    model, info, device = load_model(cfg, plan.model_config, device, plan.dtype)
    method = plan.build_method()
    prov = provenance.collect(device, cfg.seed)
    prov.update(original_window=info.original_window, model_type=info.model_type, shard=list(shard))
    prov.update(provenance.run_details(model_identity(cfg, plan.model_config), DATA_FILES))

    def record_preflight(report: PreflightReport) -> None:
        prov["preflight"] = report.to_dict()
        write_json(provenance_path(exp, shard), prov)

    if apply_with_preflight(model, tokenizer, method, info, device, preflight, record_preflight) is None:
        prov["preflight"] = {"skipped": True}
        log.warning("%s: preflight skipped (--skip-preflight): the method's wiring is not checked", cfg.exp_name)
    engine = Engine(model, tokenizer, method, device)
    write_json(provenance_path(exp, shard), prov)
    t0 = time.perf_counter()
    with StopFlag() as flag:
        for subset, todo in work.items():
            with JsonlAppender(exp.predictions_path(subset, shard)) as out:
                bar = tqdm(todo, desc=f"{cfg.exp_name}/{subset}", unit="ex", dynamic_ncols=True)
                for example in bar:
                    record = run_example(task, example, engine, cfg, device)
                    out.append(record)
                    summary.done += 1
                    summary.errors += "error" in record
                    summary.per_subset[subset] = summary.per_subset.get(subset, 0) + 1
                    if record.get("decode_tok_s"):
                        bar.set_postfix(tok_s=f"{record['decode_tok_s']:.1f}", errors=summary.errors)
                    if flag.stop:
                        summary.interrupted = True
                        break
            if summary.interrupted:
                break
    summary.seconds = time.perf_counter() - t0
    prov.update(finished=provenance.now(), interrupted=summary.interrupted, examples_run=summary.done,
                errors=summary.errors, seconds=round(summary.seconds, 2))
    write_json(provenance_path(exp, shard), prov)
    return summary
