"""BYOL: an online network predicts the projection of an EMA target, without negatives.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning" (NeurIPS 2020; official code google-deepmind/byol). A preset of the
two-branch method (methods/two_branch.py):

- `negatives: none` with `regression_loss: normalized_mse`, 2 − 2·cos(q, k);
- `symmetric: true`, the two directions summed (`pair_reduction: sum`,
  L + L̃ of the paper's eq. 2);
- a predictor on the online branch only (256-4096-BN-ReLU-256) and a
  2048-4096-BN-ReLU-256 projector;
- `momentum`: the target is an EMA of backbone and projector, τ from 0.996
  to 1 on a cosine over training; no Shuffle BN (there is no queue to leak to).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from augbench.methods.momentum import MomentumConfig
from augbench.methods.two_branch import TwoBranchConfig
from augbench.models.heads import PredictorConfig, ProjectorConfig


@dataclass
class BYOLConfig(TwoBranchConfig):
    name: str = "byol"
    negatives: str = "none"
    symmetric: bool = True
    pair_reduction: str = "sum"
    stop_gradient: bool = True
    regression_loss: str = "normalized_mse"
    shuffle_bn: int = 0
    projector: ProjectorConfig = field(
        default_factory=lambda: ProjectorConfig(num_layers=2, hidden_dim=4096, out_dim=256, bn=True))
    predictor: PredictorConfig = field(default_factory=lambda: PredictorConfig(enabled=True, hidden_dim=4096, bn=True))
    momentum: MomentumConfig = field(default_factory=lambda: MomentumConfig(enabled=True, base=0.996, final=1.0))
