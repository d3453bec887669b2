"""SimCLR: one network on both views, NT-Xent with the batch's other embeddings as negatives.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive
Learning of Visual Representations" (ICML 2020; official code
google-research/simclr). A preset of the two-branch method
(methods/two_branch.py):

- no momentum target and `stop_gradient: false`: shared weights, gradients
  through both views;
- `negatives: batch`: NT-Xent over the 2N − 2 other embeddings of the batch,
  τ = 0.1 on ImageNet (0.5 on CIFAR);
- `symmetric: true` with `pair_reduction: mean`: the loss over all 2N anchors,
  as the official code averages it;
- no predictor; a 2048-2048-BN-ReLU-128 projector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from augbench.methods.momentum import MomentumConfig
from augbench.methods.two_branch import TwoBranchConfig
from augbench.models.heads import ProjectorConfig


@dataclass
class SimCLRConfig(TwoBranchConfig):
    name: str = "simclr"
    negatives: str = "batch"
    temperature: float = 0.1
    symmetric: bool = True
    pair_reduction: str = "mean"
    stop_gradient: bool = False
    shuffle_bn: int = 0
    projector: ProjectorConfig = field(
        default_factory=lambda: ProjectorConfig(num_layers=2, hidden_dim=2048, out_dim=128, bn=True))
    momentum: MomentumConfig = field(default_factory=lambda: MomentumConfig(enabled=False))
