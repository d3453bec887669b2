import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, jaccard_score, r2_score

from augbench.metrics import angular_error, binary_iou, mean_box_iou, mean_per_class, miou, r2, top1


def test_r2_matches_scikit_learn_uniform_average():
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(50, 3))
    predictions = targets + rng.normal(scale=0.5, size=(50, 3))
    assert r2(torch.from_numpy(predictions), torch.from_numpy(targets)) == pytest.approx(
        r2_score(targets, predictions), abs=1e-9)


def test_miou_matches_scikit_learn_macro_jaccard():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 4, size=(6, 8, 8))
    predictions = np.where(rng.random((6, 8, 8)) < 0.7, targets, rng.integers(0, 4, size=(6, 8, 8)))
    expected = jaccard_score(targets.ravel(), predictions.ravel(), average="macro") * 100
    assert miou(torch.from_numpy(predictions), torch.from_numpy(targets)) == pytest.approx(expected)
    positive = (targets > 1).astype(int), (predictions > 1).astype(int)
    assert binary_iou(torch.from_numpy(positive[1]), torch.from_numpy(positive[0])) == pytest.approx(
        jaccard_score(positive[0].ravel(), positive[1].ravel()) * 100)


def test_angular_error_wraps_around_the_circle():
    assert angular_error(torch.tensor([359.0, 10.0, 90.0]), torch.tensor([1.0, 350.0, 270.0])) == pytest.approx(
        (2 + 20 + 180) / 3)


def test_box_iou_of_known_boxes_and_of_corner_swapped_predictions():
    targets = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]])
    predictions = torch.tensor([[0.0, 0.0, 0.5, 0.25], [0.6, 0.6, 0.2, 0.2]])  # half the box; corners swapped
    assert mean_box_iou(predictions, targets) == pytest.approx((0.5 + 1.0) / 2)


def test_top1_is_a_percentage():
    assert top1(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 0])) == 50.0


def test_mean_per_class_matches_scikit_learn_balanced_accuracy_and_differs_from_top1_on_imbalanced_classes():
    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1, 2, 4], [60, 25, 10, 5])  # class 3 absent from the targets, predicted now and then
    predictions = np.where(rng.random(100) < 0.7, targets, rng.integers(0, 5, 100))
    value = mean_per_class(torch.from_numpy(predictions), torch.from_numpy(targets))
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = balanced_accuracy_score(targets, predictions) * 100
    assert value == pytest.approx(expected)
    assert abs(value - top1(torch.from_numpy(predictions), torch.from_numpy(targets))) > 1
