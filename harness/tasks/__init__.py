"""Benchmark tasks. Each module registers one task with `@TASKS.register`."""

from harness.tasks.base import TASKS, Example, Task

__all__ = ["TASKS", "Example", "Task"]
