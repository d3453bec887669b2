import numpy as np
import pytest
import torch

from augbench.data import load_split
from augbench.data.subsets import (
    SubsetConfig,
    apply_subset,
    balanced_indices,
    long_tailed_indices,
    long_tailed_sizes,
    subset,
)
from augbench.errors import ConfigError, DataError
from augbench.train.config import load_config
from tests.conftest import REPO

BALANCED_LABELS = np.repeat(np.arange(10), 50)  # 10 classes × 50


def test_long_tailed_class_sizes_decay_exponentially_from_n_max_to_n_max_over_ratio():
    indices = long_tailed_indices(BALANCED_LABELS, imbalance_ratio=10, seed=3)
    counts = np.sort(np.bincount(BALANCED_LABELS[indices], minlength=10))[::-1]
    expected = np.floor(50 * 10.0 ** (-np.arange(10) / 9) + 1e-9).astype(int)
    np.testing.assert_array_equal(counts, expected)
    assert counts[0] == 50 and counts[-1] == 5
    # consecutive ratios are the constant ratio ** (1 / (C - 1)) up to flooring
    assert np.allclose(counts[:-1] / counts[1:], 10 ** (1 / 9), rtol=0.1)


def test_long_tailed_indices_are_unique_sorted_and_the_head_class_depends_on_the_seed():
    heads = set()
    for seed in range(6):
        indices = long_tailed_indices(BALANCED_LABELS, 100, seed)
        assert np.all(np.diff(indices) > 0)
        heads.add(int(np.argmax(np.bincount(BALANCED_LABELS[indices]))))
    assert len(heads) > 1
    np.testing.assert_array_equal(long_tailed_indices(BALANCED_LABELS, 100, 4),
                                  long_tailed_indices(BALANCED_LABELS, 100, 4))


def test_long_tailed_caps_classes_smaller_than_their_target():
    labels = np.array([0] * 30 + [1] * 5 + [2] * 30)
    targets = sorted(long_tailed_sizes(30, 3, 2).tolist())  # [15, 21, 30]
    for seed in range(10):
        counts = np.bincount(labels[long_tailed_indices(labels, 2, seed)], minlength=3)
        rest = list(targets)
        rest.remove(counts[0])
        rest.remove(counts[2])
        assert counts[1] == min(rest[0], 5)


def test_ratio_one_keeps_the_whole_balanced_dataset():
    assert len(long_tailed_indices(BALANCED_LABELS, 1, 0)) == len(BALANCED_LABELS)


def test_balanced_indices_draw_per_class_of_every_class():
    labels = np.random.default_rng(0).integers(0, 7, size=400)
    indices = balanced_indices(labels, per_class=20, seed=1)
    assert len(np.unique(indices)) == len(indices) == 140
    np.testing.assert_array_equal(np.bincount(labels[indices]), np.full(7, 20))


def test_balanced_indices_name_the_classes_that_are_too_small():
    labels = np.array([0] * 10 + [1] * 3)
    with pytest.raises(DataError, match=r"per_class=5: classes \{1: 3\}"):
        balanced_indices(labels, 5, 0)


def test_subsets_reject_continuous_labels():
    with pytest.raises(DataError, match="integer class label"):
        long_tailed_indices(np.linspace(0, 1, 10), 10, 0)


def test_subset_keeps_images_and_labels_aligned(tiny_shapes):
    indices = np.array([5, 2, 40])
    part = subset(tiny_shapes, indices)
    assert len(part) == 3
    assert torch.equal(part.images, tiny_shapes.images[indices])
    for name, values in tiny_shapes.labels.items():
        assert torch.equal(part.labels[name], values[indices])
    assert part.classes == tiny_shapes.classes
    with pytest.raises(DataError, match=r"outside \[0, 64\)"):
        subset(tiny_shapes, np.array([64]))


def test_apply_subset_reports_an_unknown_label(tiny_shapes):
    with pytest.raises(DataError, match=r"subset\.label='colour'"):
        apply_subset(tiny_shapes, SubsetConfig(label="colour"))


def test_pretraining_config_asks_for_a_long_tailed_train_split():
    overrides = ["data.train_size=600", "data.val_size=40", "data.test_size=40",
                 "data.subset={kind: long_tailed, imbalance_ratio: 10, label: shape, seed: 1}"]
    config, _ = load_config(REPO / "configs/methods/moco_v2.yaml", overrides)
    full = load_split(load_config(REPO / "configs/methods/moco_v2.yaml", overrides[:3])[0].data, "train")
    train = load_split(config.data, "train")
    expected = long_tailed_indices(full.labels["shape"].numpy(), 10, 1)
    assert torch.equal(train.images, full.images[expected])
    assert len(load_split(config.data, "test")) == 40  # evaluation splits stay whole


def test_unknown_subset_kind_is_a_config_error():
    with pytest.raises(ConfigError, match=r"subset\.kind='zipf'"):
        load_config(REPO / "configs/methods/moco_v2.yaml", ["data.subset.kind=zipf"])
