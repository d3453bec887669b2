"""Barlow Twins: redundancy reduction between the embeddings of two views.

Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning
via Redundancy Reduction" (ICML 2021; official code facebookresearch/barlowtwins).
Both views go through one network (shared weights, no predictor, no target
copy, gradients through both branches): z = projector(backbone(view)), and the
loss drives the cross-correlation of the two views' batch-standardised
embeddings to the identity:

    L = Σ_i (1 − C_ii)² + λ·Σ_i Σ_{j≠i} C_ij²      (losses.cross_correlation)

The loss is symmetric in the two views by construction, so one pair is all.
It is a point of the two-branch method's design space (two_branch.py: no
negatives, shared weights, `regression_loss: cross_correlation`); this module
names it and holds its switches, and `two_branch()` gives HAI that point as
its `base_method`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from augbench.methods.momentum import MomentumConfig
from augbench.methods.two_branch import TwoBranchConfig, TwoBranchMethod
from augbench.models.heads import PredictorConfig, ProjectorConfig


def _official_projector() -> ProjectorConfig:
    # facebookresearch/barlowtwins main.py: --projector 8192-8192-8192, Linear (no bias) + BN + ReLU on the hidden
    # layers, a plain Linear out.
    return ProjectorConfig(num_layers=3, hidden_dim=8192, out_dim=8192, bn=True, last_bn=False)


@dataclass
class BarlowTwinsConfig:
    """`off_diagonal_weight` is λ (0.0051 for an 8192-d projector in the paper); `projector` the head."""

    name: str = "barlow_twins"
    off_diagonal_weight: float = 0.0051
    projector: ProjectorConfig = field(default_factory=_official_projector)

    def __post_init__(self):
        if self.off_diagonal_weight < 0:
            raise ValueError(f"off_diagonal_weight={self.off_diagonal_weight}: λ must not be negative")

    def two_branch(self) -> TwoBranchConfig:
        """The same method as a point of the two-branch design space."""
        return TwoBranchConfig(
            negatives="none", symmetric=False, stop_gradient=False, regression_loss="cross_correlation",
            off_diagonal_weight=self.off_diagonal_weight, projector=self.projector,
            predictor=PredictorConfig(enabled=False), momentum=MomentumConfig(enabled=False),
        )


class BarlowTwinsMethod(TwoBranchMethod):
    """Barlow Twins as the two-branch method runs it: one network on both views, the cross-correlation loss between
    them."""

    def __init__(self, backbone: nn.Module, config: BarlowTwinsConfig):
        super().__init__(backbone, config.two_branch())
