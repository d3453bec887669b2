"""`augbench report DIR`: one self-contained HTML file and a Markdown version of a benchmark's results.

The HTML embeds every figure as a base64 PNG data URI and its styles inline,
so the one file can be mailed or archived; the Markdown links the same
figures written next to it (`<name>_files/`). Sections: the grid and its
wall time, every result against the random encoder of its architecture
(marked "≈ random" where it does not beat it, a warning per task where no
encoder does), results (mean ± std over seeds), ranks, category summary,
correlations with the reference task (table and scatter), the task × task
correlation heatmap, switch effects with confidence intervals, the
pretraining datasets' effects (when `dataset_comparisons` names pairs), invariance
probes per method and depth (when the suite ran them), and the protocol and
budget statement.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from augbench.analysis import plots, stats
from augbench.analysis.store import ResultsStore, is_random_label, is_server_url
from augbench.analysis.tables import mean_std_table
from augbench.errors import DataError

INVARIANCE_KIND = "invariance"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
p.note { color: #555; font-size: 0.9em; }
"""


@dataclass
class Section:
    title: str
    parts: list[tuple[str, object]] = field(default_factory=list)  # ("table", DataFrame) | ("figure", (name, png))
                                                                    # | ("text", str) | ("list", [str])


def build_sections(directory: str | Path) -> tuple[dict, list[Section]]:
    """Read a benchmark's store and compute every section of its report."""
    with ResultsStore(directory, read_only=True) as store:
        results, cells, runs, meta = store.results(), store.table("cells"), store.table("runs"), store.meta()
    config = OmegaConf.to_container(OmegaConf.create(meta.get("config", "{}")))
    reference, protocol = config.get("reference_task", "shape"), config.get("protocol", "linear")
    methods = list(config.get("methods", {})) or list(dict.fromkeys(cells["method"]))
    comparisons = config.get("comparisons") or stats.default_comparisons(methods)
    kinds = results["kind"].fillna("")
    scores, probes = results[kinds != INVARIANCE_KIND], results[kinds == INVARIANCE_KIND]
    sections = [_grid_section(cells, meta)]
    if scores.empty:
        sections.append(Section("Results", [("text", "No evaluation has finished yet.")]))
        return meta, sections
    baseline_of = stats.baseline_labels(scores, json.loads(meta.get("baselines") or "{}"))
    versus = stats.versus_random(scores, baseline_of)
    at_random = stats.tasks_at_random(versus)
    sections.append(_random_section(versus, at_random, bool(baseline_of)))
    marks = {(r.task, r.protocol, r.method, r.pretrain_dataset): stats.AT_RANDOM
             for r in versus.itertuples() if r.at_random}
    sections.append(Section("Results (mean ± std over pretraining seeds)", [
        ("text", f"'{stats.AT_RANDOM}': the result does not beat the randomly initialised encoder of its architecture "
                 "(previous section)."),
        ("table", mean_std_table(scores, marks))]))
    # The random encoders are the baseline, not contestants: ranks, correlations and effects read the trained ones.
    main = scores[~scores["method"].map(is_random_label)]
    if main.empty:
        return meta, sections
    unread = {task for task, chosen in _chosen_protocols(main, protocol).items() if (task, chosen) in at_random}
    matrix = stats.encoder_matrix(main, protocol)
    ranks = stats.rank_table(main, protocol)
    sections.append(Section(f"Ranks per task ({protocol} where a task has it; 1 = best)", [("table", ranks)]))
    sections.append(Section("Category summary (mean rank over each category's tasks; 1 = best)",
                            [("table", stats.category_summary(main, protocol))]))
    correlation_parts: list[tuple[str, object]] = []
    if reference in matrix.columns:
        correlations = stats.reference_correlations(matrix, reference)
        correlations["flag"] = [_random_flag(reference, task, unread) for task in correlations["task"]]
        correlation_parts += [
            ("text", f"Each task against the reference task '{reference}' across {len(matrix)} encoders "
                     "(method × pretraining dataset, seed means). NaN: fewer than 3 encoders or a constant task."),
            ("table", correlations.set_index("task")),
            ("table", stats.category_correlations(correlations, main)),
            ("figure", ("reference_scatter", plots.reference_scatter(matrix, reference, correlations))),
        ]
    else:
        correlation_parts.append(("text", f"The reference task '{reference}' has no results."))
    sections.append(Section(f"Correlation with the reference task '{reference}'", correlation_parts))
    task_matrix = stats.task_correlations(matrix)
    heatmap_parts: list[tuple[str, object]] = [
        ("figure", ("task_correlations", plots.heatmap(task_matrix, "Spearman ρ across encoders"))),
        ("table", task_matrix)]
    if unread & set(task_matrix.columns):
        heatmap_parts.insert(0, ("text", f"Flagged: {', '.join(sorted(unread & set(task_matrix.columns)))} "
                                         "(no encoder beats the random encoder there): their correlations rank noise."))
    sections.append(Section("Task × task Spearman correlation", heatmap_parts))
    configs = stats.run_configs(runs)
    effects = stats.switch_effects(main, comparisons, configs, protocol)
    effect_parts: list[tuple[str, object]] = [(
        "text", "Paired difference variant − baseline over matched (pretraining dataset, seed, task) cells; "
                "95 % Student-t and percentile-bootstrap intervals (NaN below 2 pairs).")]
    effect_parts.append(("table", effects.set_index(["baseline", "variant", "task"]) if not effects.empty
                         else pd.DataFrame({"note": ["no comparable method pairs"]})))
    if main["pretrain_dataset"].nunique() > 1 and not effects.empty:
        by_dataset = stats.switch_effects_by_dataset(main, comparisons, protocol)
        effect_parts += [("text", "The same over all tasks scored in percent, per pretraining dataset: whether a "
                                  "switch's effect depends on the data."),
                         ("table", by_dataset.set_index(["baseline", "variant", "pretrain_dataset"]))]
    sections.append(Section("Effect of each design-space switch", effect_parts))
    if config.get("dataset_comparisons"):
        sections.append(_dataset_section(main, config["dataset_comparisons"], protocol))
    if not probes.empty:
        sections.append(_probe_section(probes))
    sections.append(Section("Protocols and budgets", [("list", stats.protocol_statement(main, runs))]))
    return meta, sections


