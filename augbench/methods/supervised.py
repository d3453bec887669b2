"""Supervised pretraining: cross-entropy on a class label of the pretraining data.

ViRB (Kotar et al., ICCV 2021) sets self-supervised encoders against a
supervised one of the same architecture; this is that encoder here. The
backbone and the augmentation are those of the self-supervised presets (the
recipe's views), and a linear layer on the pooled features predicts `label`,
a class label of the dataset (unset: its first label, Shapes World's `shape`,
digits' `digit`, `class` on disk; the run's config records the one chosen):

    L = CE(W · backbone(view) + b, y)

`trained_views`: `both` (default) puts each of the recipe's views of an image into
the batch as its own sample, so per step the backbone sees, and back-propagates
through, the same 2B augmented images a symmetric self-supervised preset does:
the comparison holds the augmented images and the compute equal. `first`
trains on the first view only (one augmentation per image per step, as
standard supervised training does) at half the cost.

The classifier's width is the number of classes of `label` in the training
split (its largest value + 1, as the online linear monitor counts them), which
the trainer sets (`set_num_classes`) once the data is loaded. Images whose
label is negative (STL-10's unlabelled split) take no part in the loss.
Downstream tasks read the backbone, as for every other method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augbench.augment.views import View
from augbench.methods.base import Method

VIEWS_TRAINED = ("both", "first")


@dataclass
class SupervisedConfig:
    name: str = "supervised"
    label: str | None = None  # null: the dataset's first label (shapes_world: shape, digits: digit, on disk: class)
    trained_views: str = "both"

    def __post_init__(self):
        if self.trained_views not in VIEWS_TRAINED:
            raise ValueError(f"trained_views={self.trained_views!r}: expected one of {VIEWS_TRAINED}")


class SupervisedMethod(Method):
    def __init__(self, backbone: nn.Module, config: SupervisedConfig):
        super().__init__()
        self.config = config
        self.label = config.label
        self.backbone = backbone
        self.classifier: nn.Linear | None = None

    def set_num_classes(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"method.label={self.label!r}: the training split has {num_classes} class(es); "
                             "cross-entropy needs at least 2")
        self.classifier = nn.Linear(self.backbone.out_dim, num_classes)

    def forward(self, views: list[View], targets: Tensor | None = None) -> dict[str, Tensor]:
        if self.classifier is None or targets is None:
            raise RuntimeError("the supervised method needs set_num_classes() before training and the batch's "
                               f"{self.label!r} labels in forward(); augbench's trainer provides both")
        used = views if self.config.trained_views == "both" else views[:1]
        features = [self.backbone(view.images) for view in used]  # (B, D) each
        logits = self.classifier(torch.cat(features))  # (V·B, C)
        targets = targets.repeat(len(used))
        # Unlabelled images (label −1) weigh nothing. The mean over the labelled ones divides by their count on the
        # device rather than asking whether there are any (a read-back each step); with none, the loss is 0 and
        # every parameter still takes part, as DDP requires.
        per_image = F.cross_entropy(logits, targets.clamp_min(0), reduction="none")
        labelled = (targets >= 0).to(per_image.dtype)
        count = labelled.sum().clamp_min(1)
        loss = (per_image * labelled).sum() / count
        with torch.no_grad():
            accuracy = ((logits.argmax(dim=1) == targets).to(per_image.dtype) * labelled).sum() / count * 100
        return {"loss": loss, "accuracy": accuracy, "features": features[0].detach()}
