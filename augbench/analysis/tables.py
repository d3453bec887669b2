"""Results as tables: one row per (task, protocol), one column per encoder."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from rich.table import Table


def pivot_results(results: pd.DataFrame, statistic: str = "median") -> pd.DataFrame:
    """Metric values indexed by (task, protocol), encoders as columns in their order of appearance; an encoder
    evaluated under several seeds (a `seed` column) gets the `statistic` over them."""
    table = results.pivot_table(index=["task", "protocol"], columns="encoder", values="value", sort=False,
                                aggfunc=statistic)
    return table[list(dict.fromkeys(results["encoder"]))]


def _cells(results: pd.DataFrame) -> pd.DataFrame:
    """Text cells: the value, or with several seeds "median [min, max]"; R² with two decimals, the rest with one."""
    digits = {task: 2 if metric == "r2" else 1 for task, metric in zip(results["task"], results.get("metric", []))}
    median, low, high = (pivot_results(results, s) for s in ("median", "min", "max"))
    several = "seed" in results and results.groupby(["task", "protocol", "encoder"])["seed"].nunique().max() > 1
    cells = median.astype(object)
    for (task, protocol), row in median.iterrows():
        d = digits.get(task, 1)
        for encoder, value in row.items():
            spread = f" [{low.at[(task, protocol), encoder]:.{d}f}, {high.at[(task, protocol), encoder]:.{d}f}]"
            cells.at[(task, protocol), encoder] = f"{value:.{d}f}" + (spread if several else "")
    return cells


def results_table(results: pd.DataFrame, title: str | None = None) -> Table:
    """A rich table of the results (see `_cells`), the best median of each row in bold."""
    median, cells = pivot_results(results), _cells(results)
    table = Table(title=title)
    table.add_column("task")
    table.add_column("protocol")
    for encoder in median.columns:
        table.add_column(str(encoder), justify="right")
    for (task, protocol), row in median.iterrows():
        best = row.max()
        text = cells.loc[(task, protocol)]
        table.add_row(task, protocol, *[f"[bold]{text[e]}[/]" if v == best else text[e] for e, v in row.items()])
    return table


def results_markdown(results: pd.DataFrame) -> str:
    return _cells(results).reset_index().to_markdown(index=False, disable_numparse=True)


def mean_std_table(results: pd.DataFrame, marks: Mapping[tuple[str, str, str, str], str] | None = None
                   ) -> pd.DataFrame:
    """Benchmark results as text cells "mean ± std" (over seeds): rows (task, protocol), columns encoders.
    `marks[(task, protocol, method, pretrain_dataset)]` is appended to its cell (e.g. "≈ random")."""
    keys = ["task", "protocol", "method", "pretrain_dataset"]
    stats = results.groupby(keys, sort=False)["value"].agg(["mean", "std"]).reset_index()
    marks = marks or {}
    stats["cell"] = [(f"{m:.1f}" if pd.isna(s) else f"{m:.1f} ± {s:.1f}") + (f" {marks[k]}" if k in marks else "")
                     for m, s, k in zip(stats["mean"], stats["std"], stats[keys].itertuples(index=False, name=None))]
    stats["encoder"] = stats["method"] + " · " + stats["pretrain_dataset"]
    table = stats.pivot(index=["task", "protocol"], columns="encoder", values="cell")
    table = table.reindex(index=list(dict.fromkeys(zip(stats["task"], stats["protocol"]))),
                          columns=list(dict.fromkeys(stats["encoder"])))
    table.index.names = ["task", "protocol"]
    return table


def benchmark_table(results: pd.DataFrame, title: str | None = None) -> Table:
    """A rich table of a benchmark's results (see `mean_std_table`; invariance probes are left to the report),
    its longer axis down the rows."""
    table = Table(title=title)
    if "kind" in results:
        results = results[results["kind"].fillna("") != "invariance"]
    if results.empty:
        return table
    cells = mean_std_table(results)
    cells.index = [f"{task} · {protocol}" for task, protocol in cells.index]
    corner = "task · protocol"
    if len(cells.columns) > len(cells.index):
        cells, corner = cells.T, "encoder"
    table.add_column(corner)
    for column in cells.columns:
        table.add_column(str(column), justify="right")
    for label, row in cells.iterrows():
        table.add_row(str(label), *[v if isinstance(v, str) else "" for v in row])
    return table


def frame_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    """A rich table of a DataFrame's rows as they are."""
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), justify="right" if pd.api.types.is_numeric_dtype(frame[column]) else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(str(value) for value in row))
    return table
