"""The findings page from a store built by hand: verdicts, intervals and random-encoder marks, without training."""

import json
import re

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from augbench.analysis.findings import VERDICT_RULE, load_claims, verdict, write_findings
from augbench.analysis.queue import CellQueue, owner_id
from augbench.analysis.store import ResultsStore
from augbench.cli import main
from augbench.errors import ConfigError

CATEGORIES = {"shape": "semantic_image", "hue": "semantic_image", "orientation": "structural_image",
              "texture": "texture", "segmentation": "semantic_pixel"}
PIXEL_TASKS = {"segmentation"}  # stored under the dense head's protocol only, as the pixel-wise tasks are
# Linear-probe scores per method, task and seed (kNN: 3 points lower). c has two seeds only.
SCORES = {
    "a": {"shape": [50.0, 51.0, 52.0], "hue": [10.0, 10.5, 9.5], "orientation": [30.0, 31.0, 29.0],
          "texture": [10.0, 10.5, 11.0], "segmentation": [60.0, 61.0, 62.0]},
    "b": {"shape": [55.2, 55.8, 57.1], "hue": [12.0, 12.5, 11.5], "orientation": [31.0, 30.0, 29.5],
          "texture": [30.0, 30.5, 29.5], "segmentation": [70.0, 71.0, 72.5]},
    "c": {"shape": [53.0, 54.5], "hue": [10.0, 10.0], "orientation": [30.0, 30.0], "texture": [30.0, 30.0],
          "segmentation": [65.0, 65.0]},
    # the random encoder: far below on shape, level with a on orientation, erratic on hue so that every
    # encoder sits at it there; on texture a lies far below it (training erased it) and b level with it
    "random": {"shape": [20.0, 21.0, 19.5], "hue": [11.0, 20.0, 2.0], "orientation": [30.5, 29.5, 30.0],
               "texture": [30.0, 31.0, 29.5], "segmentation": [40.0, 41.0, 39.0]},
}
CLAIMS = {"claims": [
    {"id": "b_beats_a", "paper": "P1", "statement": "b beats a on shape.", "source": "Fig. 1", "grid": "toy",
     "rows": [{"label": "a → b, shape", "tasks": ["shape"], "expect": "greater",
               "baseline": {"methods": ["a"], "datasets": ["photo"]},
               "variant": {"methods": ["b"], "datasets": ["photo"]}},
              # informs only (no expectation): its missing cells say so on the row, not in the claim's verdict
              {"label": "a → b, long-tailed", "tasks": ["shape"],
               "baseline": {"methods": ["a"], "datasets": ["long_tailed"]},
               "variant": {"methods": ["b"], "datasets": ["long_tailed"]}}]},
    {"id": "b_below_a", "paper": "P1", "statement": "b is below a on shape.", "source": "Fig. 2", "grid": "toy",
     "rows": [{"label": "a → b, shape", "tasks": ["shape"], "expect": "less",
               "baseline": {"methods": ["a"], "datasets": ["photo"]},
               "variant": {"methods": ["b"], "datasets": ["photo"]}}]},
    {"id": "orientation_gain", "paper": "P2", "statement": "b gains on orientation.", "source": "Tab. 3",
     "grid": "toy", "rows": [{"label": "a → b, orientation", "categories": ["structural_image"], "expect": "greater",
                              "baseline": {"methods": ["a"], "datasets": ["photo"]},
                              "variant": {"methods": ["b"], "datasets": ["photo"]}}]},
    {"id": "hue_gain", "paper": "P2", "statement": "b gains on hue.", "source": "Tab. 4", "grid": "toy",
     "rows": [{"label": "a → b, hue", "tasks": ["hue"], "expect": "greater",
               "baseline": {"methods": ["a"], "datasets": ["photo"]},
               "variant": {"methods": ["b"], "datasets": ["photo"]}}]},
    {"id": "keeps_texture", "paper": "P2", "statement": "b keeps the texture a loses.", "source": "Tab. 5",
     "grid": "toy", "rows": [{"label": "a → b, texture", "tasks": ["texture"], "expect": "greater",
                              "baseline": {"methods": ["a"], "datasets": ["photo"]},
                              "variant": {"methods": ["b"], "datasets": ["photo"]}}]},
    {"id": "pixel_gain", "paper": "P2", "statement": "b gains on pixel-wise tasks.", "source": "Fig. 7",
     "grid": "toy", "rows": [{"label": "a → b, pixel-wise", "categories": ["semantic_pixel"], "expect": "greater",
                              "baseline": {"methods": ["a"], "datasets": ["photo"]},
                              "variant": {"methods": ["b"], "datasets": ["photo"]}}]},
    {"id": "two_seeds", "paper": "P3", "statement": "c beats a.", "source": "Fig. 5", "grid": "toy",
     "rows": [{"label": "a → c, shape", "tasks": ["shape"], "expect": "greater",
               "baseline": {"methods": ["a"], "datasets": ["photo"]},
               "variant": {"methods": ["c"], "datasets": ["photo"]}}]},
    {"id": "elsewhere", "paper": "P4", "statement": "A grid never run.", "source": "Fig. 6", "grid": "other",
     "rows": [{"label": "x", "tasks": ["shape"], "expect": "greater",
               "baseline": {"methods": ["a"], "datasets": ["photo"]},
               "variant": {"methods": ["b"], "datasets": ["photo"]}}]},
]}


