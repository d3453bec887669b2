"""The report's figures, each returned as PNG bytes.

Figures are built with matplotlib's object API (`Figure`, no pyplot), so no
display, backend choice or global figure state is involved.
"""

from __future__ import annotations

import io
import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def heatmap(matrix: pd.DataFrame, title: str) -> bytes:
    """A square task × task correlation matrix, values written in the cells (NaN left blank)."""
    size = max(3.5, 0.55 * len(matrix) + 1.5)
    figure = Figure(figsize=(size + 1, size))
    axes = figure.subplots()
    image = axes.imshow(matrix.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
    axes.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=60, ha="right")
    axes.set_yticks(range(len(matrix.index)), matrix.index)
    for (i, j), value in np.ndenumerate(matrix.to_numpy(dtype=float)):
        if not math.isnan(value):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if abs(value) > 0.6 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046)
    axes.set_title(title)
    return _png(figure)


def reference_scatter(matrix: pd.DataFrame, reference: str, correlations: pd.DataFrame) -> bytes:
    """One panel per task: its value against the reference task's, one point per encoder, with a linear fit."""
    tasks = [t for t in matrix.columns if t != reference]
    columns = min(3, max(1, len(tasks)))
    rows = max(1, math.ceil(len(tasks) / columns))
    figure = Figure(figsize=(4 * columns, 3.4 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    methods = list(dict.fromkeys(matrix.index.get_level_values(0)))
    palette = matplotlib.colormaps["tab10"]
    colours = {m: palette(i % 10) for i, m in enumerate(methods)}
    by_task = correlations.set_index("task") if not correlations.empty else None
    for axes_one, task in zip(axes.flat, tasks, strict=False):
        pair = matrix[[reference, task]].dropna()
        for (method, _), (x, y) in pair.iterrows():
            axes_one.scatter(x, y, color=colours[method], s=28)
        if len(pair) >= 2 and pair[reference].nunique() > 1:
            slope, intercept = np.polyfit(pair[reference], pair[task], 1)
            xs = np.linspace(pair[reference].min(), pair[reference].max(), 10)
            axes_one.plot(xs, slope * xs + intercept, color="grey", linewidth=1)
        label = task
        if by_task is not None and task in by_task.index:
            rho, r = by_task.loc[task, "spearman"], by_task.loc[task, "pearson"]
            label += f"\nρ={rho:.2f}  r={r:.2f}"
        axes_one.set_title(label, fontsize=9)
        axes_one.set_xlabel(reference, fontsize=8)
    for axes_one in list(axes.flat)[len(tasks):]:
        axes_one.axis("off")
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[m], label=m) for m in methods]
    figure.legend(handles=handles, loc="upper center", ncol=min(len(methods), 5), bbox_to_anchor=(0.5, 1.04),
                  fontsize=8)
    figure.tight_layout()
    return _png(figure)


def probe_lines(probes: pd.DataFrame, metric: str) -> bytes:
    """Invariance-probe values per depth (stage), one panel per method, one line per augmentation."""
    methods = list(dict.fromkeys(probes["method"]))
    figure = Figure(figsize=(4 * len(methods), 3.4))
    axes = figure.subplots(1, len(methods), squeeze=False, sharey=True)
    stages = list(dict.fromkeys(probes["stage"]))
    for axes_one, method in zip(axes.flat, methods, strict=True):
        rows = probes[(probes["method"] == method) & (probes["metric"] == metric)]
        for augmentation, group in rows.groupby("augmentation", sort=False):
            means = group.groupby("stage")["value"].mean().reindex(stages)
            axes_one.plot(range(len(stages)), means.to_numpy(), marker="o", label=augmentation)
        axes_one.set_xticks(range(len(stages)), stages, rotation=30)
        axes_one.set_title(method, fontsize=9)
        axes_one.set_xlabel("depth")
    axes[0, 0].set_ylabel(metric)
    axes[0, -1].legend(fontsize=7, loc="best")
    figure.tight_layout()
    return _png(figure)
