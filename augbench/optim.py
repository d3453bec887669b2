"""Optimisers (SGD, LARS, AdamW) with the field's parameter-group conventions, and the warm-up cosine or multistep
schedule."""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import partial

import torch
from timm.optim import Lars
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULES = ("cosine", "multistep")
MULTISTEP_FACTOR = 0.1  # the rate's factor at each milestone: LooC's SGD and the standard linear protocol alike


@dataclass
class OptimConfig:
    """`lr` is the rate for a global batch of 256: the rate used is lr × batch_size / 256.

    `exclude_bn_bias` gives BatchNorm parameters and biases no weight decay
    and, under LARS, no trust-ratio adaptation (BYOL's and SimCLR's convention).
    `bn_bias_lr` is, with `exclude_bn_bias`, their own rate per 256 images
    (Barlow Twins' `--learning-rate-biases`); unset, they take `lr`.
    `fixed_predictor_lr` keeps the predictor at the base rate while the rest
    warms up and decays (SimSiam's `--fix-pred-lr`).
    `schedule` follows the warm-up: `cosine` decay to `min_lr_ratio`, or
    `multistep`, the rate ×0.1 at each of `milestones`, given as fractions of
    the run so a preset keeps its shape at any budget (LooC's ×0.1 at epochs
    300 and 400 of 500 is [0.6, 0.8]).
    """

    name: str = "sgd"
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    exclude_bn_bias: bool = False
    trust_coefficient: float = 0.001
    bn_bias_lr: float | None = None
    fixed_predictor_lr: bool = False
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=list)

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"name={self.name!r}: expected one of {OPTIMIZERS}")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr}: must be positive")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={self.warmup_epochs}: must not be negative")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}: expected one of {SCHEDULES}")
        if self.schedule == "multistep" and (not self.milestones or list(self.milestones) != sorted(self.milestones)
                                             or not 0 < self.milestones[0] <= self.milestones[-1] < 1):
            raise ValueError(f"milestones={list(self.milestones)}: schedule='multistep' needs fractions of the run in "
                             "(0, 1), in increasing order, e.g. [0.6, 0.8] for epochs 300 and 400 of 500")
        if self.milestones and self.schedule != "multistep":
            raise ValueError(f"milestones={list(self.milestones)}: read only with schedule='multistep', not "
                             f"{self.schedule!r}")
        if self.bn_bias_lr is not None and (self.bn_bias_lr <= 0 or not self.exclude_bn_bias):
            raise ValueError(f"bn_bias_lr={self.bn_bias_lr}: a positive rate for the BN and bias group, which needs "
                             "exclude_bn_bias=true")
        if self.name == "lars" and self.weight_decay == 0:
            # timm's Lars adapts only the groups with weight decay (that is how BN and biases are excluded).
            raise ValueError("weight_decay=0 with name='lars': timm's LARS would adapt no parameter and run as plain "
                             "momentum SGD; give a weight decay, or choose name='sgd'")


def parameter_groups(module: nn.Module, weight_decay: float, exclude_bn_bias: bool,
                     fixed_lr: Collection[nn.Parameter] = (), bn_bias_lr: float | None = None) -> list[dict]:
    """Trainable parameters in one group, or two when BN weights and biases (all 1-d tensors) are excluded, those at
    `bn_bias_lr` when given; the `fixed_lr` ones in groups of their own, marked `fixed_lr` for build_scheduler."""
    fixed_ids = {id(p) for p in fixed_lr}
    groups = []
    for fixed in (False, True):
        params = [p for p in module.parameters() if p.requires_grad and (id(p) in fixed_ids) == fixed]
        if fixed and not params:
            continue
        marks = {"fixed_lr": True} if fixed else {}
        if not exclude_bn_bias:
            groups.append({"params": params, "weight_decay": weight_decay, **marks})
            continue
        groups += [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, **marks},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, **marks,
             **({"lr": bn_bias_lr} if bn_bias_lr is not None else {})},
        ]
    return groups


def build_optimizer(module: nn.Module, config: OptimConfig, global_batch_size: int, fused: bool = False
                    ) -> torch.optim.Optimizer:
    """`fused`: torch's one-kernel SGD and AdamW steps, for parameters on a CUDA device (the same update as the
    per-tensor loop, within rounding); timm's LARS has no fused form and ignores it."""
    lr = config.lr * global_batch_size / 256
    fixed_lr = []
    if config.fixed_predictor_lr:
        fixed_lr = list(getattr(module, "predictor_parameters", list)())
        if not fixed_lr:
            raise ValueError(f"optim.fixed_predictor_lr=true, but {type(module).__name__} has no predictor")
    bn_bias_lr = None if config.bn_bias_lr is None else config.bn_bias_lr * global_batch_size / 256
    groups = parameter_groups(module, config.weight_decay, config.exclude_bn_bias, fixed_lr, bn_bias_lr)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, fused=fused or None)
    if config.name == "lars":
        # timm's LARS skips the trust ratio for groups without weight decay, which is the exclusion we want.
        return Lars(groups, lr=lr, momentum=config.momentum, trust_coeff=config.trust_coefficient)
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate factor: linear warm-up from 0 over `warmup_steps`, then cosine decay to `min_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_multistep(step: int, warmup_steps: int, milestone_steps: list[int], factor: float = MULTISTEP_FACTOR
                     ) -> float:
    """Learning-rate factor: linear warm-up from 0 over `warmup_steps`, then `factor` to the power of the number of
    milestones reached."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return factor ** sum(step >= milestone for milestone in milestone_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, steps_per_epoch: int, total_steps: int):
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    if warmup_steps >= total_steps:
        warnings.warn(f"optim.warmup_epochs={config.warmup_epochs} spans the whole run ({total_steps} steps): the "
                      "learning rate rises until the last step and never decays; shorten the warm-up for short runs",
                      stacklevel=2)
    if config.schedule == "multistep":
        milestone_steps = [round(fraction * total_steps) for fraction in config.milestones]
        schedule = partial(warmup_multistep, warmup_steps=warmup_steps, milestone_steps=milestone_steps)
    else:
        schedule = partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps,
                           min_ratio=config.min_lr_ratio)
    return LambdaLR(optimizer, [constant if group.get("fixed_lr") else schedule for group in optimizer.param_groups])


def constant(step: int) -> float:
    return 1.0
