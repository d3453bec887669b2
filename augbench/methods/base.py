"""What every method is to the trainer: views in, a dict of losses and logs out.

A method's config may also tell the trainer, through optional methods that the
trainer asks for by name (so that train/ names no method):

- `check_views(views)`: refuse an `augment` section the config contradicts
  (HAI: an assignment to an untapped stage).
- `runs_backbone_by_stage() -> str | None`: the setting under which the method
  reads the backbone's stages rather than calling its forward (which
  `trainer.compile_model` compiles), if any.
- `missing_features() -> str | None`: why the method's forward returns no
  `features` (which the online linear classifier reads), if it does not.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from augbench.augment.views import View


def embedding_spread(embeddings: Tensor) -> Tensor:
    """A method's `embedding_std` for the trainer's collapse check: the mean over dimensions of the per-dimension
    std of the L2-normalised embeddings (B, D); about 1/√D when healthy, 0 when every image maps to one point."""
    return F.normalize(embeddings, dim=1).std(dim=0).mean()


class Method(nn.Module):
    """A self-supervised objective over a backbone.

    `forward(views)` returns a dict with the scalar `loss` to minimise, named
    detached logs, and `features`: the detached `encoder()` features (B, D)
    of the first view, which the online linear probe reads (not logged).
    `update_target(progress)` runs after each optimiser step, with `progress`
    in [0, 1] the fraction of training done.
    `encoder()` is the module downstream tasks read: images in [0, 1] (B, 3,
    H, W) → features (B, D).

    `views_kind` is the kind of views it trains on (`augment.views`, see
    `augbench.augment.kinds`); `build` makes it from its config and that
    views config, of which most methods read nothing.
    """

    backbone: nn.Module
    # The dataset label a supervised method learns: the trainer then calls `forward(views, targets)` with the
    # batch's labels (B,) and, once the data is loaded, `set_num_classes`. None for self-supervised methods.
    label: str | None = None
    views_kind: ClassVar[str] = "two_view"

    @classmethod
    def build(cls, backbone: nn.Module, config: Any, views: Any) -> Method:
        return cls(backbone, config)

    def forward(self, views: list[View]) -> dict[str, Tensor]:
        raise NotImplementedError

    def set_num_classes(self, num_classes: int) -> None:
        """The number of classes of `label` in the training split, for methods that read one; the trainer sets it."""

    def update_target(self, progress: float) -> dict[str, float]:
        return {}

    def encoder(self) -> nn.Module:
        return self.backbone

    def set_steps_per_epoch(self, steps: int) -> None:
        """The epoch length in optimiser steps, for methods whose settings count epochs; the trainer sets it."""

    def predictor_parameters(self) -> list[nn.Parameter]:
        """The online predictor's parameters, for `optim.fixed_predictor_lr`; none for methods without one."""
        return []