TOY_CONFIG = """name: toy
datasets: {photo: {name: shapes_world, train_size: 2000}}
suites: [quick]
pretrain: {model: {name: resnet18, width: 0.25}, trainer: {max_epochs: 4, batch_size: 128}}
"""


def build_store(directory, scores: dict) -> None:
    """A store of the grid `toy` holding `scores[method][task][seed]` (linear; kNN 3 points lower) on `photo`."""
    store = ResultsStore(directory / "results.sqlite", create=True)
    store.set_meta(benchmark="toy", source="configs/benchmarks/toy.yaml", small="True", config=TOY_CONFIG,
                   baselines=json.dumps({m: "random" for m in scores if m != "random"}))
    queue = CellQueue(store)
    queue.add_cells([{"cell_id": f"{m}__{d}__seed{s}__quick", "method": m, "dataset": d, "seed": s, "suite": "quick",
                      "run_name": f"{m}__{d}__seed{s}"} for m, values in scores.items()
                     for d in (["none"] if m == "random" else ["photo"]) for s in range(len(values["shape"]))])
    owner = owner_id("test")
    while (cell := queue.claim(owner, lease_seconds=60)) is not None:
        store.record_run({"run_name": cell["run_name"], "method": cell["method"], "dataset": cell["dataset"],
                          "seed": cell["seed"], "run_dir": "", "config": "{}", "code_version": "test",
                          "environment": json.dumps({"cpus": 2, "cuda": None}), "state": "finished"})
        records = [{"task": task, "category": CATEGORIES[task], "kind": "standard", "protocol": protocol,
                    "metric": "miou" if protocol == "dense" else "top1",
                    "value": values[cell["seed"]] - (3 if protocol == "knn" else 0),
                    "budget": "{}", "seed": cell["seed"], "higher_is_better": True}
                   for task, values in scores[cell["method"]].items()
                   for protocol in (["dense"] if task in PIXEL_TASKS else ["knn", "linear"])]
        assert queue.finish(cell["cell_id"], owner, cell["run_name"], records)
    store.close()


@pytest.fixture
def toy_store(tmp_path):
    build_store(tmp_path / "toy", SCORES)
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump(CLAIMS, sort_keys=False))
    return tmp_path / "toy", claims


def _section(page: str, claim: str) -> str:
    return page.split(f"## {claim}\n", 1)[1].split("\n## ", 1)[0]


def _summary_verdict(page: str, claim: str) -> str:
    row = next(line for line in page.splitlines() if line.startswith(f"| {claim} "))
    return [cell.strip() for cell in row.strip("|").split("|")][3]


