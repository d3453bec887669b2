"""`augbench findings CLAIMS`: the seed papers' claims measured on the results stores, with verdicts.

A claims file (configs/findings.yaml) lists claims. Each names the paper's
one-line statement and where the paper shows it (`source`), the benchmark grid
whose store holds the cells (`grid`), the `protocols` read side by side
(default kNN and linear) and the one whose verdict counts (`verdict_protocol`),
and its comparisons (`rows`). A row compares two sides:

    baseline: {methods: [moco_v2_plus], datasets: [shapes_photo]}
    variant:  {methods: [byol], datasets: [shapes_photo]}
    tasks: [shape]            # or categories: [structural_image]; several are pooled
    against_tasks: [...]      # optional: the difference on `tasks` minus that on these
    expect: greater           # greater | less | equal | not_less | (absent: measured, no verdict)
    margin: 1.0               # for equal and not_less, in the metric's units

A side's value for one pretraining seed is the mean over its encoders
(methods × datasets); over several tasks it is the mean over the tasks scored
in percent (higher is better), as the report pools them. The difference is
variant − baseline, raw (a claim about an error or an invariance cosine says
`less` where the variant should be lower), paired by seed: only seeds that
both sides have count. Its 95 % interval is Student's t over the seeds'
differences (`stats.paired_interval`).

A `kind: correlation` claim measures ViRB's question instead: per seed, the
Spearman correlation across the grid's trained encoders between `reference`
and each other task, averaged over the tasks of `high_categories` and of
`low_categories`; its row's difference is high − low, paired by seed.

Verdicts (VERDICT_RULE states them on the page) need 3 seeds; a row with
fewer says so and gets none. Every side whose encoder does not beat the random
encoder of its architecture on a task of the row (`stats.versus_random`) is
marked "≈ random"; a row whose two sides are both at random on every task is
inconclusive whatever its interval.

Reads the stores only: nothing is trained or evaluated here.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from augbench.analysis import stats
from augbench.analysis.store import ResultsStore, database_path, is_random_label, is_server_url, shown_location
from augbench.errors import ConfigError

EXPECTATIONS = ("greater", "less", "equal", "not_less")
KINDS = ("difference", "correlation")
MIN_SEEDS = 3
REPRODUCED, REFUTED, INCONCLUSIVE = "reproduced", "refuted", "inconclusive"
INVARIANCE_KIND = "invariance"

VERDICT_RULE = (
    "A verdict needs at least 3 pretraining seeds on both sides; rows with fewer show their numbers and no verdict. "
    "With I = [low, high] the 95 % Student-t interval of the mean paired difference variant − baseline (paired by "
    "seed) and m the row's margin: `greater` is reproduced when low > 0 and refuted when high ≤ 0; `less` is "
    "reproduced when high < 0 and refuted when low ≥ 0; `equal` is reproduced when I lies within [−m, m] and "
    "refuted when it lies wholly outside it (low > m or high < −m); `not_less` (≥) is reproduced when low ≥ −m and "
    "refuted when high < −m. Anything else is inconclusive at this scale, and so is a row whose two sides both sit "
    "level with the random encoder (Welch's 95 % interval of the gain includes 0) on every task it reads; a side "
    "measurably below it has lost what the untrained network's features hold, which a claim about keeping "
    "information reads. A claim is reproduced when all its rows with an expectation are, refuted when one of them "
    "is, inconclusive otherwise."
)


@dataclass
class Side:
    methods: list[str]
    datasets: list[str]

    def encoders(self) -> list[tuple[str, str]]:
        return [(m, d) for m in self.methods for d in self.datasets]

    def describe(self) -> str:
        return f"{'/'.join(self.methods)} · {'/'.join(self.datasets)}"


@dataclass
class Row:
    label: str
    baseline: Side | None = None
    variant: Side | None = None
    tasks: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    against_tasks: list[str] = field(default_factory=list)
    against_categories: list[str] = field(default_factory=list)
    expect: str | None = None
    margin: float = 1.0


@dataclass
class Claim:
    id: str
    paper: str
    statement: str
    source: str
    grid: str
    rows: list[Row]
    kind: str = "difference"
    protocols: list[str] = field(default_factory=lambda: ["knn", "linear"])
    verdict_protocol: str = "linear"
    reference: str = "shape"
    high_categories: list[str] = field(default_factory=list)
    low_categories: list[str] = field(default_factory=list)
    note: str = ""


def load_claims(path: str | Path) -> list[Claim]:
    """The claims of a findings file; a bad key or value is a ConfigError naming the file and the claim."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no claims file here")
    values = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(values, dict) or not isinstance(values.get("claims"), list):
        raise ConfigError(f"{path}: expected a mapping with a `claims:` list")
    claims, seen = [], set()
    for index, entry in enumerate(values["claims"]):
        where = f"{path}: claims[{index}]" + (f" ({entry.get('id')})" if isinstance(entry, dict) else "")
        try:
            claim = _claim(entry)
        except (TypeError, ValueError, KeyError) as error:
            raise ConfigError(f"{where}: {error}") from None
        if claim.id in seen:
            raise ConfigError(f"{where}: id {claim.id!r} appears twice")
        seen.add(claim.id)
        claims.append(claim)
    return claims


