import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from augbench.analysis import stats
from augbench.analysis.store import load_results
from tests.analysis.conftest import DATASETS, METHODS, SEEDS, TASKS, expected_value


@pytest.fixture
def results(filled_store):
    loaded = load_results(filled_store.path)
    return loaded[loaded["kind"] == "standard"]


def test_summary_is_the_mean_and_sample_std_over_seeds(results):
    summary = stats.summarize(results)
    row = summary[(summary["method"] == "byol") & (summary["pretrain_dataset"] == "flat")
                  & (summary["task"] == "mask") & (summary["protocol"] == "linear")].iloc[0]
    values = np.array([expected_value("byol", "flat", s, "mask") for s in SEEDS])
    assert row["mean"] == pytest.approx(values.mean())
    assert row["std"] == pytest.approx(values.std(ddof=1))
    assert row["seeds"] == len(SEEDS)
    assert row["category"] == TASKS["mask"]


def test_encoder_matrix_reads_the_chosen_protocol(results):
    linear, knn = stats.encoder_matrix(results, "linear"), stats.encoder_matrix(results, "knn")
    assert linear.shape == (len(METHODS) * len(DATASETS), len(TASKS))
    np.testing.assert_allclose(linear.to_numpy() - knn.to_numpy(), 3.0)


def test_ranks_follow_each_metrics_direction():
    rows = pd.DataFrame({
        "method": ["a", "b", "c"] * 2, "pretrain_dataset": ["d"] * 6, "task": ["acc"] * 3 + ["err"] * 3,
        "protocol": ["linear"] * 6, "metric": ["top1"] * 3 + ["mae"] * 3, "value": [50, 70, 60, 5, 1, 3],
    })
    ranks = stats.rank_table(rows)
    assert ranks.loc[("b", "d"), "acc"] == 1 and ranks.loc[("a", "d"), "acc"] == 3
    assert ranks.loc[("b", "d"), "err"] == 1 and ranks.loc[("a", "d"), "err"] == 3  # lower mae is better
    assert ranks.index[0] == ("b", "d")


