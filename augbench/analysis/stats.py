"""The analyses of a benchmark's results, as DataFrames.

Input is the store's long table (`augbench.load_results`): one row per
(method, pretrain_dataset, seed, task, protocol, metric) with its `value`.
An *encoder* is one (method, pretrain_dataset) pair; its value on a task is
the mean over pretraining seeds. The analyses follow ViRB (Kotar et al.
2021) and the 'Critical Factors' study (Huang et al. 2022):

- `summarize`: per-task mean ± std over seeds (ddof=1; NaN with one seed);
- `rank_table`: rank of every encoder per task (1 = best, ties averaged);
- `reference_correlations`: Spearman and Pearson of each task against a
  reference task across encoders (ViRB's "ImageNet accuracy vs end task");
- `task_correlations`: the task × task Spearman matrix;
- `category_summary`: each encoder's mean rank over the tasks of each
  category (semantic/structural × image/pixel), and `category_correlations`:
  the mean correlation of a category's tasks with the reference task;
- `switch_effects`: paired differences between two methods over matched
  (dataset, seed, task) cells, with a Student-t and a bootstrap interval,
  labelled with the config keys in which the two methods differ, and
  `switch_effects_by_dataset` the same per pretraining dataset;
- `dataset_effects`: the same between two pretraining datasets over matched
  (method, seed, task) cells, with ViRB's one-way ANOVA per task;
- `versus_random`: each encoder's gain over the randomly initialised encoder
  of its architecture with Welch's interval, and `tasks_at_random` the tasks
  on which no encoder beats it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy import stats

from augbench.analysis.store import is_random_label
from augbench.config import changed_keys

ENCODER = ["method", "pretrain_dataset"]
NAN = float("nan")
LOWER_IS_BETTER = ("mae", "rmse", "mse", "error", "loss", "angular_error")
# Metrics in percent where higher is better: the tasks a pooled difference may average, in points. R², errors in
# degrees or pixels, and metrics where lower is better would mix units and directions into one number.
PERCENT_METRICS = frozenset({"top1", "mean_per_class", "miou", "iou"})
POOLED = "all tasks in %"


def _in_percent(paired: pd.DataFrame) -> pd.DataFrame:
    """The pairs of the tasks scored in PERCENT_METRICS, which a pooled difference may average."""
    return paired[paired["metric"].isin(PERCENT_METRICS)]


def _pooled(paired: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The pooled row's pairs; none when no task is scored in percent."""
    percent = _in_percent(paired)
    return [(POOLED, percent)] if not percent.empty else []


def higher_is_better(metric: str) -> bool:
    """The direction of a metric: from augbench's metric registry when it lists it, else by name."""
    from augbench.metrics import METRICS  # torch's import is paid only by the analyses that ask for a direction

    if metric in METRICS:
        return bool(METRICS[metric].higher_is_better)
    return not any(word in metric.lower() for word in LOWER_IS_BETTER)


def select_protocol(results: pd.DataFrame, protocol: str | None) -> pd.DataFrame:
    """Rows of one protocol per task: `protocol` where the task has it, else the task's first protocol."""
    if protocol is None or results.empty:
        return results
    chosen = []
    for _, rows in results.groupby("task", sort=False):
        chosen.append(rows[rows["protocol"] == protocol] if (rows["protocol"] == protocol).any()
                      else rows[rows["protocol"] == rows["protocol"].iloc[0]])
    return pd.concat(chosen) if chosen else results


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1) and number of seeds of every (encoder, task, protocol, metric)."""
    keys = [*ENCODER, "task", "category", "protocol", "metric"]
    summary = results.groupby(keys, sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    return summary.rename(columns={"count": "seeds"})


def encoder_matrix(results: pd.DataFrame, protocol: str | None = "linear") -> pd.DataFrame:
    """Encoders × tasks: the mean over seeds of the chosen protocol's first metric of each task."""
    rows = select_protocol(results, protocol)
    first_metric = rows.groupby("task", sort=False)["metric"].first()
    rows = rows[rows["metric"] == rows["task"].map(first_metric)]
    matrix = rows.pivot_table(index=ENCODER, columns="task", values="value", aggfunc="mean", sort=False)
    return matrix[list(dict.fromkeys(rows["task"]))]


