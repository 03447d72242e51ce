"""harness.stages.figure_pool: figures drawn in worker processes give the same files and failures as serially."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.stages import figure_pool


def _save(fig, path: Path, sig: str) -> Path:
    path.write_text(f"{fig}|{sig}")
    return path


def _jobs(root: Path):
    def draw(i):
        if i == 3:
            raise ValueError("bad data")
        return f"figure {i}"

    with figure_pool.deferring() as jobs:
        for i in range(6):
            assert figure_pool.defer(root / f"f{i}.png", lambda i=i: draw(i), f"sig{i}")
    assert not figure_pool.defer(root / "late.png", lambda: "x", "s")  # outside the block: drawn by the caller
    return jobs


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_drawing_equals_serial(tmp_path, workers):
    failed = figure_pool.draw_all(_jobs(tmp_path), _save, workers=workers)
    assert failed == {tmp_path / "f3.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.png", "f1.png", "f2.png", "f4.png", "f5.png"]
    assert (tmp_path / "f4.png").read_text() == "figure 4|sig4"