def test_reference_correlations_match_independent_numpy_computations(results):
    matrix = stats.encoder_matrix(results, "linear")
    table = stats.reference_correlations(matrix, "shape").set_index("task")
    assert table.loc["hue", "spearman"] == pytest.approx(-1.0)  # hue falls exactly as shape rises (by design)
    assert table.loc["count", "spearman"] == pytest.approx(1.0)
    for task in ("hue", "count", "mask"):
        x, y = matrix["shape"].to_numpy(), matrix[task].to_numpy()
        assert table.loc[task, "pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
        ranks_x, ranks_y = x.argsort().argsort(), y.argsort().argsort()
        assert table.loc[task, "spearman"] == pytest.approx(np.corrcoef(ranks_x, ranks_y)[0, 1])
    assert table.loc["mask", "encoders"] == len(METHODS) * len(DATASETS)


def test_correlation_is_nan_below_three_encoders_and_unknown_reference_is_named():
    matrix = pd.DataFrame({"shape": [1.0, 2.0], "hue": [2.0, 1.0]})
    assert stats.reference_correlations(matrix, "shape")["spearman"].isna().all()
    with pytest.raises(KeyError, match="reference task 'imagenet'"):
        stats.reference_correlations(matrix, "imagenet")


def test_task_correlations_are_symmetric_with_unit_diagonal(results):
    matrix = stats.task_correlations(stats.encoder_matrix(results))
    np.testing.assert_allclose(matrix.to_numpy(), matrix.to_numpy().T)
    np.testing.assert_allclose(np.diag(matrix.to_numpy()), 1.0)


def test_category_summary_is_the_mean_rank_over_each_categorys_tasks(results):
    summary = stats.category_summary(results, "linear")
    ranks = stats.rank_table(results, "linear")
    assert summary.loc[("moco_v2", "photo"), "structural/image"] == pytest.approx(
        (ranks.loc[("moco_v2", "photo"), "hue"] + ranks.loc[("moco_v2", "photo"), "count"]) / 2)
    assert summary.loc[("byol", "photo"), "semantic/image"] == 1  # the best shape score by construction
    correlations = stats.reference_correlations(stats.encoder_matrix(results), "shape")
    by_category = stats.category_correlations(correlations, results)
    assert by_category.loc["structural/image", "tasks"] == 2
    assert by_category.loc["structural/image", "mean_spearman"] == pytest.approx(0.0)  # hue -1, count +1
    # As an error, hue's −1 means better hue with better shape: oriented, the category agrees fully.
    hue = results["task"] == "hue"
    as_error = results.assign(metric=results["metric"].where(~hue, "mae"),
                              higher_is_better=results["higher_is_better"].where(~hue, False))
    oriented = stats.category_correlations(correlations, as_error)
    assert oriented.loc["structural/image", "mean_spearman"] == pytest.approx(1.0)


def test_switch_effects_are_paired_differences_with_a_t_interval(filled_store, results):
    configs = stats.run_configs(filled_store.table("runs"))
    effects = stats.switch_effects(results, [["moco_v2", "byol"]], configs, "linear").set_index("task")
    differences = np.array([expected_value("byol", d, s, "shape") - expected_value("moco_v2", d, s, "shape")
                            for d in DATASETS for s in SEEDS])
    row = effects.loc["shape"]
    assert row["pairs"] == len(differences)
    assert row["mean_difference"] == pytest.approx(differences.mean())
    half = scipy_stats.t.ppf(0.975, len(differences) - 1) * differences.std(ddof=1) / np.sqrt(len(differences))
    assert (row["t_low"], row["t_high"]) == pytest.approx((differences.mean() - half, differences.mean() + half))
    assert row["bootstrap_low"] <= differences.mean() <= row["bootstrap_high"]
    assert row["switches"] == "method.negatives, method.predictor.enabled"
    assert effects.loc[stats.POOLED, "pairs"] == len(differences) * len(TASKS)


def test_the_pooled_difference_leaves_out_tasks_not_scored_in_percent(results):
    # A lower-is-better task in other units would cancel a percent task's gain: +2 points and −2 pixels of error.
    mixed = results.copy()
    mixed.loc[mixed["task"] == "mask", "metric"] = "l1"
    effects = stats.switch_effects(mixed, [["moco_v2", "byol"]]).set_index("task")
    kept = mixed[(mixed["task"] != "mask") & (mixed["protocol"] == "linear")]
    paired = kept.pivot_table(index=["pretrain_dataset", "seed", "task"], columns="method", values="value")
    assert effects.loc[stats.POOLED, "pairs"] == len(paired)
    assert effects.loc[stats.POOLED, "mean_difference"] == pytest.approx((paired["byol"] - paired["moco_v2"]).mean())
    assert "mask" in effects.index  # still reported on its own
    by_dataset = stats.switch_effects_by_dataset(mixed, [["moco_v2", "byol"]])
    assert by_dataset["pairs"].sum() == len(paired)
    only_errors = mixed.assign(metric="l1")
    assert stats.POOLED not in set(stats.switch_effects(only_errors, [["moco_v2", "byol"]])["task"])


def test_switch_effects_by_dataset_split_the_pairs_by_pretraining_data(results):
    effects = stats.switch_effects_by_dataset(results, [["moco_v2", "byol"]]).set_index("pretrain_dataset")
    assert list(effects.index) == list(DATASETS)
    for dataset in DATASETS:
        differences = np.array([expected_value("byol", dataset, s, t) - expected_value("moco_v2", dataset, s, t)
                                for s in SEEDS for t in TASKS])
        assert effects.loc[dataset, "pairs"] == len(differences)
        assert effects.loc[dataset, "mean_difference"] == pytest.approx(differences.mean())


def test_dataset_effects_pair_methods_and_seeds_and_run_virbs_anova_per_task(results):
    effects = stats.dataset_effects(results, [["digits", "photo"]], "linear").set_index("task")
    for task in ("shape", "hue"):
        baseline = np.array([expected_value(m, "digits", s, task) for m in METHODS for s in SEEDS])
        variant = np.array([expected_value(m, "photo", s, task) for m in METHODS for s in SEEDS])
        row = effects.loc[task]
        assert row["pairs"] == len(baseline)
        assert row["mean_difference"] == pytest.approx((variant - baseline).mean())
        f, p = scipy_stats.f_oneway(baseline, variant)
        assert (row["anova_f"], row["anova_p"]) == pytest.approx((f, p))
    # The synthetic photo encoders are 10 points better at shape and 10 worse at hue; mask is noise.
    assert effects.loc["shape", "t_low"] > 5 and effects.loc["hue", "t_high"] < -5
    assert effects.loc["shape", "anova_p"] < 1e-3 and effects.loc["mask", "anova_p"] > effects.loc["shape", "anova_p"]
    assert effects.loc[stats.POOLED, "pairs"] == len(METHODS) * len(SEEDS) * len(TASKS)
    assert np.isnan(effects.loc[stats.POOLED, "anova_f"])
    assert stats.dataset_effects(results, [["digits", "nowhere"]]).empty


def test_changed_keys_lists_nested_differences():
    old = {"method": {"negatives": "queue", "projector": {"bn": False}}, "seed": 0}
    new = {"method": {"negatives": "none", "projector": {"bn": True}}, "seed": 0, "extra": 1}
    assert stats.changed_keys(old, new) == ["extra", "method.negatives", "method.projector.bn"]


def test_default_comparisons_walk_the_listed_path():
    assert stats.default_comparisons(["a", "b", "c"]) == [["a", "b"], ["b", "c"]]


def test_method_switches_compare_presets_of_one_method_key_by_key_and_other_methods_by_name():
    moco_v2 = {"seed": 0, "method": {"name": "moco_v2", "negatives": "queue", "projector": {"bn": False}}}
    step = {"seed": 1, "method": {"name": "two_branch", "negatives": "queue", "projector": {"bn": True}}}
    byol = {"seed": 0, "method": {"name": "byol", "negatives": "none", "projector": {"bn": True}}}
    hai = {"seed": 0, "method": {"name": "hai", "stages": [1, 2, 3, 4]}, "augment": {"recipe": "method"}}
    configs = {"moco_v2": moco_v2, "step": step, "byol": byol, "hai": hai}
    # The fair path's first step renames moco_v2 to the generic two_branch: the switch is the projector's BN.
    assert stats.method_switches(configs, "moco_v2", "step") == ["method.projector.bn"]
    assert stats.method_switches(configs, "moco_v2", "byol") == ["method.negatives", "method.projector.bn"]
    assert stats.method_switches(configs, "moco_v2", "hai") == ["method.name (moco_v2 → hai)", "augment"]


def _scores(method: str, values, metric: str = "top1", higher: bool = True) -> pd.DataFrame:
    return pd.DataFrame({"method": method, "pretrain_dataset": "none" if method == "random" else "photo",
                         "seed": range(len(values)), "task": "t", "protocol": "linear", "metric": metric,
                         "higher_is_better": higher, "value": values})


def test_the_gain_over_the_random_encoder_has_welchs_interval_and_knows_the_metrics_direction():
    trained, random = [12.0, 15.0, 11.0], [10.0, 10.5, 9.0, 9.5]
    row = stats.versus_random(pd.concat([_scores("moco_v2", trained), _scores("random", random)]),
                              {"moco_v2": "random"}).iloc[0]
    expected = scipy_stats.ttest_ind(trained, random, equal_var=False).confidence_interval(0.95)
    assert (row["low"], row["high"]) == pytest.approx((expected.low, expected.high))
    assert row["gain"] == pytest.approx(np.mean(trained) - np.mean(random)) and row["seeds"] == 3
    assert row["at_random"] == (expected.low <= 0)
    # An error (lower is better) below the random encoder's is a gain; its interval is the flipped one.
    errors = stats.versus_random(pd.concat([_scores("moco_v2", [1.0, 1.2, 0.9], "mae", False),
                                            _scores("random", [2.0, 2.1, 1.9], "mae", False)]),
                                 {"moco_v2": "random"}).iloc[0]
    flipped = scipy_stats.ttest_ind([2.0, 2.1, 1.9], [1.0, 1.2, 0.9], equal_var=False).confidence_interval(0.95)
    assert errors["gain"] == pytest.approx(1.0 - 0.1 / 3) and not errors["at_random"]
    assert (errors["low"], errors["high"]) == pytest.approx((flipped.low, flipped.high))


def test_one_seed_has_no_interval_and_is_at_random_unless_it_is_above_it():
    above = stats.versus_random(pd.concat([_scores("a", [11.0]), _scores("b", [9.0]), _scores("random", [10.0])]),
                                {"a": "random", "b": "random"})
    assert above["low"].isna().all() and list(above["at_random"]) == [False, True]
    assert stats.tasks_at_random(above) == []
    assert stats.tasks_at_random(above[above["method"] == "b"]) == [("t", "linear")]


def test_older_stores_take_their_one_random_encoder_as_every_methods_baseline():
    results = pd.concat([_scores("moco_v2", [1.0]), _scores("byol", [1.0]), _scores("random", [1.0])])
    assert stats.baseline_labels(results) == {"moco_v2": "random", "byol": "random"}
    assert stats.baseline_labels(results.query("method != 'random'")) == {}
    assert stats.baseline_labels(results, {"moco_v2": "random", "gone": "random"}) == {"moco_v2": "random"}
