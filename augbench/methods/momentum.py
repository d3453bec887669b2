"""Momentum (EMA) targets: the update and the schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MomentumConfig:
    """EMA target: m goes from `base` to `final` on a cosine over training (constant when equal)."""

    enabled: bool = True
    base: float = 0.99
    final: float = 0.99

    def __post_init__(self):
        for key in ("base", "final"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"momentum.{key}={getattr(self, key)}: must be in [0, 1]")


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """θ_target ← m·θ_target + (1 − m)·θ_online, for parameters; buffers (BN statistics) stay the target's own."""
    target_params = [p.data for p in target.parameters()]
    online_params = [p.data for p in online.parameters()]
    torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)


def cosine_momentum(base: float, final: float, progress: float) -> float:
    """BYOL's schedule τ = final − (final − base)·(cos(π·progress) + 1)/2; constant when base == final."""
    progress = min(max(progress, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
