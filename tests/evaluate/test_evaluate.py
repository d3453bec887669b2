import json

import pytest
import torch

from augbench.errors import ConfigError, DataError
from augbench.evaluate.evaluate import evaluate
from augbench.evaluate.suite import load_suite
from augbench.models.backbones import BackboneConfig, build_backbone

TINY_DATA = {"name": "shapes_world", "image_size": 32, "train_size": 96, "val_size": 32, "test_size": 48}


def _suite(tmp_path, labels=("shape", "hue_bin"), protocols=("knn", "linear")):
    import yaml

    names = []
    for label in labels:
        path = tmp_path / f"{label}.yaml"
        path.write_text(yaml.safe_dump({"name": label, "dataset": TINY_DATA, "label": label,
                                        "protocols": list(protocols)}))
        names.append(path.name)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "tiny", "seed": 3, "tasks": names, "knn": {"k": 5},
                                     "linear": {"weight_decays": [1e-4, 1e-2], "max_iter": 50}}))
    return suite


def test_one_row_per_task_and_protocol_with_its_full_protocol(tmp_path):
    encoder = build_backbone(BackboneConfig(width=0.125))
    results = evaluate(encoder, _suite(tmp_path), name="random", progress=False)
    assert list(zip(results.task, results.protocol)) == [
        ("shape", "knn"), ("shape", "linear"), ("hue_bin", "knn"), ("hue_bin", "linear")]
    assert ((results.value >= 0) & (results.value <= 100)).all()
    knn = json.loads(results.settings[0])
    assert knn == {"k": 5, "temperature": 0.07, "chunk_size": 1024}
    linear = json.loads(results.settings[1])
    assert linear["weight_decay"] in linear["weight_decays"]
    assert set(results.seed) == {3} and set(results.n_test) == {48} and set(results.encoder) == {"random"}
    assert json.loads(results.dataset[0])["train_size"] == 96


def test_features_of_a_dataset_are_computed_once_per_split(tmp_path, monkeypatch):
    import augbench.evaluate.tasks as module

    calls = []
    real = module.extract_features
    monkeypatch.setattr(module, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    evaluate(build_backbone(BackboneConfig(width=0.125)), _suite(tmp_path), progress=False)
    assert len(calls) == 3  # train, val, test, shared by both tasks


def test_evaluation_does_not_change_the_encoder(tmp_path):
    encoder = build_backbone(BackboneConfig(width=0.125)).train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    evaluate(encoder, _suite(tmp_path, labels=("shape",)), progress=False)
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())


def test_unknown_label_is_named_with_its_task_file(tmp_path):
    suite = _suite(tmp_path, labels=("colour",))
    with pytest.raises(ConfigError, match=r"colour.yaml: label: 'colour' is not a label of shapes_world"):
        load_suite(suite)


def test_unknown_suite_and_task_names_are_listed():
    with pytest.raises(ConfigError, match=r"suite 'nightly'.*known: \[.*'quick'"):
        load_suite("nightly")


def test_the_shipped_quick_suite_loads():
    config, tasks = load_suite("quick")
    assert [t.label for t in tasks] == ["shape", "hue_bin", "orientation_bin", "scale", "position", "background"]
    assert config.knn.k == 20 and config.knn.temperature == 0.07



def test_an_unreadable_unfinished_file_is_named_not_overwritten(tmp_path):
    unfinished = tmp_path / "results.unfinished.csv"
    unfinished.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"results.unfinished.csv: cannot read the records of an earlier"):
        evaluate(build_backbone(BackboneConfig(width=0.125)), _suite(tmp_path), progress=False,
                 output=tmp_path / "results.csv")
    assert unfinished.read_bytes() == b"\xff\xfe\x00garbage"


def test_a_rerun_takes_over_only_records_computed_the_same_way(tmp_path, monkeypatch):
    import augbench.evaluate.evaluate as evaluation

    encoder = build_backbone(BackboneConfig(width=0.125))
    suite, output = _suite(tmp_path), tmp_path / "results.csv"
    first = evaluate(encoder, suite, name="first", progress=False, output=output)
    output.rename(tmp_path / "results.unfinished.csv")  # as a run killed after its last task leaves it
    computed = []
    real = evaluation.run_task
    monkeypatch.setattr(evaluation, "run_task", lambda task, context: computed.append(task.name) or real(task, context))
    again = evaluate(encoder, suite, name="again", progress=False, output=output)
    assert computed == [] and again.value.tolist() == pytest.approx(first.value.tolist())
    assert set(again.encoder) == {"again"}
    output.rename(tmp_path / "results.unfinished.csv")
    evaluate(encoder, suite, progress=False, output=output, overrides=["knn.k=3"])  # another protocol: recomputed
    assert computed == ["shape", "hue_bin"]
    output.rename(tmp_path / "results.unfinished.csv")
    torch.nn.init.zeros_(next(encoder.parameters()))
    evaluate(encoder, suite, progress=False, output=output)  # other weights: recomputed
    assert computed == ["shape", "hue_bin", "shape", "hue_bin"]
