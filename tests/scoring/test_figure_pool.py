"""harness.stages.figure_pool: figures drawn in worker processes give the same files and failures as serially."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.stages import figure_pool
from harness.tasks.base import FigureJob


def _save(fig, path: Path, sig: str) -> Path:
    path.write_text(f"{fig}|{sig}")
    return path


def _draw(i: int) -> str:
    if i == 3:
        raise ValueError("bad data")
    return f"figure {i}"


def _jobs(root: Path) -> list[figure_pool.Job]:
    return [(root / f"f{i}.png", FigureJob(f"f{i}", _draw, (i,)), f"sig{i}") for i in range(6)]


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_drawing_equals_serial(tmp_path, workers):
    drawing = figure_pool.start(_jobs(tmp_path), _save, workers=workers)
    assert (drawing.pool is not None) == (workers == 2)
    failed = drawing.wait()
    assert failed == {tmp_path / "f3.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.png", "f1.png", "f2.png", "f4.png", "f5.png"]
    assert (tmp_path / "f4.png").read_text() == "figure 4|sig4"


def test_png_writer_round_trip(tmp_path):
    """harness.stages.plots writes its own PNG: PIL reads back the same pixels, the signature and the dpi."""
    import numpy as np
    from PIL import Image

    from harness.stages.plots import SIGNATURE_KEY, is_current, png_bytes

    rng = np.random.default_rng(0)
    rgba = np.concatenate([rng.integers(0, 256, (7, 5, 3), dtype=np.uint8), np.full((7, 5, 1), 255, np.uint8)], -1)
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(rgba, {SIGNATURE_KEY: "abc"}, 100))
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (5, 7)
        assert (np.asarray(im) == rgba[..., :3]).all()
        assert im.text[SIGNATURE_KEY] == "abc" and round(im.info["dpi"][0]) == 100
    assert is_current(path, "abc") and not is_current(path, "abd")
