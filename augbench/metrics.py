"""End-task metrics: each maps (predictions, targets) to one number, with its direction.

Targets come in the kinds a task's `target` names: `class` (N,) integers,
`vector` (N, K) floats, `angle` (N,) degrees, `box` (N, 4) as
(x0, y0, x1, y1), `segmentation` (N, H, W) class maps, `binary_map`
(N, H, W) in {0, 1} and `map` (N, H, W) floats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou


@dataclass(frozen=True)
class Metric:
    compute: Callable[[Tensor, Tensor], float]
    higher_is_better: bool
    targets: tuple[str, ...]


def top1(predictions: Tensor, targets: Tensor) -> float:
    """Accuracy in % of integer class predictions."""
    return (predictions == targets).float().mean().item() * 100


def r2(predictions: Tensor, targets: Tensor) -> float:
    """Coefficient of determination, averaged over output dimensions (scikit-learn's 'uniform_average')."""
    predictions, targets = predictions.reshape(len(targets), -1).double(), targets.reshape(len(targets), -1).double()
    residual = (targets - predictions).pow(2).sum(0)
    total = (targets - targets.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    return (1 - residual / total).mean().item()


def mae(predictions: Tensor, targets: Tensor) -> float:
    return (predictions.reshape(targets.shape) - targets).abs().mean().item()


def angular_error(predictions: Tensor, targets: Tensor) -> float:
    """Mean absolute angle between predicted and true orientations, in degrees (0–180)."""
    difference = (predictions - targets) % 360
    return torch.minimum(difference, 360 - difference).mean().item()


def mean_box_iou(predictions: Tensor, targets: Tensor) -> float:
    """Mean IoU of each predicted box with its own target box (boxes as x0, y0, x1, y1)."""
    x0y0 = torch.minimum(predictions[:, :2], predictions[:, 2:])
    x1y1 = torch.maximum(predictions[:, :2], predictions[:, 2:])
    ordered = torch.cat([x0y0, x1y1], dim=1)
    return torch.stack([box_iou(p[None], t[None])[0, 0] for p, t in zip(ordered, targets)]).mean().item()


def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """(C, C) counts, rows = target class, columns = predicted class."""
    index = targets.reshape(-1).long() * num_classes + predictions.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def miou(predictions: Tensor, targets: Tensor) -> float:
    """Mean intersection-over-union in % over the classes present in targets or predictions."""
    num_classes = int(max(predictions.max(), targets.max())) + 1
    confusion = confusion_matrix(predictions, targets, num_classes).double()
    intersection = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return (intersection[union > 0] / union[union > 0]).mean().item() * 100


def mean_per_class(predictions: Tensor, targets: Tensor) -> float:
    """Mean over the classes in `targets` of each class's accuracy, in %: every class counts alike however many
    test images it has (the transfer metric of Kornblith et al. 2019 for Pets, Flowers-102 and Caltech-101)."""
    num_classes = int(max(predictions.max(), targets.max())) + 1
    confusion = confusion_matrix(predictions, targets, num_classes).double()
    present = confusion.sum(1) > 0
    return (confusion.diag()[present] / confusion.sum(1)[present]).mean().item() * 100


def binary_iou(predictions: Tensor, targets: Tensor) -> float:
    """IoU in % of the positive class of binary maps."""
    predicted, actual = predictions.bool(), targets.bool()
    union = (predicted | actual).sum().item()
    return (predicted & actual).sum().item() / union * 100 if union else 100.0


def l1(predictions: Tensor, targets: Tensor) -> float:
    return (predictions - targets).abs().mean().item()


METRICS: dict[str, Metric] = {
    "top1": Metric(top1, True, ("class",)),
    "mean_per_class": Metric(mean_per_class, True, ("class",)),
    "r2": Metric(r2, True, ("vector",)),
    "mae": Metric(mae, False, ("vector",)),
    "angular_error": Metric(angular_error, False, ("angle",)),
    "box_iou": Metric(mean_box_iou, True, ("box",)),
    "miou": Metric(miou, True, ("segmentation", "binary_map")),
    "iou": Metric(binary_iou, True, ("binary_map",)),
    "l1": Metric(l1, False, ("map",)),
}
TARGETS = ("class", "vector", "angle", "box", "segmentation", "binary_map", "map")
PIXEL_TARGETS = ("segmentation", "binary_map", "map")
