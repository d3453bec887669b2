"""Every task kind and protocol end to end on tiny generated data, with encoders whose answer is known."""

import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from augbench.data import load_split
from augbench.data.shapes import SHAPES
from augbench.data.shapes_world import HELD_OUT_PHOTOS, ShapesWorldConfig, load_shapes_world
from augbench.evaluate.evaluate import encoder_identity, evaluate
from augbench.evaluate.tasks import _crop_pairs
from augbench.models.backbones import BackboneConfig, build_backbone
from tests.evaluate.oracles import LabelOracle

TINY = {"name": "shapes_world", "image_size": 16, "train_size": 120, "val_size": 40, "test_size": 60}


def _suite(tmp_path, tasks, **settings):
    names = []
    for task in tasks:
        path = tmp_path / f"{task['name']}.yaml"
        path.write_text(yaml.safe_dump(task))
        names.append(path.name)
    suite = tmp_path / "suite.yaml"
    settings = {"linear": {"weight_decays": [1e-4, 1e-2], "max_iter": 50}, **settings}
    suite.write_text(yaml.safe_dump({"name": "tiny", "seed": 1, "tasks": names, **settings}))
    return suite


def _splits(dataset, splits=("train", "val", "test")):
    return [load_split(ShapesWorldConfig(**{k: v for k, v in dataset.items()}), s) for s in splits]


def _run(tmp_path, encoder, tasks, **settings):
    return evaluate(encoder, _suite(tmp_path, tasks, **settings), name="enc", progress=False)


def test_a_perfect_encoder_scores_100_with_knn_linear_and_mlp(tmp_path):
    oracle = LabelOracle(_splits(TINY), "shape", num_classes=12)
    results = _run(tmp_path, oracle, [{"name": "shape", "dataset": TINY, "label": "shape",
                                       "protocols": ["knn", "linear", "mlp"]}], mlp={"epochs": 40, "lr": 1e-2})
    assert list(results.protocol) == ["knn", "linear", "mlp"]
    assert (results.value > 99.9).all(), results.value.tolist()


@pytest.mark.parametrize(("label", "target", "metric", "best"), [
    ("position", "vector", "r2", 0.999), ("scale", "vector", "r2", 0.999), ("box", "box", "box_iou", 0.99)])
def test_a_perfect_encoder_regresses_its_targets(tmp_path, label, target, metric, best):
    oracle = LabelOracle(_splits(TINY), label)
    results = _run(tmp_path, oracle, [{"name": label, "dataset": TINY, "label": label, "target": target,
                                       "metric": metric, "protocols": ["linear"]}])
    assert results.metric[0] == metric and results.value[0] > best


def test_orientation_is_regressed_on_the_circle():
    # An encoder that already outputs (cos, sin) of the orientation scores an angular error of ~0.
    from augbench.evaluate.suite import TaskConfig
    from augbench.evaluate.tasks import _decode, _encode, _score

    task = TaskConfig(label="orientation", target="angle", metric="angular_error")
    angles = torch.tensor([0.0, 90.0, 359.0, 181.0])
    assert _score(task, _encode(task, angles), angles) == pytest.approx(0, abs=1e-3)
    assert torch.allclose(_decode(task, _encode(task, angles)), angles, atol=1e-3)


def test_few_shot_on_held_out_shapes_with_a_perfect_encoder(tmp_path):
    dataset = {**TINY, "shapes": list(SHAPES)[12:], "train_size": 0, "val_size": 0, "test_size": 320}
    oracle = LabelOracle(_splits(dataset, ["test"]), "shape")
    results = _run(tmp_path, oracle, [{"name": "fs", "category": "few_shot", "kind": "few_shot", "dataset": dataset,
                                       "label": "shape", "protocols": ["fewshot"],
                                       "few_shot": {"shots": 1, "queries": 10, "episodes": 30}}])
    assert results.value[0] == 100 and json.loads(results.details[0])["ci95"] == 0
    assert json.loads(results.budget[0]) == {"ways": 5, "shots": 1, "queries": 10, "episodes": 30, "split": "test"}


def test_long_tailed_subsamples_train_and_reports_many_medium_few(tmp_path):
    dataset = {**TINY, "train_size": 1800}
    oracle = LabelOracle(_splits(dataset), "shape", num_classes=12)
    results = _run(tmp_path, oracle, [{"name": "lt", "category": "long_tailed", "kind": "long_tailed",
                                       "dataset": dataset, "label": "shape", "protocols": ["knn"],
                                       "long_tailed": {"imbalance_ratio": 100, "many": 50, "few": 10}}])
    details = json.loads(results.details[0])
    sizes = np.array(details["train_class_sizes"])
    assert sizes.max() / sizes.min() >= 50 and results.n_train[0] == sizes.sum() < 1800
    assert details["many_classes"] + details["medium_classes"] + details["few_classes"] == 12
    assert details["many_classes"] == (sizes > 50).sum() and details["few_classes"] == (sizes < 10).sum()
    assert results.value[0] == 100 and details["few_top1"] == 100


