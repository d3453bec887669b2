"""A suite on lazily read splits (`lazy: true`) scores as on splits held in memory, decoding only what it must."""

import pytest

import augbench.data.disk as disk
from augbench.evaluate.evaluate import evaluate
from augbench.models.backbones import BackboneConfig, build_backbone
from tests.data.layouts import write_tree

DATASET = "dataset: {name: imagefolder, path: DATA, image_size: 16, val_fraction: 0.2, test_fraction: 0.3}"
TASKS = {
    "classes": "protocols: [knn, linear, mlp, sgd_linear, finetune]",
    "tail": "kind: long_tailed\nprotocols: [linear, finetune]\nlong_tailed: {imbalance_ratio: 3, many: 5, few: 2}",
    "corrupted": "kind: corruptions\nprotocols: [knn, linear]\n"
                 "corruptions: {names: [gaussian_noise], severities: [1], max_test_images: 7}",
    "probed": "kind: invariance\nlabel: augmentation\nprotocols: [probe]",
}
SUITE = """name: lazy
tasks: [classes.yaml, tail.yaml, corrupted.yaml, probed.yaml]
sgd_linear: {epochs: 1, batch_size: 16, lrs: [0.1]}
finetune: {epochs: 1, batch_size: 16}
mlp: {epochs: 2}
probe: {augmentations: [flip], images: 10, batch_size: 8}
batch_size: 8
"""


def _write_suite(folder, data):
    for name, body in TASKS.items():
        label = "" if "label:" in body else "label: class\n"
        (folder / f"{name}.yaml").write_text(f"name: {name}\ncategory: semantic_image\n"
                                             f"{DATASET.replace('DATA', str(data))}\n{label}metric: top1\n{body}\n")
    (folder / "suite.yaml").write_text(SUITE)
    return folder / "suite.yaml"


def test_every_kind_scores_a_lazy_split_as_an_eager_one_and_never_decodes_a_split_whole(tmp_path, monkeypatch):
    write_tree(tmp_path / "data", per_class=(12, 10, 8))
    suite = _write_suite(tmp_path, tmp_path / "data")
    encoder = build_backbone(BackboneConfig(width=0.125))
    held = evaluate(encoder, suite, progress=False)
    decoded = []  # the splits whose whole set of images was decoded, and how many images each had
    whole = disk._decode_files
    monkeypatch.setattr(disk, "_decode_files", lambda files, config: decoded.append(len(files)) or whole(files, config))
    streamed = evaluate(encoder, suite, overrides=["dataset_overrides.lazy=true"], progress=False)
    assert list(zip(streamed.task, streamed.protocol)) == list(zip(held.task, held.protocol))
    assert streamed.value.tolist() == pytest.approx(held.value.tolist(), abs=1e-6)
    # Only the images a task picks out are decoded as a set: the 7 test images the corruptions corrupt and the
    # up to 10 the probes augment. kNN, linear and MLP read the features; SGD linear and fine-tuning (on train,
    # on the long-tailed sample of train) read a batch at a time, epoch after epoch.
    test_images = held.drop_duplicates("task").set_index("task").n_test["classes"]
    assert sorted(decoded) == sorted([7, min(10, test_images)]), decoded
