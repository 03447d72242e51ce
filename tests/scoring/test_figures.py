"""Each gali-collect figure, drawn from fixture scores documents: non-empty, and its title, axis labels, ticks and
legend entries read back from the matplotlib objects are the expected strings; no text is clipped."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from harness.tasks.figures.bars import ZERO_MARK, draw_bars
from harness.tasks.figures.curves import draw_ppl
from harness.tasks.figures.needle import draw_heatmap, draw_methods_side_by_side, draw_pass_rate_vs_length
from harness.tasks.figures.style import OKABE_ITO
from harness.tasks.longbench import dataset_metric

WINDOW = {"original_window": 1024}


def needle_doc(method: str, cells: dict[str, float]) -> dict:
    by_length: dict[str, list[float]] = {}
    for key, v in cells.items():
        by_length.setdefault(key.split("|")[0], []).append(v)
    return {"exp_name": f"lab-needle-{method}", "model": "gali:lab", "method": method, "windows": WINDOW,
            "subsets": {"needle": {"score": float(np.mean(list(cells.values()))), "cells": cells,
                                   "by_length": {k: float(np.mean(v)) for k, v in by_length.items()},
                                   "tokens_by_length": {"512": 530.0, "1024": 1050.0, "2048": 2080.0}}}}


NEEDLE = [needle_doc("gali", {"512|50": 100.0, "1024|50": 100.0, "2048|50": 50.0, "512|100": 100.0,
                              "1024|100": 100.0, "2048|100": 100.0}),
          needle_doc("original", {"512|50": 100.0, "1024|50": 100.0, "2048|50": 0.0, "512|100": 100.0,
                                  "1024|100": 50.0, "2048|100": 0.0})]
PPL = [{"exp_name": f"lab-pg19-{m}", "model": "gali:lab", "method": m, "windows": WINDOW,
        "subsets": {"python_heldout": {"ppl": {"512": 40.0, "1024": 41.0, "2048": y}}}}
       for m, y in (("selfextend", 40.5), ("original", 90.0), ("gali", 42.0))]
BARS = [{"exp_name": f"lb-{m}", "model": "org/m", "method": m, "subsets": {
    "qasper": {"score": s[0], "n_scored": 200}, "passage_count": {"score": s[1], "n_scored": 200}},
    "summary": {"average": (s[0] + s[1]) / 2}} for m, s in (("original", (30.0, 0.0)), ("gali", (35.5, 4.0)))]


def render(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())
    tight, box = fig.get_tightbbox(canvas.get_renderer()), fig.bbox_inches  # every drawn artist, in inches
    assert tight.x0 >= box.x0 - 0.01 and tight.y0 >= box.y0 - 0.01, f"clipped at the left/bottom: {tight}"
    assert tight.x1 <= box.x1 + 0.01 and tight.y1 <= box.y1 + 0.01, f"clipped at the right/top: {tight}"
    return image


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_needle_heatmap():
    fig = draw_heatmap(NEEDLE[0])
    image = render(fig)
    assert (image[..., :3] < 250).any()  # something drawn
    ax = fig.axes[0]
    assert ax.get_title() == "needle: gali on gali:lab - overall 91.7%"
    assert ax.get_xlabel() == "prompt length (tokens)" and ax.get_ylabel() == "needle depth (% of the context)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["530", "1050", "2080"]  # real token counts
    assert [t.get_text() for t in ax.get_yticklabels()] == ["50%", "100%"]
    assert ax.images[0].get_cmap().name == "cividis"
    assert legend(ax) == ["pre-trained window M = 1K"]
    assert ax.lines[0].get_xdata()[0] == pytest.approx(0.5)  # between 530 and 1050 tokens
    assert fig.axes[1].get_ylabel() == "pass rate (%)"  # the colour bar


def test_needle_methods_side_by_side():
    fig = draw_methods_side_by_side("gali:lab", NEEDLE)
    render(fig)
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert titles == ["original (baseline)\n58.3%", "gali\n91.7%"]  # original first
    assert fig.get_suptitle() == "needle pass rate by method - gali:lab"
    assert fig.axes[2].get_ylabel() == "pass rate (%)" and len(fig.axes) == 3  # one shared colour bar
    beyond = [{**d, "windows": {"original_window": 256}} for d in NEEDLE]  # M before the first column
    fig = draw_methods_side_by_side("gali:lab", beyond)
    assert fig.axes[0].get_xlabel() == "prompt length (tokens); all beyond M = 256"


def test_needle_pass_rate_vs_length():
    fig = draw_pass_rate_vs_length("gali:lab", NEEDLE)
    render(fig)
    ax = fig.axes[0]
    assert ax.get_title() == "needle pass rate vs length - gali:lab"
    assert ax.get_xlabel() == "prompt length (tokens, log2 scale)" and ax.get_ylabel() == "pass rate (%)"
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert legend(ax) == ["original (baseline)", "gali", "pre-trained window M = 1K"]
    baseline, gali = ax.lines[0], ax.lines[1]
    assert baseline.get_color() == "black" and baseline.get_linestyle() == "--"
    assert gali.get_color() == OKABE_ITO[0]
    assert list(gali.get_ydata()) == [100.0, 100.0, 75.0]


def test_ppl_curves():
    fig = draw_ppl("gali:lab", PPL)
    render(fig)
    ax = fig.axes[0]
    assert ax.get_title() == "perplexity on python_heldout - gali:lab"
    assert ax.get_xlabel() == "evaluated length (tokens, log2 scale)"
    assert ax.get_ylabel() == "perplexity (lower is better)"
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["512", "1K", "2K"]
    assert legend(ax) == ["original (baseline)", "gali", "selfextend", "pre-trained window M = 1K"]
    assert [line.get_color() for line in ax.lines[:3]] == ["black", OKABE_ITO[0], OKABE_ITO[1]]


def test_bars():
    fig = draw_bars("longbench", "org/m", BARS, {d: dataset_metric(d) or "" for d in ("qasper", "passage_count")})
    render(fig)
    ax = fig.axes[0]
    assert ax.get_title() == "longbench - org/m"
    assert ax.get_ylabel() == "score (0-100; F1, accuracy per dataset)"
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["qasper\nF1\nn=200", "passage_count\naccuracy\nn=200", "average\n(of datasets)"]
    assert ax.get_xticklabels()[-1].get_fontweight() == "bold"
    assert legend(ax) == ["original (baseline)", "gali"]
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["30.0", "0.0", "15.0", "35.5", "4.0", "19.8"]
    heights = [p.get_height() for p in ax.patches]
    assert heights[1] == ZERO_MARK > 0  # a zero score stays visible
    centers = [p.get_x() + p.get_width() / 2 for p in ax.patches[:3]]
    assert centers[2] - centers[1] > centers[1] - centers[0]  # the average is set apart


def test_reused_heatmap_equals_a_fresh_one():
    """draw_heatmap_to_save reuses the last figure of the same shape: it must render exactly as a new figure."""
    from harness.tasks.figures.needle import draw_heatmap_to_save

    def grid_doc(method: str, seed: int, window: int) -> dict:
        rng = np.random.default_rng(seed)
        cells = {f"{1024 * i}|{d}": float(rng.integers(0, 101)) for i in range(1, 12) for d in range(0, 100, 10)}
        return {**needle_doc(method, cells), "windows": {"original_window": window}}

    first, second = grid_doc("gali", 0, 4096), grid_doc("original", 1, 6000)
    figure = draw_heatmap_to_save(first)
    assert draw_heatmap_to_save(second) is figure  # the reuse path is exercised
    reused = render(figure)
    fresh = render(draw_heatmap(second))
    assert reused.shape == fresh.shape and (reused == fresh).all()
