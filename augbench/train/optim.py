"""Optimisers (SGD, LARS, AdamW) with the field's parameter-group conventions, and the warm-up cosine schedule."""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from functools import partial

import torch
from timm.optim import Lars
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

OPTIMIZERS = ("sgd", "lars", "adamw")


@dataclass
class OptimConfig:
    """`lr` is the rate for a global batch of 256: the rate used is lr × batch_size / 256.

    `exclude_bn_bias` gives BatchNorm parameters and biases no weight decay
    and, under LARS, no trust-ratio adaptation (BYOL's and SimCLR's convention).
    `fixed_predictor_lr` keeps the predictor at the base rate while the rest
    warms up and decays (SimSiam's `--fix-pred-lr`).
    """

    name: str = "sgd"
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    exclude_bn_bias: bool = False
    trust_coefficient: float = 0.001
    fixed_predictor_lr: bool = False

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"name={self.name!r}: expected one of {OPTIMIZERS}")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr}: must be positive")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={self.warmup_epochs}: must not be negative")
        if self.name == "lars" and self.weight_decay == 0:
            # timm's Lars adapts only the groups with weight decay (that is how BN and biases are excluded).
            raise ValueError("weight_decay=0 with name='lars': timm's LARS would adapt no parameter and run as plain "
                             "momentum SGD; give a weight decay, or choose name='sgd'")


def parameter_groups(module: nn.Module, weight_decay: float, exclude_bn_bias: bool,
                     fixed_lr: Collection[nn.Parameter] = ()) -> list[dict]:
    """Trainable parameters in one group, or two when BN weights and biases (all 1-d tensors) are excluded; the
    `fixed_lr` ones in groups of their own, marked `fixed_lr` for build_scheduler."""
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
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, **marks},
        ]
    return groups


def build_optimizer(module: nn.Module, config: OptimConfig, global_batch_size: int) -> torch.optim.Optimizer:
    lr = config.lr * global_batch_size / 256
    fixed_lr = []
    if config.fixed_predictor_lr:
        fixed_lr = list(getattr(module, "predictor_parameters", list)())
        if not fixed_lr:
            raise ValueError(f"optim.fixed_predictor_lr=true, but {type(module).__name__} has no predictor")
    groups = parameter_groups(module, config.weight_decay, config.exclude_bn_bias, fixed_lr)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    if config.name == "lars":
        # timm's LARS skips the trust ratio for groups without weight decay, which is the exclusion we want.
        return Lars(groups, lr=lr, momentum=config.momentum, trust_coeff=config.trust_coefficient)
    return torch.optim.AdamW(groups, lr=lr)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate factor: linear warm-up from 0 over `warmup_steps`, then cosine decay to `min_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, steps_per_epoch: int, total_steps: int):
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    if warmup_steps >= total_steps:
        warnings.warn(f"optim.warmup_epochs={config.warmup_epochs} spans the whole run ({total_steps} steps): the "
                      "learning rate rises until the last step and never decays; shorten the warm-up for short runs",
                      stacklevel=2)
    schedule = partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=config.min_lr_ratio)
    return LambdaLR(optimizer, [constant if group.get("fixed_lr") else schedule for group in optimizer.param_groups])


def constant(step: int) -> float:
    return 1.0
