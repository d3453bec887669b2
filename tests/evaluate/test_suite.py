import pytest
import yaml

from augbench.errors import ConfigError
from augbench.evaluate.suite import load_suite

GOOD = {"name": "t", "dataset": {"name": "shapes_world", "image_size": 16}, "label": "shape",
        "protocols": ["knn"]}


def _load(tmp_path, task=None, **suite):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({**GOOD, **(task or {})}))
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "tasks": ["t.yaml"], **suite}))
    return load_suite(path)


def test_the_full_suite_has_twenty_end_tasks_in_all_four_categories():
    _, tasks = load_suite("full")
    categories = {task.category for task in tasks}
    assert {"semantic_image", "structural_image", "semantic_pixel", "structural_pixel"} <= categories
    assert {"few_shot", "long_tailed", "corruptions", "background_shift", "invariance"} <= categories
    end_tasks = [t for t in tasks if t.kind != "invariance"]
    assert len(end_tasks) >= 20
    shots = {t.few_shot.shots for t in tasks if t.kind == "few_shot"}
    assert shots == {1, 5} and all(t.few_shot.episodes >= 600 for t in tasks if t.kind == "few_shot")
    assert next(t for t in tasks if t.kind == "long_tailed").long_tailed.imbalance_ratio == 100
    corruptions = next(t for t in tasks if t.kind == "corruptions").corruptions
    assert len(corruptions.names) == 15 and corruptions.severities == [1, 2, 3, 4, 5]
    optimisers = {t.protocol_settings["finetune"]["optimizer"]["name"] for t in tasks if "finetune" in t.protocols}
    assert optimisers == {"sgd", "lars", "adamw"}


def test_the_quick_suite_reads_every_factor_an_image_shows_by_knn_and_linear():
    _, tasks = load_suite("quick")
    assert [t.name for t in tasks] == ["shape", "hue", "orientation", "scale", "position", "background"]
    assert all(t.protocols == ["knn", "linear"] for t in tasks)


def test_a_suites_protocols_keep_only_those_of_each_tasks_own(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("tasks: [shape, scale]\nprotocols: [linear]\n")
    _, tasks = load_suite(suite)
    assert [t.protocols for t in tasks] == [["linear"], ["linear"]]
    suite.write_text("tasks: [shape]\nprotocols: [dense]\n")
    with pytest.raises(ConfigError, match=r"protocols: \['dense'\] leave task 'shape' none of its own"):
        load_suite(suite)


@pytest.mark.parametrize(("task", "message"), [
    ({"label": "colour"}, r"t.yaml: label: 'colour' is not a label of shapes_world"),
    ({"protocols": ["knn", "svm"]}, r"t.yaml: protocols: unknown \['svm'\]"),
    ({"metric": "f1"}, r"t.yaml: metric: 'f1' is unknown"),
    ({"metric": "r2"}, r"t.yaml: metric: 'r2' does not score target 'class'"),
    ({"kind": "zero_shot"}, r"t.yaml: kind: 'zero_shot' is unknown"),
    ({"target": "heatmap"}, r"t.yaml: target: 'heatmap' is unknown"),
    ({"protocols": ["dense"]}, r"t.yaml: protocols: \['dense'\] do not apply to a standard task with target 'class'"),
    ({"label": "mask", "target": "segmentation", "metric": "miou", "protocols": ["knn"]},
     r"protocols: \['knn'\] do not apply"),
    ({"protocol_settings": {"linear": {"max_iter": 3}}}, r"protocol_settings.linear: the task does not run"),
    ({"kind": "background_shift"}, r"t.yaml: shifted_test: a background_shift task needs"),
    ({"kind": "background_shift", "shifted_test": {"photos": ["mars"]}}, r"t.yaml: shifted_test.*mars"),
    ({"kind": "crop_pair", "label": "shape"}, r"t.yaml: label: a crop_pair task computes its label 'crop_offset'"),
    ({"corruptions": {"names": ["rain"]}}, r"corruptions.*unknown \['rain'\]"),
])
def test_bad_task_configs_name_the_file_and_key(tmp_path, task, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, task)


def test_bad_protocol_settings_and_dataset_overrides_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"t.yaml: protocol_settings.knn.kk"):
        _load(tmp_path, {"protocol_settings": {"knn": {"kk": 3}}})
    with pytest.raises(ConfigError, match=r"dataset_overrides: \['image_sise'\] is not a setting of any dataset"):
        _load(tmp_path, dataset_overrides={"image_sise": 8})
    with pytest.raises(ConfigError, match=r"suite.yaml: finetune: name='adam': expected one of"):
        _load(tmp_path, finetune={"optimizer": {"name": "adam"}})


def test_dataset_overrides_reach_every_task_that_has_the_key(tmp_path):
    _, tasks = _load(tmp_path, dataset_overrides={"image_size": 8, "train_size": 5})
    assert tasks[0].dataset.image_size == 8 and tasks[0].dataset.train_size == 5