def _random_section(versus: pd.DataFrame, at_random: list[tuple[str, str]], has_baseline: bool) -> Section:
    if not has_baseline:
        return Section("Against the random encoder", [(
            "text", "This store holds no randomly initialised encoder (a grid run with random_baseline: false, or "
                    "by an augbench before it evaluated one per grid): no result here is tested against chance.")])
    parts: list[tuple[str, object]] = [("text", (
        "Each result against the randomly initialised encoder of the same architecture, evaluated with the same "
        "suite and seeds: gain = mean − random mean over seeds (positive = better, a lower-is-better metric's sign "
        "flipped) with Welch's 95 % interval. A result whose interval includes or lies below 0 is marked "
        f"'{stats.AT_RANDOM}'; with one seed on either side there is no interval, and a result is marked when its "
        "gain is not positive."))]
    if at_random:
        parts.append(("list", [f"warning: on {task} ({protocol}) no encoder beats the random encoder: its ranks and "
                               "correlations measure noise" for task, protocol in at_random]))
    table = versus.assign(at_random=versus["at_random"].map({True: stats.AT_RANDOM, False: ""}))
    parts.append(("table", table.set_index(["task", "protocol", "method", "pretrain_dataset"])))
    return Section("Against the random encoder", parts)


def _chosen_protocols(main: pd.DataFrame, protocol: str) -> dict[str, str]:
    """The protocol the analyses read for each task (`stats.select_protocol`'s choice)."""
    chosen = stats.select_protocol(main, protocol)
    return dict(chosen.groupby("task", sort=False)["protocol"].first())


def _random_flag(reference: str, task: str, unread: set[str]) -> str:
    flags = [f"{name} at random" for name in (reference, task) if name in unread]
    return "; ".join(dict.fromkeys(flags))


def _dataset_section(main: pd.DataFrame, comparisons: list[list[str]], protocol: str) -> Section:
    effects = stats.dataset_effects(main, comparisons, protocol)
    return Section("Effect of the pretraining data", [
        ("text", "Paired difference variant − baseline pretraining dataset over matched (method, seed, task) "
                 "cells, 95 % Student-t and percentile-bootstrap intervals, and ViRB's one-way ANOVA of each "
                 "task's scores grouped by dataset (F, p)."),
        ("table", effects.set_index(["baseline", "variant", "task"]) if not effects.empty
         else pd.DataFrame({"note": ["no comparable dataset pairs"]}))])


