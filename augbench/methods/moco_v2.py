"""MoCo v2: a momentum encoder, a queue of negatives, one-way InfoNCE.

Chen, Fan, Girshick & He, "Improved Baselines with Momentum Contrastive
Learning" (arXiv 2003.04297, 2020; official code facebookresearch/moco,
moco/builder.py). A preset of the two-branch method (methods/two_branch.py):

- `momentum`: the key encoder is an EMA of the query encoder, m = 0.999;
- `negatives: queue`: InfoNCE (τ = 0.2) against a queue of 65,536 past keys,
  started with random unit keys (`MoCo.__init__`: randn, then normalised);
- `symmetric: false`: one direction, q of view 1 against k of view 2
  (`pair_reduction: sum` is then inert; with `symmetric: true` it sums the
  two directions, as the study's MoCo v2+, revisitAIRL exp/mocov2_plus.py);
- no predictor; a 2048-2048-128 projector without BatchNorm;
- `shuffle_bn: 8`: Shuffle BN over the 8 per-GPU sub-batches of the paper's
  8 GPUs (the official single-GPU demo splits the batch in 8 too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from augbench.methods.momentum import MomentumConfig
from augbench.methods.two_branch import TwoBranchConfig


@dataclass
class MoCoV2Config(TwoBranchConfig):
    name: str = "moco_v2"
    negatives: str = "queue"
    queue_size: int = 65_536
    queue_init: str = "random"
    temperature: float = 0.2
    symmetric: bool = False
    pair_reduction: str = "sum"
    shuffle_bn: int = 8
    momentum: MomentumConfig = field(default_factory=lambda: MomentumConfig(enabled=True, base=0.999, final=0.999))
