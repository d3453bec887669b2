"""MoCo's Shuffle BN on one process: BatchNorm over sub-batches, the key encoder's input shuffled across them.

He et al. (MoCo, CVPR 2020, §3.3) found that a query and its positive key
normalised with the same batch statistics let the model "cheat" the pretext
task through BatchNorm: both carry the batch's signature, which the queue's
negatives, from other batches, lack. Their code computes BatchNorm per GPU
and shuffles the key encoder's input across GPUs, so a query's statistics and
its key's come from different subsets of the batch. With `splits` sub-batches
standing for GPUs, `SplitBatchNorm2d` gives each its own statistics (in both
encoders, as per-GPU BatchNorm does) and `shuffled` runs the key encoder on a
permuted batch, as MoCo's single-GPU CIFAR demo does (`SplitBatchNorm`,
`bn_splits=8`). Per-GPU BatchNorm splits every BN layer the query and key
pass through, so the projector's and predictor's BatchNorm1d split too.
`ShuffleBN` is the switch as a method holds it.

Written here rather than taken from lightly (a peer in the benchmarks only):
its SplitBatchNorm views the batch as (N / splits, C · splits, H, W), which a
channels-last tensor cannot be viewed as; this one normalises each sub-batch
with the fused kernel, in any memory layout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augbench.methods.host_counters import HostCounters


class _SplitBatchNorm:
    """BatchNorm whose training batches are normalised in `splits` equal, consecutive sub-batches, each with its own
    statistics; the running statistics are the mean of the sub-batches' updates. In eval mode it is BatchNorm, and
    its parameters and buffers are BatchNorm's, so saved encoders load into a plain model."""

    splits: int

    def forward(self, inputs: Tensor) -> Tensor:
        if not self.training or self.splits == 1:
            return super().forward(inputs)
        if len(inputs) % self.splits:
            raise ValueError(f"method.shuffle_bn={self.splits}: a batch of {len(inputs)} images does not split into "
                             f"{self.splits} equal sub-batches; make the per-device batch size a multiple of it")
        self._check_input_dim(inputs)
        running = [(self.running_mean.clone(), self.running_var.clone()) for _ in range(self.splits)]
        parts = [F.batch_norm(part, mean, var, self.weight, self.bias, True, self.momentum, self.eps)
                 for part, (mean, var) in zip(inputs.chunk(self.splits), running)]
        with torch.no_grad():
            self.running_mean.copy_(torch.stack([mean for mean, _ in running]).mean(dim=0))
            self.running_var.copy_(torch.stack([var for _, var in running]).mean(dim=0))
            self.num_batches_tracked.add_(1)
        return torch.cat(parts)


class SplitBatchNorm2d(_SplitBatchNorm, nn.BatchNorm2d):
    """A backbone's BatchNorm2d, in sub-batches."""

    def __init__(self, num_features: int, splits: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.splits = splits


class SplitBatchNorm1d(_SplitBatchNorm, nn.BatchNorm1d):
    """A projector's or predictor's BatchNorm1d, in sub-batches: per-GPU BatchNorm splits the heads too."""

    def __init__(self, num_features: int, splits: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.splits = splits


SPLIT = {nn.BatchNorm2d: SplitBatchNorm2d, nn.BatchNorm1d: SplitBatchNorm1d}


def split_batchnorm(module: nn.Module, splits: int) -> nn.Module:
    """`module` with each BatchNorm2d and BatchNorm1d replaced, in place, by its split version holding the same
    state."""
    for name, child in module.named_children():
        if type(child) in SPLIT:
            if child.momentum is None:
                raise ValueError(f"{name}: method.shuffle_bn needs BatchNorm with a momentum, not a cumulative average")
            split = SPLIT[type(child)](child.num_features, splits, eps=child.eps, momentum=child.momentum,
                                       affine=child.affine, track_running_stats=child.track_running_stats)
            split.load_state_dict(child.state_dict())
            setattr(module, name, split.to(device=child.weight.device if child.affine else None))
        else:
            split_batchnorm(child, splits)
    return module


class ShuffleBN(HostCounters, nn.Module):
    """A method's `shuffle_bn` switch: `splits` > 1 sub-batches, or off (0 or 1), where every call passes through.

    On, it counts optimiser steps in a buffer, so checkpoints carry it; off,
    it holds no state, so a method's checkpoints are as before the switch.
    """

    def __init__(self, splits: int):
        super().__init__()
        self.splits = splits
        if self.on:
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @property
    def on(self) -> bool:
        return self.splits > 1

    def convert(self, module: nn.Module) -> nn.Module:
        """The module (a backbone or a head) with split BatchNorm, before any copy of it is made."""
        return split_batchnorm(module, self.splits) if self.on else module

    def encode(self, encode: Callable[[Tensor], Tensor | list[Tensor]], images: Tensor, view: int, views: int
               ) -> Tensor | list[Tensor]:
        """encode(images) of key view `view` of `views` per step, shuffled across the sub-batches when on."""
        return shuffled(encode, images, views * self.host_int("steps") + view) if self.on else encode(images)

    def step(self) -> None:
        """After each optimiser step: the next step draws new permutations."""
        if self.on:
            steps = self.host_int("steps")
            self.steps += 1
            self.set_host_int("steps", steps + 1)


def shuffled(encode: Callable[[Tensor], Tensor | list[Tensor]], images: Tensor, step: int) -> Tensor | list[Tensor]:
    """encode(images) (a tensor, or a list of them) computed on a random permutation of the batch, returned in the
    batch's order.

    The permutation is drawn from a generator seeded with the training `step`
    (a checkpointed counter): the same on every rank, the same after a resume,
    and no draw from torch's global generator, whose stream stays what it
    would be without Shuffle BN.
    """
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(step)).to(images.device)
    restore = torch.argsort(order)
    encoded = encode(images[order])
    return [part[restore] for part in encoded] if isinstance(encoded, list) else encoded[restore]
