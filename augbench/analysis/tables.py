"""Results as tables: one row per (task, protocol), one column per encoder."""

from __future__ import annotations

import pandas as pd
from rich.table import Table


def pivot_results(results: pd.DataFrame) -> pd.DataFrame:
    """Metric values indexed by (task, protocol), encoders as columns in their order of appearance."""
    table = results.pivot_table(index=["task", "protocol"], columns="encoder", values="value", sort=False)
    return table[list(dict.fromkeys(results["encoder"]))]


def results_table(results: pd.DataFrame, title: str | None = None) -> Table:
    """A rich table of top-1 accuracies (%), the best of each row in bold."""
    pivot = pivot_results(results)
    table = Table(title=title)
    table.add_column("task")
    table.add_column("protocol")
    for encoder in pivot.columns:
        table.add_column(str(encoder), justify="right")
    for (task, protocol), row in pivot.iterrows():
        best = row.max()
        cells = [f"[bold]{v:.1f}[/]" if v == best else f"{v:.1f}" for v in row]
        table.add_row(task, protocol, *cells)
    return table


def results_markdown(results: pd.DataFrame) -> str:
    return pivot_results(results).round(1).reset_index().to_markdown(index=False)
