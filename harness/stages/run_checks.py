"""Checks a run makes before it writes anything (also run by `gali-run --dry-run`): the machine has the device,
the results directory is writable, the plan fits in memory, the prompt format works with the tokenizer."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from harness.core.config import ExperimentConfig
from harness.core.errors import ConfigError, HarnessError
from harness.model.loading import resolve_device
from harness.tasks.base import Example, Task

log = logging.getLogger(__name__)

#: the most examples one subset may plan (a bigger plan is a typo, e.g. times = 10**6)
MAX_PLAN_EXAMPLES = 1_000_000


def memory_bytes() -> int | None:
    """Physical memory of this machine (None when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_plan_size(task: Task, cfg: ExperimentConfig, subset: str) -> None:
    """Refuse a plan whose examples cannot be held in memory, before building them (ConfigError)."""
    count = task.expected_count(subset)
    if count is not None and count > MAX_PLAN_EXAMPLES:
        raise ConfigError("times", f"the plan of '{subset}' has {count:,} examples (more than "
                          f"{MAX_PLAN_EXAMPLES:,})", "lower times, or use fewer lengths / depths", cfg.source)
    chars = getattr(task, "plan_chars", lambda _s: None)(subset)
    budget = memory_bytes()
    if chars is not None and budget is not None and chars > budget // 4:
        raise ConfigError("times", f"the prompts of '{subset}' take about {chars / 2**30:.1f} GiB of text, more "
                          f"than a quarter of this machine's memory ({budget / 2**30:.1f} GiB)",
                          "lower times, the lengths (max_k / task_options.lengths) or n_garbage", cfg.source)


def check_results_dir(cfg: ExperimentConfig) -> None:
    """ConfigError unless `results_dir` is (or can be created as) a writable directory; writes nothing."""
    root = Path(cfg.results_dir).expanduser()
    target = root / cfg.exp_name
    for path in (target, root):
        if path.exists() and not path.is_dir():
            raise ConfigError("results_dir", f"{path} exists and is not a directory",
                              "point results_dir at a directory (or remove that file)", cfg.source)
    probe = target if target.exists() else root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError("results_dir", f"{probe} is not writable, so {target} cannot be written",
                          "choose a results_dir you can write to", cfg.source)


def check_runtime(cfg: ExperimentConfig) -> str:
    """What a run needs from this machine, checked before anything is written: the device and a writable
    results directory. Returns the resolved device."""
    device = resolve_device(cfg.device, cfg.source)
    check_results_dir(cfg)
    if cfg.attn_implementation == "flash_attention_2" and (not device.startswith("cuda")
                                                           or importlib.util.find_spec("flash_attn") is None):
        raise ConfigError("attn_implementation", f"flash_attention_2 needs a CUDA device and the flash-attn package "
                          f"(device here: {device})", "use \"sdpa\", or pip install 'gali-harness[flash]' on a CUDA "
                          "machine", cfg.source)
    if cfg.device_map and importlib.util.find_spec("accelerate") is None:
        raise ConfigError("device_map", "device_map = \"auto\" needs the accelerate package",
                          "pip install accelerate, or remove device_map", cfg.source)
    return device


def check_prompts(task: Task, examples: list[Example]) -> None:
    """Build the first example's prompt so an unusable prompt format (a ConfigError) shows before any write."""
    if not examples or task.tokenizer is None:
        return
    try:
        task.input_length(examples[0])
    except HarnessError:
        raise
    except Exception as exc:
        log.debug("prompt check of %s skipped (%s)", examples[0].id, exc)
