"""Per-shard progress bars for gali-launch: finished examples of each shard (read from its prediction files) out of
the examples the shard owns (from the plan, when the task's examples can be listed without the model)."""

from __future__ import annotations

import logging
import time

from tqdm import tqdm

from harness.core.results import ExperimentDir, latest_records
from harness.stages.resolve import RunPlan
from harness.stages.run import work_summary

log = logging.getLogger(__name__)


def shard_totals(plan: RunPlan, n: int) -> list[int | None]:
    """Examples owned by each of `n` shards (None when they cannot be listed here, e.g. data not present)."""
    totals: list[int | None] = []
    for i in range(n):
        try:
            totals.append(sum(e["examples"] for e in work_summary(plan, (i, n)).values()))
        except Exception as exc:
            log.debug("cannot count the examples of shard %d/%d (%s)", i, n, exc)
            totals.append(None)
    return totals


def shard_done(exp: ExperimentDir, i: int, n: int) -> int:
    """Finished (non-error) examples in shard i's prediction files."""
    paths = sorted(exp.predictions_dir.glob(f"*.shard-{i}-of-{n}.jsonl"))
    return sum(1 for r in latest_records(paths).values() if "error" not in r) if paths else 0


class ShardProgress:
    """One tqdm bar per shard, refreshed at most every `interval_s` seconds."""

    def __init__(self, exp: ExperimentDir, labels: list[str], totals: list[int | None], interval_s: float = 5.0):
        self.exp, self.n, self.interval_s = exp, len(labels), interval_s
        self.bars = [tqdm(total=t, desc=f"shard {i}/{self.n} [{label}]", unit="ex", position=i, leave=True,
                          dynamic_ncols=True) for i, (label, t) in enumerate(zip(labels, totals))]
        self.done = [0] * self.n
        self._last = 0.0
        self.update(force=True)

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        for i, bar in enumerate(self.bars):
            done = shard_done(self.exp, i, self.n)
            if done != self.done[i]:
                self.done[i] = done
                if not bar.disable:  # -q: bars off, counts still kept
                    bar.n = done
                    bar.refresh()

    def close(self) -> None:
        self.update(force=True)
        for bar in self.bars:
            bar.close()
