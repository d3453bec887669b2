"""The transfer suite reads every on-disk dataset from one folder laid out as torchvision leaves it."""

import json

import pandas as pd
import pytest
import torch

import augbench.evaluate.evaluate as evaluation
from augbench.cli import main
from augbench.errors import ConfigError
from augbench.evaluate.evaluate import evaluate
from augbench.evaluate.suite import DATA_ROOT_VARIABLE, load_suite
from augbench.models.backbones import BackboneConfig, build_backbone
from tests.data.layouts import write_cifar10, write_cifar100, write_transfer_root

TASKS = ["cifar10", "cifar100", "stl10", "flowers102", "dtd", "pets", "caltech101", "eurosat", "flowers102_5shot",
         "flowers102_10shot"]
# Kornblith et al. (2019); top-1 for the others
MEAN_PER_CLASS = {"flowers102", "pets", "caltech101", "flowers102_5shot", "flowers102_10shot"}
SHOTS = {"flowers102_5shot": 5, "flowers102_10shot": 10}


def test_every_task_reads_its_dataset_under_the_root_and_is_scored_by_its_metric(tmp_path, monkeypatch):
    write_transfer_root(tmp_path)
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path))
    encoder = build_backbone(BackboneConfig(width=0.125))
    output = tmp_path / "transfer.csv"
    results = evaluate(encoder, "transfer", overrides=["dataset_overrides.image_size=16", "knn.k=3"], progress=False,
                       output=output)
    assert pd.read_csv(output).value.tolist() == pytest.approx(results.value.tolist())
    assert not (tmp_path / "transfer.unfinished.csv").exists()
    assert list(zip(results.task, results.protocol)) == [(task, p) for task in TASKS for p in ("knn", "linear")]
    for row in results.itertuples():
        assert row.metric == ("mean_per_class" if row.task in MEAN_PER_CLASS else "top1"), row.task
        dataset = json.loads(row.dataset)
        assert dataset["path"] == str(tmp_path) and dataset["image_size"] == 16, row.task
        assert row.n_test > 0 and 0 <= row.value <= 100, row.task
        if row.task == "caltech101":  # 30 images of each of 3 classes and the background, the other 3 to test
            assert (row.n_train + row.n_val, row.n_val, row.n_test) == (4 * 30, 4 * 6, 4 * 3)
        if row.task in SHOTS:  # K images of each of the 4 classes, and no refit on val
            assert row.n_train == 4 * SHOTS[row.task], row.task
            assert row.protocol == "knn" or json.loads(row.budget)["train_images"] == row.n_train
        elif row.protocol == "linear":  # refit on train + val at the penalty chosen on val
            assert json.loads(row.budget)["train_images"] == row.n_train + row.n_val, row.task
            assert json.loads(row.settings)["refit_weight_decay"] < json.loads(row.settings)["weight_decay"]
    # Each class is one solid colour, so even a random encoder's features tell the classes apart.
    linear = results[results.protocol == "linear"].set_index("task").value
    assert (linear > 60).all(), linear.to_dict()


def test_every_task_reads_its_splits_lazily_and_scores_as_with_them_in_memory(tmp_path, monkeypatch):
    write_transfer_root(tmp_path)
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path))
    _, tasks = load_suite("transfer")
    assert all(task.dataset.lazy for task in tasks)
    encoder = build_backbone(BackboneConfig(width=0.125))
    at_224_px = ["dataset_overrides.image_size=224", "knn.k=3", "tasks=[cifar10,stl10,flowers102_5shot]"]
    held = evaluate(encoder, "transfer", overrides=[*at_224_px, "dataset_overrides.lazy=false"], progress=False)
    streamed = evaluate(encoder, "transfer", overrides=at_224_px, progress=False)
    assert streamed.value.tolist() == pytest.approx(held.value.tolist(), abs=1e-6)
    assert {json.loads(d)["image_size"] for d in streamed.dataset} == {224}


def test_the_root_given_as_an_override_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path / "elsewhere"))
    _, tasks = load_suite("transfer", [f"dataset_overrides.path={tmp_path}"])
    assert [task.name for task in tasks] == TASKS
    assert {task.dataset.path for task in tasks} == {str(tmp_path)}


