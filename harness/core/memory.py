"""Peak-memory measurement: CUDA allocator peak on GPU, process high-water mark (VmHWM) on CPU."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


def reset_peak(device: str) -> None:
    """Reset the peak counter (CUDA allocator stats; Linux VmHWM through /proc/self/clear_refs)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mb(device: str) -> float:
    """Peak memory in MiB since the last reset (process-lifetime RSS peak where VmHWM is unavailable)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