def test_the_page_gives_each_claim_its_verdict_interval_and_random_marks(toy_store, tmp_path):
    store, claims = toy_store
    markdown, html = tmp_path / "docs" / "results.md", tmp_path / "docs" / "results.html"
    write_findings(claims, {"toy": store}, markdown, html)
    page = markdown.read_text()
    assert VERDICT_RULE in page
    assert {claim: _summary_verdict(page, claim) for claim in
            ("b_beats_a", "b_below_a", "orientation_gain", "hue_gain", "keeps_texture", "pixel_gain", "two_seeds",
             "elsewhere")} == {
        "b_beats_a": "reproduced", "b_below_a": "refuted", "orientation_gain": "inconclusive",
        "hue_gain": "inconclusive (both sides at random)", "keeps_texture": "reproduced", "pixel_gain": "reproduced",
        "two_seeds": "no verdict (2 seeds)", "elsewhere": "not in the store"}
    # the pixel-wise task's dense head is read alike in the kNN and the linear column
    pixel_difference = np.mean(np.subtract(SCORES["b"]["segmentation"], SCORES["a"]["segmentation"]))
    assert _section(page, "pixel_gain").count(f"{pixel_difference:+.2f} [") == 2
    # a side measurably below the random encoder is marked so and does not make the row inconclusive
    texture = _section(page, "keeps_texture")
    assert texture.count("< random") == 2 and texture.count("≈ random") == 2  # a below, b level; kNN and linear
    # The interval: Student's t over the seeds' paired differences, computed here apart from augbench.
    differences = np.subtract(SCORES["b"]["shape"], SCORES["a"]["shape"])
    low, high = scipy_stats.t.interval(0.95, len(differences) - 1, loc=differences.mean(),
                                       scale=scipy_stats.sem(differences))
    shape = _section(page, "b_beats_a")
    assert f"{differences.mean():+.2f} [{low:+.2f}, {high:+.2f}]" in shape
    assert "no cells of a · long_tailed, b · long_tailed" in shape
    assert f"{np.mean(SCORES['a']['shape']):.2f} ± {np.std(SCORES['a']['shape'], ddof=1):.2f}" in shape
    # kNN and linear side by side, each with its verdict (the same differences: kNN is the linear score - 3)
    header = next(line for line in shape.splitlines() if line.startswith("| comparison"))
    assert "knn: Δ [95 % CI]" in header and "linear: Δ [95 % CI]" in header and header.count("verdict") == 2
    assert "≈ random" not in shape  # both far above the random encoder on shape
    # a's orientation is level with the random encoder's: its side is marked, b's too
    orientation = _section(page, "orientation_gain")
    assert orientation.count("≈ random") == 4  # both sides, under both protocols
    # two seeds: the numbers, no verdict
    two = _section(page, "two_seeds")
    assert "no verdict (2 seeds)" in two and f"{np.mean(SCORES['c']['shape']):.2f}" in two
    assert "no results store for grid other" in _section(page, "elsewhere")
    assert "augbench benchmark configs/benchmarks/toy.yaml --small 'seeds=[0,1,2]'" in page
    assert re.search(r"toy: 11 of 11 cells finished, [\d.]+ min of cell time", page)
    assert "toy's scale: resnet18 × 0.25 for 4 epochs of batch 128 on photo 2,000 training images" in page
    assert "on one GPU: not measured" in page
    html_page = html.read_text()
    assert "inconclusive (both sides at random)" in html_page and "≈ random" in html_page
    assert html_page.count("<table") == 1 + len(CLAIMS["claims"])


@pytest.mark.parametrize(("expect", "low", "high", "expected"), [
    ("greater", 0.1, 2.0, "reproduced"), ("greater", -0.1, 2.0, "inconclusive"), ("greater", -2.0, 0.0, "refuted"),
    ("less", -2.0, -0.1, "reproduced"), ("less", 0.0, 1.0, "refuted"), ("less", -1.0, 1.0, "inconclusive"),
    ("equal", -0.8, 0.9, "reproduced"), ("equal", -0.5, 1.5, "inconclusive"), ("equal", 1.2, 3.0, "refuted"),
    ("not_less", -0.9, 3.0, "reproduced"), ("not_less", -1.5, 0.5, "inconclusive"),
    ("not_less", -3.0, -1.1, "refuted"),
])
def test_the_verdict_rule_at_its_edges(expect, low, high, expected):
    assert verdict(expect, 3, low, high, margin=1.0) == expected
    assert verdict(expect, 2, low, high, margin=1.0) == "no verdict (2 seeds)"


def test_the_command_writes_the_page_and_a_bad_claims_file_is_one_line_naming_it(toy_store, tmp_path, capsys):
    store, claims = toy_store
    output = tmp_path / "out.md"
    assert main(["findings", str(claims), "--store", f"toy={store}", "--markdown", str(output)]) == 0
    assert "8 claims: 3 reproduced, 1 refuted" in " ".join(capsys.readouterr().out.split())
    assert "augbench findings" in output.read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"claims": [{**CLAIMS["claims"][0], "rows": [
        {**CLAIMS["claims"][0]["rows"][0], "expect": "bigger"}]}]}))
    assert main(["findings", str(broken), "--markdown", str(output)]) == 2
    assert "broken.yaml: claims[0] (b_beats_a): rows.expect='bigger'" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(ConfigError, match="no claims file here"):
        load_claims(tmp_path / "missing.yaml")


