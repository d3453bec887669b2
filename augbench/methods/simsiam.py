"""SimSiam: BYOL without the momentum target; a stop-gradient alone prevents collapse.

Chen & He, "Exploring Simple Siamese Representation Learning" (CVPR 2021;
official code facebookresearch/simsiam, main_simsiam.py). A preset of the
two-branch method (methods/two_branch.py):

- no momentum target, `stop_gradient: true`: the target is the online
  branch's own projection, detached;
- `negatives: none` with `regression_loss: negative_cosine`, −cos(p, z);
- `symmetric: true` with `pair_reduction: mean`: −(D(p1, z2) + D(p2, z1)) / 2,
  Algorithm 1 of the paper;
- a predictor (2048-512-BN-ReLU-2048) and a 3-layer 2048-d projector with
  BatchNorm on every layer, the output's without scale and shift.

The official `--fix-pred-lr` is an optimiser setting: `optim.fixed_predictor_lr`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from augbench.methods.momentum import MomentumConfig
from augbench.methods.two_branch import TwoBranchConfig
from augbench.models.heads import PredictorConfig, ProjectorConfig


@dataclass
class SimSiamConfig(TwoBranchConfig):
    name: str = "simsiam"
    negatives: str = "none"
    symmetric: bool = True
    pair_reduction: str = "mean"
    stop_gradient: bool = True
    regression_loss: str = "negative_cosine"
    shuffle_bn: int = 0
    projector: ProjectorConfig = field(default_factory=lambda: ProjectorConfig(
        num_layers=3, hidden_dim=2048, out_dim=2048, bn=True, last_bn=True))
    predictor: PredictorConfig = field(default_factory=lambda: PredictorConfig(enabled=True, hidden_dim=512, bn=True))
    momentum: MomentumConfig = field(default_factory=lambda: MomentumConfig(enabled=False))