def rank_table(results: pd.DataFrame, protocol: str | None = "linear") -> pd.DataFrame:
    """Rank of each encoder on each task (1 = best), and the mean rank.

    A metric's direction is the rows' `higher_is_better` where recorded, else `higher_is_better(metric)`.
    """
    rows = select_protocol(results, protocol)
    matrix = encoder_matrix(rows, None)
    better = task_directions(rows)
    ranks = pd.DataFrame({task: matrix[task].rank(method="average", ascending=not better[task])
                          for task in matrix.columns})
    ranks["mean rank"] = ranks.mean(axis=1)
    return ranks.sort_values("mean rank")


def task_directions(rows: pd.DataFrame) -> dict[str, bool]:
    """Per task, whether higher is better: the rows' `higher_is_better` where recorded, else by metric name."""
    first = rows.groupby("task", sort=False).first()
    recorded = first["higher_is_better"] if "higher_is_better" in first else pd.Series(dtype=object)
    return {task: bool(recorded[task]) if pd.notna(recorded.get(task)) else higher_is_better(first.loc[task, "metric"])
            for task in first.index}


def reference_correlations(matrix: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Spearman's rho and Pearson's r (with p-values) of every task against `reference`, across encoders."""
    if reference not in matrix.columns:
        raise KeyError(f"reference task {reference!r} is not among the results' tasks {list(matrix.columns)}")
    rows = []
    for task in matrix.columns:
        if task == reference:
            continue
        pair = matrix[[reference, task]].dropna()
        rho, rho_p = _correlation(stats.spearmanr, pair)
        r, r_p = _correlation(stats.pearsonr, pair)
        rows.append({"task": task, "encoders": len(pair), "spearman": rho, "spearman_p": rho_p,
                     "pearson": r, "pearson_p": r_p})
    return pd.DataFrame(rows, columns=["task", "encoders", "spearman", "spearman_p", "pearson", "pearson_p"])


def _correlation(function, pair: pd.DataFrame) -> tuple[float, float]:
    # Fewer than 3 encoders or a constant column has no defined correlation; NaN says so in the table.
    if len(pair) < 3 or pair.iloc[:, 0].nunique() < 2 or pair.iloc[:, 1].nunique() < 2:
        return NAN, NAN
    result = function(pair.iloc[:, 0], pair.iloc[:, 1])
    return float(result[0]), float(result[1])


def task_correlations(matrix: pd.DataFrame, method: str = "spearman") -> pd.DataFrame:
    """Task × task correlation across encoders (pandas' pairwise-complete `corr`)."""
    return matrix.corr(method=method, min_periods=3)


def category_summary(results: pd.DataFrame, protocol: str | None = "linear") -> pd.DataFrame:
    """Encoders × categories: the mean over each category's tasks of the encoder's rank (1 = best).

    Ranks, not values, are averaged because a category mixes metrics on
    different scales (accuracy in %, R², errors where lower is better).
    """
    ranks = rank_table(results, protocol).drop(columns="mean rank")
    categories = select_protocol(results, protocol).groupby("task", sort=False)["category"].first()
    by_category = {category: ranks[[t for t in ranks.columns if categories.get(t) == category]].mean(axis=1)
                   for category in dict.fromkeys(categories)}
    return pd.DataFrame(by_category).sort_index()


def category_correlations(correlations: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Per category: how many of its tasks were correlated with the reference task, and the mean ρ and r, each
    oriented so that positive means better on both (a lower-is-better task's sign flipped) before averaging."""
    categories = results.groupby("task", sort=False)["category"].first()
    better = task_directions(results)
    sign = correlations["task"].map(lambda task: 1.0 if better[task] else -1.0)
    table = correlations.assign(category=correlations["task"].map(categories),
                                spearman=correlations["spearman"] * sign, pearson=correlations["pearson"] * sign)
    return table.groupby("category", sort=False).agg(
        tasks=("task", "count"), mean_spearman=("spearman", "mean"), mean_pearson=("pearson", "mean"))


def run_configs(runs: pd.DataFrame) -> dict[str, dict]:
    """method label → its resolved pretraining config (from the store's runs table), one run per method."""
    configs = {}
    for row in runs.itertuples():
        configs.setdefault(row.method, OmegaConf.to_container(OmegaConf.create(row.config)))
    return configs


def method_switches(configs: dict[str, dict], baseline: str, variant: str) -> list[str]:
    """The design-space keys in which two methods' configs differ (run identity keys excluded); for methods of
    two classes, the class (`method.name`) and the keys outside the method section."""
    if baseline not in configs or variant not in configs:
        return []
    ignore = {"name", "seed", "output_dir", "data"}
    old = {k: v for k, v in configs[baseline].items() if k not in ignore}
    new = {k: v for k, v in configs[variant].items() if k not in ignore}
    old_method, new_method = old.get("method", {}), new.get("method", {})
    if set(old_method) != set(new_method):
        # Another method class: its switches are not comparable key by key, so the class is the switch.
        old.pop("method", None), new.pop("method", None)
        return [f"method.name ({old_method.get('name')} → {new_method.get('name')})", *changed_keys(old, new)]
    # One method's presets (moco_v2, byol, two_branch: the same keys) differ by their switches, not their names.
    old["method"], new["method"] = ({k: v for k, v in m.items() if k != "name"} for m in (old_method, new_method))
    return changed_keys(old, new)


def switch_effects(
    results: pd.DataFrame,
    comparisons: Sequence[Sequence[str]],
    configs: dict[str, dict] | None = None,
    protocol: str | None = "linear",
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired difference variant − baseline per task and pooled over the tasks scored in percent (POOLED),
    matched on (dataset, seed, task).

    The t interval is mean ± t_{(1+confidence)/2, n-1} · sd/√n; the bootstrap
    interval is the percentile interval of the mean over `resamples`
    resamples of the pairs (scipy.stats.bootstrap). Both are NaN below 2 pairs.
    """
    rows = select_protocol(results, protocol)
    out = []
    for baseline, variant in comparisons:
        paired = _paired(rows, "method", baseline, variant)
        if paired.empty:
            continue
        switches = ", ".join(method_switches(configs or {}, baseline, variant)) or "—"
        for task, group in [*_pooled(paired), *paired.groupby("task", sort=False)]:
            out.append({"baseline": baseline, "variant": variant, "switches": switches, "task": task,
                        **_difference(group["difference"].to_numpy(), confidence, resamples, seed)})
    return pd.DataFrame(out)


def switch_effects_by_dataset(
    results: pd.DataFrame,
    comparisons: Sequence[Sequence[str]],
    protocol: str | None = "linear",
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """switch_effects pooled over the tasks scored in percent, one row per pretraining dataset: whether a switch's
    effect depends on the data (the 'Critical Factors' study: the asymmetric predictor helps on balanced data and
    can hurt on long-tailed data)."""
    rows = select_protocol(results, protocol)
    out = []
    for baseline, variant in comparisons:
        paired = _paired(rows, "method", baseline, variant)
        paired = _in_percent(paired)
        for dataset, group in paired.groupby("pretrain_dataset", sort=False):
            out.append({"baseline": baseline, "variant": variant, "pretrain_dataset": dataset,
                        **_difference(group["difference"].to_numpy(), confidence, resamples, seed)})
    return pd.DataFrame(out)


def dataset_effects(
    results: pd.DataFrame,
    comparisons: Sequence[Sequence[str]],
    protocol: str | None = "linear",
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """What the pretraining data does: variant − baseline dataset per task, matched on (method, seed, task).

    Beside switch_effects' paired difference and intervals, each task gets
    ViRB's one-way ANOVA of the task's scores grouped by pretraining dataset
    (F and p, scipy.stats.f_oneway; NaN below 2 scores per dataset or when
    no score varies). ViRB found log-unbalanced ImageNet subsets about as
    good as balanced ones of the same size: a large p on every task.
    """
    rows = select_protocol(results, protocol)
    out = []
    for baseline, variant in comparisons:
        paired = _paired(rows, "pretrain_dataset", baseline, variant)
        if paired.empty:
            continue
        for task, group in [*_pooled(paired), *paired.groupby("task", sort=False)]:
            # Per task only: one ANOVA over tasks of different scales would mix their spreads.
            per_task = task != POOLED
            f, p = _anova(group["baseline"].to_numpy(), group["variant"].to_numpy()) if per_task else (NAN, NAN)
            out.append({"baseline": baseline, "variant": variant, "task": task,
                        **_difference(group["difference"].to_numpy(), confidence, resamples, seed),
                        "anova_f": f, "anova_p": p})
    return pd.DataFrame(out)


# The keys that identify one score; a comparison along one of them matches the scores on all the others.
SCORE_KEYS = ["method", "pretrain_dataset", "seed", "task", "protocol", "metric"]


def _paired(rows: pd.DataFrame, along: str, baseline: str, variant: str) -> pd.DataFrame:
    """The scores of `baseline` and `variant` (values of column `along`) side by side, matched on the other keys,
    with their difference."""
    keys = [key for key in SCORE_KEYS if key != along]
    a = rows[rows[along] == baseline].set_index(keys)["value"]
    b = rows[rows[along] == variant].set_index(keys)["value"]
    paired = pd.concat({"baseline": a, "variant": b}, axis=1).dropna().reset_index()
    return paired.assign(difference=paired["variant"] - paired["baseline"])


def _difference(differences: np.ndarray, confidence: float, resamples: int, seed: int) -> dict:
    low, high = _t_interval(differences, confidence)
    boot_low, boot_high = _bootstrap_interval(differences, confidence, resamples, seed)
    return {"pairs": len(differences), "mean_difference": differences.mean(),
            "t_low": low, "t_high": high, "bootstrap_low": boot_low, "bootstrap_high": boot_high}


def paired_interval(differences: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of paired differences; NaN below 2 pairs."""
    return _t_interval(np.asarray(differences, dtype=float), confidence)


def _anova(baseline: np.ndarray, variant: np.ndarray) -> tuple[float, float]:
    if min(len(baseline), len(variant)) < 2 or np.ptp(np.concatenate([baseline, variant])) == 0:
        return NAN, NAN
    result = stats.f_oneway(baseline, variant)
    return float(result.statistic), float(result.pvalue)


def _t_interval(differences: np.ndarray, confidence: float) -> tuple[float, float]:
    if len(differences) < 2:
        return NAN, NAN
    mean, sem = differences.mean(), stats.sem(differences)
    if sem == 0:
        return float(mean), float(mean)
    low, high = stats.t.interval(confidence, len(differences) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def _bootstrap_interval(differences: np.ndarray, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    if len(differences) < 2 or np.ptp(differences) == 0:
        value = float(differences.mean()) if len(differences) >= 2 else NAN
        return value, value
    result = stats.bootstrap((differences,), np.mean, confidence_level=confidence, n_resamples=resamples,
                             method="percentile", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def default_comparisons(methods: Sequence[str]) -> list[list[str]]:
    """Each method against the one listed before it: the switch-by-switch path of the 'Critical Factors' study."""
    return [[a, b] for a, b in itertools.pairwise(methods)]


def protocol_statement(results: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """Plain sentences stating every protocol's settings and budget and the pretraining budgets."""
    lines = []
    for (suite, task, protocol), rows in results.groupby(["suite", "task", "protocol"], sort=False):
        first = rows.iloc[0]
        settings = json.loads(first["settings"]) if isinstance(first["settings"], str) else {}
        for outcome in ("val_accuracy", "val_loss", "val_mse"):  # a run's sweep results, not settings
            settings.pop(outcome, None)
        test_images = f"{int(first['n_test'])} test images" if pd.notna(first["n_test"]) else "test size unrecorded"
        eval_seed = int(first["eval_seed"]) if pd.notna(first["eval_seed"]) else "unrecorded"
        lines.append(f"{suite}/{task}: {protocol} with {json.dumps(settings, sort_keys=True)}; budget "
                     f"{first['budget']}; {test_images}; eval seed {eval_seed}")
    for row in runs.drop_duplicates("method").itertuples():
        config = OmegaConf.to_container(OmegaConf.create(row.config))
        trainer, optim, model = config.get("trainer", {}), config.get("optim", {}), config.get("model", {})
        if is_random_label(row.method):
            lines.append(f"{row.method}: {model.get('name')} width {model.get('width')}, randomly initialised from "
                         "each seed, not trained")
            continue
        lines.append(f"pretraining {row.method}: {model.get('name')} width {model.get('width')}, "
                     f"{trainer.get('max_epochs')} epochs (max_steps {trainer.get('max_steps')}), batch "
                     f"{trainer.get('batch_size')}, {optim.get('name')} lr {optim.get('lr')}")
    return lines


# --- the random-encoder baseline ---------------------------------------------------------------------------------

AT_RANDOM = "≈ random"


def baseline_labels(results: pd.DataFrame, stored: dict[str, str] | None = None) -> dict[str, str]:
    """Each trained method → the label of its architecture's random encoder: the store's `baselines` meta where the
    grid recorded it, else the one random encoder of the results (older stores); {} when the results have none."""
    methods = list(dict.fromkeys(results["method"]))
    randoms = [m for m in methods if is_random_label(m)]
    if stored:
        return {m: r for m, r in stored.items() if r in randoms and m in methods}
    return {m: randoms[0] for m in methods if m not in randoms} if len(randoms) == 1 else {}


def versus_random(results: pd.DataFrame, baseline_of: dict[str, str], confidence: float = 0.95) -> pd.DataFrame:
    """Each trained encoder's gain over its architecture's random encoder, per (task, protocol, metric).

    `gain` is mean − random mean over seeds, signed so that positive is better
    (a lower-is-better metric's difference negated). Its interval is Welch's
    t interval for the difference of two means: the seeds of a trained and of
    a random encoder are independent draws, not pairs. A result is `at_random`
    when the interval includes or lies below 0; with one seed on either side
    there is no interval, and it is at random when its gain is not positive.
    """
    columns = [*ENCODER, "task", "protocol", "metric", "seeds", "random_seeds", "gain", "low", "high", "at_random"]
    rows = []
    keys = ["task", "protocol", "metric"]
    better = task_directions(results) if not results.empty else {}
    grouped = {key: group["value"].to_numpy() for key, group in results.groupby([*ENCODER, *keys], sort=False)}
    randoms = set(baseline_of.values())
    baselines: dict[tuple, list[np.ndarray]] = {}
    for (method, _, task, protocol, metric), values in grouped.items():
        if method in randoms:
            baselines.setdefault((method, task, protocol, metric), []).append(values)
    for (method, dataset, task, protocol, metric), values in grouped.items():
        baseline = baselines.get((baseline_of.get(method), task, protocol, metric))
        if baseline is None:
            continue
        sign = 1.0 if better.get(task, True) else -1.0
        reference = np.concatenate(baseline)
        gain = sign * (values.mean() - reference.mean())
        low, high = _welch_interval(values, reference, confidence)
        low, high = (sign * low, sign * high) if sign > 0 else (sign * high, sign * low)
        at_random = bool(gain <= 0) if np.isnan(low) else bool(low <= 0)
        rows.append({"method": method, "pretrain_dataset": dataset, "task": task, "protocol": protocol,
                     "metric": metric, "seeds": len(values), "random_seeds": len(reference), "gain": gain,
                     "low": low, "high": high, "at_random": at_random})
    return pd.DataFrame(rows, columns=columns)


def _welch_interval(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float]:
    """Welch's interval for mean(a) − mean(b); NaN with fewer than 2 values on a side. Written out rather than
    scipy's ttest_ind(...).confidence_interval, which gives NaN when both sides are constant (then the interval
    is the difference itself)."""
    if min(len(a), len(b)) < 2:
        return NAN, NAN
    difference = a.mean() - b.mean()
    var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(var_a + var_b)
    if se == 0:
        return float(difference), float(difference)
    dof = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    half = stats.t.ppf((1 + confidence) / 2, dof) * se
    return float(difference - half), float(difference + half)


def tasks_at_random(versus: pd.DataFrame) -> list[tuple[str, str]]:
    """The (task, protocol) pairs on which every trained encoder is at its random baseline."""
    if versus.empty:
        return []
    every = versus.groupby(["task", "protocol"], sort=False)["at_random"].all()
    return [key for key, flag in every.items() if flag]