def test_a_missing_root_stops_before_any_task_runs_naming_the_variable_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match=rf"cifar10.yaml: dataset.path is not set: .*{DATA_ROOT_VARIABLE}"):
        load_suite("transfer")
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=rf"dataset.path={tmp_path / 'absent'}: no such directory"):
        load_suite("transfer")


def test_a_missing_dataset_is_named_and_a_rerun_takes_over_the_finished_tasks_records(tmp_path, monkeypatch, capsys):
    write_cifar10(tmp_path / "data")
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path / "data"))
    output = tmp_path / "results.csv"
    output.write_text("an earlier evaluation\n")
    torch.manual_seed(0)
    code = main(["evaluate", "timm:resnet18", "--suite", "transfer", "--output", str(output), "--device", "cpu",
                 "tasks=[cifar10,cifar100]", "knn.k=3", "dataset_overrides.image_size=16"])
    message = capsys.readouterr().out
    assert code == 2 and "no cifar-100-python/ folder here" in message
    unfinished = tmp_path / "results.unfinished.csv"
    (tmp_path / "first.csv").write_bytes(unfinished.read_bytes())
    assert f"tasks finished before 'cifar100' are in {unfinished}" in " ".join(message.split())
    assert list(pd.read_csv(unfinished).task) == ["cifar10", "cifar10"]
    assert output.read_text() == "an earlier evaluation\n"

    # Run again once the dataset is there: CIFAR-10's records are taken over, only CIFAR-100 is computed.
    write_cifar100(tmp_path / "data")
    torch.manual_seed(0)  # the same randomly initialised encoder as the first run's
    computed = []
    real = evaluation.run_task
    monkeypatch.setattr(evaluation, "run_task", lambda task, context: computed.append(task.name) or real(task, context))
    code = main(["evaluate", "timm:resnet18", "--suite", "transfer", "--output", str(output), "--device", "cpu",
                 "tasks=[cifar10,cifar100]", "knn.k=3", "dataset_overrides.image_size=16"])
    assert code == 0 and computed == ["cifar100"]
    records = pd.read_csv(output)
    assert list(records.task) == ["cifar10", "cifar10", "cifar100", "cifar100"]
    assert records.value[:2].tolist() == pd.read_csv(tmp_path / "first.csv").value.tolist()
    assert not unfinished.exists()


def test_k_shot_tasks_share_the_val_and_test_features_of_their_dataset(tmp_path, monkeypatch):
    import augbench.evaluate.tasks as module

    write_transfer_root(tmp_path)
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path))
    encoded = []
    real = module.extract_features
    monkeypatch.setattr(module, "extract_features", lambda encoder, images, *a, **k: encoded.append(len(images))
                        or real(encoder, images, *a, **k))
    evaluate(build_backbone(BackboneConfig(width=0.125)), "transfer", progress=False,
             overrides=["tasks=[flowers102,flowers102_5shot,flowers102_10shot]", "knn.k=3"])
    assert sorted(encoded) == sorted([40, 20, 20, 20, 40])  # train, val, test; the 5- and 10-shot train subsets


def test_a_dataset_no_later_task_reads_is_released(tmp_path, monkeypatch):
    write_transfer_root(tmp_path)
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path))
    cached = {}
    real = evaluation.run_task

    def run_task(task, context):
        cached[task.name] = {json.loads(key[0])["name"] for key in [*context.datasets, *context.features]}
        return real(task, context)

    monkeypatch.setattr(evaluation, "run_task", run_task)
    evaluate(build_backbone(BackboneConfig(width=0.125)), "transfer", progress=False,
             overrides=["tasks=[flowers102,cifar10,flowers102_5shot,dtd]", "knn.k=3"])
    # Flowers-102's val and test stay for its 5-shot task; after that, nothing of it is held.
    assert cached == {"flowers102": set(), "cifar10": {"flowers102"}, "flowers102_5shot": {"flowers102"},
                      "dtd": set()}