def _grid_section(cells: pd.DataFrame, meta: dict) -> Section:
    finished = cells[cells["state"] == "finished"]
    span = (finished["finished"].max() - cells["started"].min()) if not finished.empty else float("nan")
    grid = cells[["method", "dataset", "seed", "suite", "state", "attempts", "seconds"]].copy()
    summary = (f"{len(finished)} of {len(cells)} cells finished; cell time {finished['seconds'].sum():.0f} s, "
               f"first start to last finish {span:.0f} s. Benchmark {meta.get('benchmark')} from "
               f"{meta.get('source')} (small: {meta.get('small')}).")
    return Section("Grid", [("text", summary), ("table", grid.set_index(["method", "dataset", "seed", "suite"]))])


def _probe_section(probes: pd.DataFrame) -> Section:
    probes = probes.copy()
    details = probes["details"].map(lambda d: json.loads(d) if isinstance(d, str) and d else {})
    probes["augmentation"] = details.map(lambda d: d.get("augmentation")).fillna(probes["task"])
    probes["stage"] = details.map(lambda d: d.get("stage")).fillna(probes["protocol"])
    parts: list[tuple[str, object]] = [("text", "cosine: mean cosine similarity of an image's and its augmented "
                                                "copy's features (1 = invariant); the predictability metrics say "
                                                "how well a linear probe reads the augmentation's parameter back.")]
    for metric in dict.fromkeys(probes["metric"]):
        parts.append(("figure", (f"probe_{metric}", plots.probe_lines(probes, metric))))
    table = probes.pivot_table(index=["augmentation", "metric", "stage"], columns="method", values="value",
                               aggfunc="mean", sort=False)
    parts.append(("table", table))
    return Section("Invariance probes per method and depth", parts)


def _format(value) -> str:
    if isinstance(value, float):
        return "–" if pd.isna(value) else f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def _html_table(table: pd.DataFrame) -> str:
    return table.to_html(border=0, na_rep="–", float_format=_format, escape=True)


def render_html(meta: dict, sections: list[Section]) -> str:
    title = f"augbench report: {meta.get('benchmark', 'benchmark')}"
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class='note'>written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        for kind, content in section.parts:
            if kind == "table":
                body.append(_html_table(content))
            elif kind == "figure":
                name, png = content
                data = base64.b64encode(png).decode("ascii")
                body.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
            elif kind == "list":
                body.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in content) + "</ul>")
            else:
                body.append(f"<p>{html.escape(str(content))}</p>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _markdown_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "(empty)"
    flat = table.reset_index() if table.index.nlevels > 1 or table.index.name else table
    return flat.map(_format).to_markdown(index=flat is table)


def render_markdown(meta: dict, sections: list[Section], figures_dir: Path, relative_to: Path) -> str:
    lines = [f"# augbench report: {meta.get('benchmark', 'benchmark')}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for kind, content in section.parts:
            if kind == "table":
                lines += [_markdown_table(content), ""]
            elif kind == "figure":
                name, png = content
                figures_dir.mkdir(parents=True, exist_ok=True)
                (figures_dir / f"{name}.png").write_bytes(png)
                lines += [f"![{name}]({(figures_dir / f'{name}.png').relative_to(relative_to).as_posix()})", ""]
            elif kind == "list":
                lines += [f"- {line}" for line in content] + [""]
            else:
                lines += [str(content), ""]
    return "\n".join(lines)


def write_report(directory: str | Path, output: str | Path | None = None) -> tuple[Path, Path]:
    """Write `report.html` (self-contained) and `report.md` (figures in `report_files/`); return both paths."""
    if is_server_url(directory) and not output:
        raise DataError(f"{directory}: a store on a server has no directory to write the report into; "
                        "give --output FILE.html")
    html_path = Path(output) if output else Path(directory) / "report.html"
    markdown_path = html_path.with_suffix(".md")
    meta, sections = build_sections(directory)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(meta, sections))
    figures = html_path.parent / f"{html_path.stem}_files"
    markdown_path.write_text(render_markdown(meta, sections, figures, html_path.parent))
    return html_path, markdown_path
