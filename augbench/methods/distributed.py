"""Gathers across ranks for negatives and queues; identity when not distributed.

MoCo enqueues the keys of every rank, so its queue is the same on all ranks;
SimCLR and SwAV compare against the embeddings of the global batch, which
needs gradients through the gather: each rank's gradient for every slice is
summed across ranks and sent back to the slice's owner (the behaviour lightly
issue 1528 asks for). torch offers this only through
torch.distributed.nn.functional.all_gather, deprecated in favour of a private
module, hence the small autograd function below (solo-learn's and lightly's
GatherLayer).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def gather_no_grad(tensor: Tensor) -> Tensor:
    """(B, …) on each rank → (world × B, …) in rank order, without gradient (keys for a queue)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_with_grad(tensor: Tensor) -> Tensor:
    """(B, …) on each rank → (world × B, …) in rank order; gradients flow back to the owning rank."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor.contiguous())


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        ctx.batch = len(tensor)
        return gather_no_grad(tensor)

    @staticmethod
    def backward(ctx, gradient: Tensor) -> Tensor:
        # Every rank's loss reads every slice: the owner's gradient is the sum over ranks of its slice's gradient.
        gradient = gradient.contiguous()
        dist.all_reduce(gradient)
        start = rank() * ctx.batch
        return gradient[start : start + ctx.batch]