def _claim(entry: Any) -> Claim:
    if not isinstance(entry, dict):
        raise ValueError("expected a mapping")
    entry = dict(entry)
    rows = [_row(row, entry.get("defaults", {})) for row in entry.pop("rows", [])]
    entry.pop("defaults", None)
    claim = Claim(rows=rows, **entry)
    if claim.kind not in KINDS:
        raise ValueError(f"kind={claim.kind!r}: expected one of {KINDS}")
    if claim.verdict_protocol not in claim.protocols:
        raise ValueError(f"verdict_protocol={claim.verdict_protocol!r} is not one of protocols {claim.protocols}")
    if claim.kind == "difference" and not rows:
        raise ValueError("rows: a difference claim needs at least one row")
    if claim.kind == "correlation" and not (claim.high_categories and claim.low_categories):
        raise ValueError("a correlation claim needs high_categories and low_categories")
    return claim


def _row(entry: dict, defaults: dict) -> Row:
    entry = {**defaults, **entry}
    for key in ("baseline", "variant"):
        side = entry.get(key)
        if not isinstance(side, dict) or not side.get("methods") or not side.get("datasets"):
            raise ValueError(f"rows.{key}: expected {{methods: [...], datasets: [...]}}, got {side!r}")
        entry[key] = Side(list(side["methods"]), list(side["datasets"]))
    row = Row(**entry)
    if row.expect is not None and row.expect not in EXPECTATIONS:
        raise ValueError(f"rows.expect={row.expect!r}: expected one of {EXPECTATIONS} or none")
    if not (row.tasks or row.categories):
        raise ValueError(f"rows ({row.label}): name tasks or categories")
    return row


# --- measuring ---------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """One row of a claim under one protocol."""

    seeds: int = 0
    baseline: str = "–"
    variant: str = "–"
    difference: float = math.nan
    low: float = math.nan
    high: float = math.nan
    verdict: str = "—"
    note: str = ""


def verdict(expect: str | None, seeds: int, low: float, high: float, margin: float) -> str:
    """The verdict of VERDICT_RULE for one row (without the random-encoder clause)."""
    if expect is None:
        return "measured (no claim)"
    if seeds < MIN_SEEDS:
        return f"no verdict ({seeds} seed{'s' if seeds != 1 else ''})"
    if math.isnan(low):
        return INCONCLUSIVE
    if expect == "greater":
        return REPRODUCED if low > 0 else REFUTED if high <= 0 else INCONCLUSIVE
    if expect == "less":
        return REPRODUCED if high < 0 else REFUTED if low >= 0 else INCONCLUSIVE
    if expect == "equal":
        return REPRODUCED if -margin <= low and high <= margin else (
            REFUTED if low > margin or high < -margin else INCONCLUSIVE)
    return REPRODUCED if low >= -margin else REFUTED if high < -margin else INCONCLUSIVE


