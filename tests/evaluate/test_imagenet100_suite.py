"""The imagenet100 suite evaluates on CMC's hundred classes of an ImageNet tree found under the data folder."""

import json

import pytest

from augbench.data.disk import IMAGENET100_CLASSES
from augbench.errors import DataError
from augbench.evaluate.evaluate import evaluate
from augbench.evaluate.suite import DATA_ROOT_VARIABLE, load_suite
from augbench.models.backbones import BackboneConfig, build_backbone
from tests.data.layouts import write_imagenet


def test_the_suite_reads_the_hundred_classes_under_the_data_root_and_scores_top1(tmp_path, monkeypatch):
    write_imagenet(tmp_path / "imagenet", IMAGENET100_CLASSES, per_class=(3, 1))
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path))
    results = evaluate(build_backbone(BackboneConfig(width=0.125)), "imagenet100",
                       overrides=["dataset_overrides.image_size=16"], progress=False)
    assert list(zip(results.task, results.protocol)) == [("imagenet100", "knn"), ("imagenet100", "linear")]
    for row in results.itertuples():
        assert row.metric == "top1" and 0 <= row.value <= 100
        # val/ is the test split (one image of each class); val is carved from train's three of each
        assert (row.n_train + row.n_val, row.n_test) == (300, 100)
        dataset = json.loads(row.dataset)
        assert dataset["name"] == "imagenet100" and dataset["image_size"] == 16
        assert dataset["classes"] == list(IMAGENET100_CLASSES)


def test_the_suite_streams_the_splits_it_could_not_hold_and_scores_as_if_it_held_them(tmp_path, monkeypatch):
    write_imagenet(tmp_path / "imagenet", IMAGENET100_CLASSES, per_class=(3, 1))
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path))
    encoder = build_backbone(BackboneConfig(width=0.125))
    at_16_px = "dataset_overrides.image_size=16"
    held = evaluate(encoder, "imagenet100", overrides=[at_16_px, "dataset_overrides.lazy=false"], progress=False)
    # 270 train images of 16 x 16 px take 207 KB; a tenth of that is refused to a split held in memory ...
    tight = [at_16_px, "dataset_overrides.max_memory_gb=2e-5"]
    with pytest.raises(DataError, match=r"the train split's 270 images take .* more than max_memory_gb"):
        evaluate(encoder, "imagenet100", overrides=[*tight, "dataset_overrides.lazy=false"], progress=False)
    # ... and is enough for the suite's lazily read splits, which only their features outlive
    streamed = evaluate(encoder, "imagenet100", overrides=tight, progress=False)
    assert streamed.value.tolist() == pytest.approx(held.value.tolist(), abs=1e-9)
    assert (streamed.n_train + streamed.n_val).tolist() == [300, 300]


def test_the_suite_evaluates_at_224_px_unless_told_otherwise(tmp_path):
    _, [task] = load_suite("imagenet100", [f"dataset_overrides.path={tmp_path}"])
    assert (task.name, task.metric, task.dataset.image_size, task.dataset.path) == ("imagenet100", "top1", 224,
                                                                                    str(tmp_path))
    assert task.dataset.lazy