def test_the_shipped_claims_file_loads_and_names_cells_of_its_grids():
    from augbench.benchmark import load_benchmark
    from tests.conftest import REPO

    claims = load_claims(REPO / "configs" / "findings.yaml")
    assert len(claims) >= 15
    for claim in claims:
        grid = load_benchmark(REPO / "configs" / "benchmarks" / f"{claim.grid}.yaml")
        for row in claim.rows:
            for side in (row.baseline, row.variant):
                assert set(side.methods) <= set(grid.methods), (claim.id, side.methods)
                assert set(side.datasets) <= set(grid.datasets), (claim.id, side.datasets)


def test_a_correlation_claim_compares_the_reference_tasks_rho_by_category_per_seed(tmp_path):
    # Five encoders: hue rises with shape (rho = 1), orientation falls as shape rises (rho = -1), in every seed.
    quality = {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0, "e": 4.0}
    scores = {m: {"shape": [40 + 5 * q + s for s in range(3)], "hue": [30 + 2 * q + 0.1 * s for s in range(3)],
                  "orientation": [60 - 3 * q - 0.2 * s for s in range(3)]} for m, q in quality.items()}
    scores["random"] = {"shape": [10.0, 11.0, 9.0], "hue": [10.0, 11.0, 9.0], "orientation": [10.0, 11.0, 9.0]}
    build_store(tmp_path / "toy", scores)
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump({"claims": [
        {"id": "shape_predicts_semantic", "paper": "ViRB", "statement": "s", "source": "f", "grid": "toy",
         "kind": "correlation", "reference": "shape", "high_categories": ["semantic_image"],
         "low_categories": ["structural_image"]}]}))
    [result] = write_findings(claims, {"toy": tmp_path / "toy"}, tmp_path / "page.md")
    [(_, measured)] = result.rows
    assert measured["linear"].seeds == 3
    assert measured["linear"].difference == pytest.approx(2.0)  # rho 1 on hue minus rho -1 on orientation
    assert measured["linear"].verdict == "reproduced" and result.verdicts["knn"] == "reproduced"
    assert "high = mean over hue; low = over orientation" in (tmp_path / "page.md").read_text()


def test_the_small_grids_hold_every_cell_and_task_a_claims_verdict_reads(tmp_path):
    # `make results RESULTS_SMALL=--small` writes docs/results.md from the --small grids: a verdict row whose
    # cells or tasks they lack would read "not in the store" there.
    from augbench.benchmark import plan
    from tests.conftest import REPO

    planned = {}
    for claim in load_claims(REPO / "configs" / "findings.yaml"):
        if claim.grid not in planned:
            planned[claim.grid] = plan(REPO / "configs" / "benchmarks" / f"{claim.grid}.yaml", small=True,
                                       overrides=[f"output_dir={tmp_path / claim.grid}"])
        grid = planned[claim.grid]
        categories = set(grid.categories.values())
        if claim.kind == "correlation":
            assert claim.reference in grid.categories, claim.id
            assert set(claim.high_categories) <= categories and set(claim.low_categories) & categories, claim.id
        for row in claim.rows:
            if row.expect is None:
                continue
            for side in (row.baseline, row.variant):
                assert set(side.methods) <= set(grid.config.methods), (claim.id, row.label, side.methods)
                assert set(side.datasets) <= set(grid.config.datasets), (claim.id, row.label, side.datasets)
            assert {task.split("/")[0] for task in row.tasks} <= set(grid.categories), (claim.id, row.label)
            assert not row.categories or set(row.categories) & categories, (claim.id, row.label)


def test_a_grid_whose_cells_have_not_finished_yet_is_not_in_the_store(tmp_path):
    build_store(tmp_path / "toy", {})  # the store and its meta, no result yet (a grid just started)
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump(CLAIMS, sort_keys=False))
    markdown = tmp_path / "results.md"
    write_findings(claims, {"toy": tmp_path / "toy"}, markdown)
    assert _summary_verdict(markdown.read_text(), "b_beats_a") == "not in the store"