def test_background_shift_tests_the_same_objects_on_unseen_photos(tmp_path):
    shift = {"backgrounds": ["photo"], "photos": list(HELD_OUT_PHOTOS)}
    clean = load_shapes_world(ShapesWorldConfig(**TINY), "test")
    shifted = load_shapes_world(ShapesWorldConfig(**{**TINY, **shift}), "test")
    for label in ("shape", "hue", "orientation", "position", "scale", "mask"):
        assert torch.equal(clean.labels[label], shifted.labels[label]), label
    assert not torch.equal(clean.images, shifted.images)
    oracle = LabelOracle(_splits(TINY) + [shifted], "shape", num_classes=12)
    results = _run(tmp_path, oracle, [{"name": "bg", "category": "background_shift", "kind": "background_shift",
                                       "dataset": TINY, "label": "shape", "protocols": ["linear"],
                                       "shifted_test": shift}])
    details = json.loads(results.details[0])
    assert results.value[0] == 100 and details["in_distribution"] == 100 and details["drop"] == 0


class PixelStatistics(nn.Module):
    """Mean and standard deviation of each channel on a 2×2 grid: a fixed encoder that corruptions do affect."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images):
        blocks = nn.functional.unfold(images, kernel_size=images.shape[-1] // 2, stride=images.shape[-1] // 2)
        blocks = blocks.view(len(images), 3, -1, 4)
        return torch.cat([blocks.mean(2), blocks.std(2)], dim=1).flatten(1) * self.scale


def test_corruption_records_hold_clean_mean_and_relative_drop(tmp_path):
    results = _run(tmp_path, PixelStatistics(), [{
        "name": "corr", "category": "corruptions", "kind": "corruptions",
        "dataset": {**TINY, "train_size": 400, "world": "photo_backgrounds"},
        "label": "background", "protocols": ["knn", "linear"],
        "corruptions": {"names": ["gaussian_noise", "contrast"], "severities": [1, 5], "max_test_images": 40}}])
    for row in results.itertuples():
        details = json.loads(row.details)
        scores = details["scores"]
        assert set(scores) == {"gaussian_noise", "contrast"} and set(scores["contrast"]) == {"1", "5"}
        assert row.value == pytest.approx(np.mean([v for s in scores.values() for v in s.values()]))
        assert details["relative_drop"] == pytest.approx((details["clean"] - row.value) / details["clean"])
        assert row.n_test == 40
    # Background photos are told apart by pixel statistics; contrast 0.15 erases most of that.
    linear = json.loads(results.details[1])
    assert linear["clean"] > 60 and linear["scores"]["contrast"]["5"] < linear["clean"] - 10


def test_crop_pairs_cut_the_boxes_their_offsets_describe():
    size = 32
    ramp = (torch.arange(size) + 0.5) / size
    images = torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size), torch.zeros(size, size)])
    images = (images * 255).round().to(torch.uint8)[None].repeat(50, 1, 1, 1)
    first, second, offset = _crop_pairs(images, 0.5, torch.Generator().manual_seed(0))
    # Channel 0 holds x and channel 1 holds y, so a crop's mean is its centre.
    centre_shift = second[:, :2].mean((2, 3)) - first[:, :2].mean((2, 3))
    assert torch.allclose(centre_shift, offset, atol=0.02)
    assert offset.abs().max() <= 0.5 and offset.std() > 0.1


@pytest.mark.parametrize(("label", "target", "metric"), [
    ("foreground", "segmentation", "miou"),
    pytest.param("semantic", "segmentation", "miou", marks=pytest.mark.slow),
    pytest.param("edges", "binary_map", "iou", marks=pytest.mark.slow),
])
def test_dense_head_reads_perfect_stage_features(tmp_path, label, target, metric):
    dataset = {**TINY, "train_size": 200}
    oracle = LabelOracle(_splits(dataset), label, num_classes=13 if label == "semantic" else 2)
    results = _run(tmp_path, oracle, [{"name": label, "category": "semantic_pixel", "dataset": dataset,
                                       "label": label, "target": target, "metric": metric, "protocols": ["dense"]}],
                   dense={"epochs": 25, "lr": 1e-2, "batch_size": 32})
    assert results.value[0] > 95, results.value[0]


@pytest.mark.slow
def test_dense_head_regresses_the_distance_map(tmp_path):
    dataset = {**TINY, "train_size": 200}
    oracle = LabelOracle(_splits(dataset), "distance")
    results = _run(tmp_path, oracle, [{"name": "distance", "category": "structural_pixel", "dataset": dataset,
                                       "label": "distance", "target": "map", "metric": "l1",
                                       "protocols": ["dense"]}], dense={"epochs": 25, "lr": 1e-2, "batch_size": 32})
    test = load_split(ShapesWorldConfig(**dataset), "test").labels["distance"]
    baseline = (test - test.mean()).abs().mean().item()  # predicting the mean everywhere
    assert results.value[0] < 0.3 * baseline


def _digits_task(protocols, **settings):
    return {"name": "digits", "dataset": {"name": "digits", "image_size": 16}, "label": "digit",
            "protocols": protocols, **settings}


class SmallConvNet(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten())


def test_sgd_linear_learns_with_augmentation_and_leaves_the_encoder_alone(tmp_path):
    torch.manual_seed(0)
    encoder = SmallConvNet().train()
    encoder(torch.rand(16, 3, 16, 16))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    results = _run(tmp_path, encoder, [_digits_task(["sgd_linear"])],
                   sgd_linear={"epochs": 8, "batch_size": 64, "lrs": [0.1, 1.0], "crop_scale": [0.8, 1.0]})
    settings, budget = json.loads(results.settings[0]), json.loads(results.budget[0])
    assert results.value[0] > 70, results.value[0]
    assert settings["lr"] in (0.1, 1.0) and set(settings["val_accuracy"]) == {"0.1", "1.0"}
    assert budget == {"epochs": 8, "sweep": 2, "train_images": results.n_train[0]}
    assert encoder.training and all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())


# LARS moves each weight by about lr × 0.001 of its norm per step: a large lr learns in the test's few steps.
@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.5), ("lars", 10.0), ("adamw", 0.01)])
def test_finetune_with_each_optimiser_learns_on_a_copy(tmp_path, optimizer, lr):
    torch.manual_seed(0)
    encoder = SmallConvNet().train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    results = _run(tmp_path, encoder, [_digits_task(["finetune"], protocol_settings={
        "finetune": {"optimizer": {"name": optimizer, "lr": lr, "weight_decay": 1e-6}}})],
        finetune={"epochs": 6, "batch_size": 64, "crop_scale": [0.8, 1.0]})
    assert json.loads(results.budget[0])["optimizer"] == optimizer
    assert json.loads(results.settings[0])["optimizer"]["name"] == optimizer
    assert results.value[0] > 50, results.value[0]
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())


def test_a_resnet_keeps_its_weights_mode_and_bn_statistics_through_every_protocol(tmp_path):
    encoder = build_backbone(BackboneConfig(width=0.125)).train()
    encoder(torch.rand(8, 3, 16, 16))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    identity = encoder_identity(encoder)
    tasks = [
        {"name": "shape", "dataset": TINY, "label": "shape", "protocols": ["knn", "linear", "sgd_linear", "finetune"]},
        {"name": "seg", "category": "semantic_pixel", "dataset": TINY, "label": "foreground",
         "target": "segmentation", "metric": "miou", "protocols": ["dense"]},
        {"name": "pose", "category": "structural_image", "kind": "crop_pair", "dataset": TINY,
         "label": "crop_offset", "target": "vector", "metric": "r2", "protocols": ["linear"]},
        {"name": "inv", "category": "invariance", "kind": "invariance", "dataset": TINY, "label": "augmentation",
         "protocols": ["probe"]},
    ]
    results = _run(tmp_path, encoder, tasks, sgd_linear={"epochs": 1}, finetune={"epochs": 1, "batch_size": 32},
                   dense={"epochs": 1}, probe={"images": 40, "augmentations": ["flip", "blur"]})
    assert encoder.training
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert set(results.encoder_id) == {identity} and set(results.seed) == {1}
    assert {"metric", "budget", "settings", "details", "encoder", "encoder_id", "seed", "category"} <= set(results)
    assert set(results.task) >= {"shape", "seg", "pose", "inv/flip", "inv/blur"}
    assert set(results[results.task == "inv/flip"].protocol) == {f"{kind}@layer{i}" for kind in ("cosine", "predict")
                                                                 for i in range(1, 5)}


def test_encoder_identity_follows_the_weights():
    first, second = build_backbone(BackboneConfig(width=0.125)), build_backbone(BackboneConfig(width=0.125))
    assert encoder_identity(first) != encoder_identity(second)
    second.load_state_dict(first.state_dict())
    assert encoder_identity(first) == encoder_identity(second)


def test_a_continuous_label_read_as_classes_is_refused_naming_task_and_label(tmp_path):
    from augbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"task 'hue': label 'hue' is not a class index"):
        _run(tmp_path, PixelStatistics(), [{"name": "hue", "dataset": TINY, "label": "hue", "protocols": ["knn"]}])