def claim_verdict(verdicts: list[str]) -> str:
    """A claim's verdict from its rows' (VERDICT_RULE): rows without an expectation do not count."""
    expected = [v for v in verdicts if not v.startswith("measured")]
    if not expected:
        return "measured (no claim)"
    if REFUTED in expected:
        return REFUTED
    unjudged = [v for v in expected if v.startswith(("no verdict", "not in"))]
    if unjudged:
        return unjudged[0]
    return expected[0] if len(set(expected)) == 1 else INCONCLUSIVE


def _tasks(results: pd.DataFrame, tasks: list[str], categories: list[str]) -> list[str]:
    by_category = results.groupby("task", sort=False)["category"].first()
    chosen = list(tasks) + [t for t, c in by_category.items() if c in categories and t not in tasks]
    return chosen


# The pixel-wise tasks' one readout (a dense head over stage features): each column of a claim, kNN or linear,
# reads their results alike, so a row pooling a category holds its pixel-wise tasks under either protocol.
PIXEL_PROTOCOL = "dense"


def _under(frame: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The results a claim's `protocol` column reads: that protocol's, and the pixel-wise tasks' dense heads'."""
    return frame[frame["protocol"].isin({protocol, PIXEL_PROTOCOL})]


def _of_side(rows: pd.DataFrame, side: Side) -> pd.Series:
    encoders = set(side.encoders())
    return pd.Series([(m, d) in encoders for m, d in zip(rows["method"], rows["pretrain_dataset"])], index=rows.index,
                     dtype=bool)  # a mask even when empty: an empty object Series would select columns


def _side_values(rows: pd.DataFrame, side: Side, tasks: list[str]) -> tuple[pd.Series, list[str]]:
    """Per seed, the side's value: the mean over its encoders of each task, then over the tasks (pooled: those in
    percent only); the encoders the store lacks."""
    encoders = side.encoders()
    present = set(zip(rows["method"], rows["pretrain_dataset"]))
    missing = [f"{m} · {d}" for m, d in encoders if (m, d) not in present]
    mine = rows[_of_side(rows, side)]
    mine = mine[mine["task"].isin(tasks)]
    first_metric = mine.groupby("task", sort=False)["metric"].first()  # a task's headline metric, as the report's
    mine = mine[mine["metric"] == mine["task"].map(first_metric)]
    if len(tasks) > 1:
        mine = mine[mine["metric"].isin(stats.PERCENT_METRICS)]
    if mine.empty or missing:
        return pd.Series(dtype=float), missing
    # A seed counts when every encoder of the side has every task there.
    per_cell = mine.groupby(["seed", "task", "method", "pretrain_dataset"])["value"].mean()
    complete = per_cell.groupby("seed").size() == len(encoders) * mine["task"].nunique()
    per_cell = per_cell[per_cell.index.get_level_values("seed").isin(complete[complete].index)]
    return per_cell.groupby(["seed", "task"]).mean().groupby("seed").mean(), missing


@dataclass
class RandomMarks:
    """Of a side's tested (encoder, task) results: how many do not beat the random encoder, and how many of those
    lie measurably below it (Welch's interval of the gain wholly below 0: training erased what the untrained
    network's features hold)."""

    at_random: int = 0
    below: int = 0
    tested: int = 0

    @property
    def all_level(self) -> bool:
        """Every result level with the random encoder: neither above it nor measurably below it."""
        return bool(self.tested) and self.at_random == self.tested and not self.below


def _random_marks(versus: pd.DataFrame, side: Side, tasks: list[str], protocol: str) -> RandomMarks:
    if versus.empty:
        return RandomMarks()
    rows = _under(versus, protocol)
    rows = rows[rows["task"].isin(tasks) & _of_side(rows, side)]
    return RandomMarks(int(rows["at_random"].sum()), int((rows["high"] < 0).sum()), len(rows))


def _mean_std(values: pd.Series) -> str:
    if values.empty:
        return "–"
    return f"{values.mean():.2f}" + (f" ± {values.std(ddof=1):.2f}" if len(values) > 1 else "")


BELOW_RANDOM = "< random"
RANDOM_MARKS = (f"'{stats.AT_RANDOM}' marks a side one of whose results does not beat the randomly initialised "
                "encoder of its architecture (Welch's 95 % interval of the gain includes or lies below 0; `augbench "
                f"report` shows every such test); '{BELOW_RANDOM}' where each of those lies measurably below it.")


def _mark(marks: RandomMarks) -> str:
    """'< random' where every result not above the random encoder lies measurably below it, else '≈ random'."""
    if not marks.at_random:
        return ""
    mark = BELOW_RANDOM if marks.below == marks.at_random else stats.AT_RANDOM
    return f" {mark}" + (f" ({marks.at_random} of {marks.tested})" if marks.tested > 1 else "")


def measure_difference(row: Row, results: pd.DataFrame, versus: pd.DataFrame, protocol: str) -> Measured:
    rows = _under(results, protocol)
    tasks = _tasks(rows, row.tasks, row.categories)
    if not tasks:
        return Measured(verdict="not in the store", note=f"no task of {row.tasks or row.categories} under {protocol}")
    baseline, missing_b = _side_values(rows, row.baseline, tasks)
    variant, missing_v = _side_values(rows, row.variant, tasks)
    missing = missing_b + [m for m in missing_v if m not in missing_b]
    if missing:
        return Measured(verdict="not in the store", note=f"no cells of {', '.join(missing)}")
    seeds = baseline.index.intersection(variant.index)
    differences = variant[seeds] - baseline[seeds]
    against = ""
    if row.against_tasks or row.against_categories:
        other = _tasks(rows, row.against_tasks, row.against_categories)
        other_b, _ = _side_values(rows, row.baseline, other)
        other_v, _ = _side_values(rows, row.variant, other)
        seeds = seeds.intersection(other_b.index).intersection(other_v.index)
        differences = differences[seeds] - (other_v[seeds] - other_b[seeds])
        against = f"; minus the same difference on {', '.join(other)}"
    low, high = stats.paired_interval(differences.to_numpy())
    marks_b = _random_marks(versus, row.baseline, tasks, protocol)
    marks_v = _random_marks(versus, row.variant, tasks, protocol)
    result = verdict(row.expect, len(seeds), low, high, row.margin)
    if marks_b.all_level and marks_v.all_level and result in (REPRODUCED, REFUTED):
        result = f"{INCONCLUSIVE} (both sides at random)"
    return Measured(len(seeds), _mean_std(baseline[seeds]) + _mark(marks_b), _mean_std(variant[seeds]) + _mark(marks_v),
                    float(differences.mean()) if len(seeds) else math.nan, low, high, result,
                    f"tasks: {', '.join(tasks)}{against}")


def measure_correlation(claim: Claim, row: Row, results: pd.DataFrame, versus: pd.DataFrame,
                        protocol: str) -> Measured:
    rows = _under(results, protocol)
    rows = rows[~rows["method"].map(is_random_label)]
    categories = rows.groupby("task", sort=False)["category"].first()
    if claim.reference not in categories:
        return Measured(verdict="not in the store", note=f"no results of the reference task {claim.reference!r}")
    high = [t for t, c in categories.items() if c in claim.high_categories and t != claim.reference]
    low = [t for t, c in categories.items() if c in claim.low_categories and t != claim.reference]
    per_seed = {}
    for seed, group in rows.groupby("seed"):
        matrix = stats.encoder_matrix(group, None)
        if claim.reference not in matrix:
            continue
        rho = stats.reference_correlations(matrix, claim.reference).set_index("task")["spearman"]
        per_seed[seed] = (rho.reindex(high).mean(), rho.reindex(low).mean())
    frame = pd.DataFrame(per_seed, index=["high", "low"]).T.dropna()
    differences = (frame["high"] - frame["low"]).to_numpy()
    low_ci, high_ci = stats.paired_interval(differences)
    at_random = set(stats.tasks_at_random(_under(versus, protocol))) if not versus.empty else set()
    flagged = sorted(t for t, p in at_random if t in (claim.reference, *high, *low))
    result = verdict(row.expect, len(frame), low_ci, high_ci, row.margin)
    note = f"ρ with {claim.reference}: high = mean over {', '.join(high) or '–'}; low = over {', '.join(low) or '–'}"
    if flagged:
        note += f"; flagged, no encoder beats the random encoder on: {', '.join(flagged)}"
        if claim.reference in flagged and result in (REPRODUCED, REFUTED):
            result = f"{INCONCLUSIVE} (reference task at random)"
    return Measured(len(frame), _mean_std(frame["low"]), _mean_std(frame["high"]),
                    float(differences.mean()) if len(differences) else math.nan, low_ci, high_ci, result, note)


# --- the page -----------------------------------------------------------------------------------------------------


@dataclass
class StoreInfo:
    grid: str
    location: str
    command: str
    cells: int = 0
    finished: int = 0
    cell_seconds: float = 0.0
    span_seconds: float = math.nan
    devices: str = ""
    scale: str = ""


@dataclass
class ClaimResult:
    claim: Claim
    store: StoreInfo | None
    rows: list[tuple[Row, dict[str, Measured]]]
    verdicts: dict[str, str]


def _cpu(environment: dict) -> str:
    threads = environment.get("cpus")
    cores = f" of {environment['cores']} cores" if environment.get("cores") else ""
    return f"CPU ({threads} thread{'' if threads == 1 else 's'} per runner{cores})"


def _scale(stored_config: str | None) -> str:
    """The pretraining scale of a grid as its store recorded it: what a reader weighs a verdict by."""
    if not stored_config:
        return ""
    config = OmegaConf.to_container(OmegaConf.create(stored_config))
    if not {"pretrain", "datasets", "suites"} <= set(config):
        return ""
    model, trainer = config["pretrain"].get("model", {}), config["pretrain"].get("trainer", {})
    sizes = ", ".join(f"{name} {data['train_size']:,}" if "train_size" in data else name
                      for name, data in config["datasets"].items())
    return (f"{model.get('name', 'the default backbone')} × {model.get('width', 1.0)} for "
            f"{trainer.get('max_epochs', '?')} epochs of batch {trainer.get('batch_size', '?')} on {sizes} "
            f"training images (before subsets), suites {', '.join(config['suites'])}")


def _store_info(grid: str, location: str | Path, seeds: list[int]) -> tuple[StoreInfo, pd.DataFrame, dict]:
    """The store's cost and regenerating command, its results, and each method's random-encoder label."""
    with ResultsStore(location, read_only=True) as store:
        results, cells, runs, meta = store.results(), store.table("cells"), store.table("runs"), store.meta()
    small = " --small" if meta.get("small") == "True" else ""
    source = meta.get("source") or f"configs/benchmarks/{grid}.yaml"
    command = f"augbench benchmark {source}{small} 'seeds=[{','.join(map(str, seeds))}]'"
    finished = cells[cells["state"] == "finished"]
    span = float(finished["finished"].max() - cells["started"].min()) if not finished.empty else math.nan
    environments = [json.loads(e) for e in runs["environment"] if isinstance(e, str) and e.startswith("{")]
    devices = sorted({e.get("cuda") or _cpu(e) for e in environments if e})
    info = StoreInfo(grid, shown_location(location), command, len(cells), len(finished),
                     float(finished["seconds"].sum()), span, ", ".join(devices), _scale(meta.get("config")))
    return info, results, json.loads(meta.get("baselines") or "{}")


def build_findings(claims: list[Claim], stores: dict[str, str | Path], seeds: list[int] = (0, 1, 2)
                   ) -> tuple[list[ClaimResult], list[StoreInfo]]:
    """Measure every claim on the store of its grid (`stores[grid]`); a grid without a store is reported so."""
    loaded: dict[str, tuple[StoreInfo, pd.DataFrame, pd.DataFrame]] = {}
    for grid in dict.fromkeys(c.grid for c in claims):
        location = stores.get(grid)
        if location is None or not (is_server_url(location) or database_path(location).is_file()):
            continue
        info, results, stored_baselines = _store_info(grid, location, list(seeds))
        scores = results[results["kind"].fillna("") != INVARIANCE_KIND]
        baseline_of = stats.baseline_labels(scores, stored_baselines)
        # The probes too: a claim may read an invariance cosine; the random encoder's probes are its baseline.
        versus = stats.versus_random(results, baseline_of)
        loaded[grid] = (info, results, versus)
    out = []
    for claim in claims:
        if claim.grid not in loaded:
            missing = {p: Measured(verdict="not in the store", note=f"no results store for grid {claim.grid}")
                       for p in claim.protocols}
            rows = [(row, missing) for row in claim.rows] or [(Row("correlation"), missing)]
            out.append(ClaimResult(claim, None, rows, dict.fromkeys(claim.protocols, "not in the store")))
            continue
        info, results, versus = loaded[claim.grid]
        measured_rows = []
        claim_rows = claim.rows or [Row("ρ(reference, high) − ρ(reference, low)", expect="greater")]
        for row in claim_rows:
            by_protocol = {}
            for protocol in claim.protocols:
                if claim.kind == "correlation":
                    by_protocol[protocol] = measure_correlation(claim, row, results, versus, protocol)
                else:
                    by_protocol[protocol] = measure_difference(row, results, versus, protocol)
            measured_rows.append((row, by_protocol))
        # Rows without an expectation inform; they decide nothing, not even when their cells are missing.
        verdicts = {p: claim_verdict([m[p].verdict for row, m in measured_rows if row.expect is not None])
                    for p in claim.protocols}
        out.append(ClaimResult(claim, info, measured_rows, verdicts))
    return out, [info for info, _, _ in loaded.values()]


def _interval(measured: Measured) -> str:
    if math.isnan(measured.difference):
        return "–"
    if math.isnan(measured.low):
        return f"{measured.difference:+.2f}"
    return f"{measured.difference:+.2f} [{measured.low:+.2f}, {measured.high:+.2f}]"


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "–"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _row_table(result: ClaimResult) -> pd.DataFrame:
    records = []
    for row, by_protocol in result.rows:
        record = {"comparison": row.label,
                  "expect": row.expect + (f" (±{row.margin:g})" if row.expect in ("equal", "not_less") else "")
                  if row.expect else "—"}
        first = next(iter(by_protocol.values()))
        record["seeds"] = first.seeds
        for protocol, measured in by_protocol.items():
            record[f"{protocol}: baseline"] = measured.baseline
            record[f"{protocol}: variant"] = measured.variant
            record[f"{protocol}: Δ [95 % CI]"] = _interval(measured)
            record[f"{protocol}: verdict"] = measured.verdict
        records.append(record)
    return pd.DataFrame(records)


def _notes(result: ClaimResult) -> list[str]:
    lines = []
    for row, by_protocol in result.rows:
        sides = (f"baseline {row.baseline.describe()}, variant {row.variant.describe()}; "
                 if row.baseline and row.variant else "")
        notes = dict.fromkeys(m.note for m in by_protocol.values() if m.note)
        lines.append(f"{row.label}: {sides}{'; '.join(notes)}")
    return lines


def _summary(results: list[ClaimResult]) -> pd.DataFrame:
    rows = []
    for result in results:
        claim = result.claim
        others = "; ".join(f"{p}: {v}" for p, v in result.verdicts.items() if p != claim.verdict_protocol)
        rows.append({"claim": claim.id, "paper": claim.paper, "statement": claim.statement,
                     "verdict": result.verdicts[claim.verdict_protocol], "read by": claim.verdict_protocol,
                     "other protocols": others or "—"})
    return pd.DataFrame(rows)


def _cost(stores: list[StoreInfo]) -> list[str]:
    lines = [f"{s.grid}: {s.finished} of {s.cells} cells finished, {_duration(s.cell_seconds)} of cell time "
             f"({_duration(s.span_seconds)} from first start to last finish) on {s.devices or 'an unrecorded device'};"
             f" store {s.location}; regenerate with `{s.command}`" for s in stores]
    lines += [f"{s.grid}'s scale: {s.scale}" for s in stores if s.scale]
    total = sum(s.cell_seconds for s in stores)
    lines.append(f"all grids: {_duration(total)} of cell time")
    if all("CPU" in s.devices for s in stores if s.devices):
        lines.append("on one GPU: not measured (no grid of this page ran on a GPU)")
    return lines


def render_markdown(results: list[ClaimResult], stores: list[StoreInfo], command: str) -> str:
    lines = ["# Findings: the seed papers' claims, measured", "",
             f"Generated by `{command}` from the results stores on {time.strftime('%Y-%m-%d')}; do not edit by "
             "hand. Each number is a mean over pretraining seeds (± their standard deviation); Δ is the mean paired "
             "difference variant − baseline with its 95 % interval.", "",
             "## Verdict rule", "", VERDICT_RULE, "",
             RANDOM_MARKS, "",
             "## Summary", "", _markdown(_summary(results)), "",
             "## What the page cost", ""]
    lines += [f"- {line}" for line in _cost(stores)] + [""]
    for result in results:
        claim = result.claim
        lines += [f"## {claim.id}", "", f"**{claim.paper}:** {claim.statement} ({claim.source})", ""]
        if claim.note:
            lines += [claim.note, ""]
        lines += [_markdown(_row_table(result)), ""]
        lines += [f"- {line}" for line in _notes(result)]
        where = (f"- cells: grid `{claim.grid}`, store {result.store.location}; regenerate: `{result.store.command}`"
                 if result.store else f"- cells: grid `{claim.grid}` has no store yet")
        lines += [where, ""]
    return "\n".join(lines)


def _markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, disable_numparse=True) if not table.empty else "(none)"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
"""


def render_html(results: list[ClaimResult], stores: list[StoreInfo], command: str) -> str:
    body = ["<h1>Findings: the seed papers' claims, measured</h1>",
            f"<p>Generated by <code>{html.escape(command)}</code> from the results stores on "
            f"{time.strftime('%Y-%m-%d')}. Δ is the mean paired difference variant − baseline with its 95 % "
            "interval.</p>",
            "<h2>Verdict rule</h2>", f"<p>{html.escape(VERDICT_RULE)}</p>",
            f"<p>{html.escape(RANDOM_MARKS)}</p>",
            "<h2>Summary</h2>", _summary(results).to_html(index=False, border=0),
            "<h2>What the page cost</h2>",
            "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in _cost(stores)) + "</ul>"]
    for result in results:
        claim = result.claim
        body += [f"<h2>{html.escape(claim.id)}</h2>",
                 f"<p><b>{html.escape(claim.paper)}:</b> {html.escape(claim.statement)} "
                 f"({html.escape(claim.source)})</p>"]
        if claim.note:
            body.append(f"<p>{html.escape(claim.note)}</p>")
        body.append(_row_table(result).to_html(index=False, border=0))
        where = (f"cells: grid {claim.grid}, store {result.store.location}; regenerate: {result.store.command}"
                 if result.store else f"cells: grid {claim.grid} has no store yet")
        body.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in [*_notes(result), where])
                    + "</ul>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>augbench findings</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_findings(claims_file: str | Path, stores: dict[str, str | Path], markdown: Path | None = None,
                   html_path: Path | None = None, seeds: list[int] = (0, 1, 2), command: str = "augbench findings"
                   ) -> list[ClaimResult]:
    """Measure the claims of `claims_file` on `stores` (grid → store) and write the Markdown and/or HTML page."""
    claims = load_claims(claims_file)
    results, infos = build_findings(claims, stores, seeds)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(render_markdown(results, infos, command) + "\n")
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(results, infos, command))
    return results


__all__ = ["VERDICT_RULE", "build_findings", "claim_verdict", "load_claims", "verdict", "write_findings"]
