"""Gathers across ranks for negatives and queues; identity when not distributed.

MoCo enqueues the keys of every rank, so its queue is the same on all ranks;
SimCLR and SwAV compare against the embeddings of the global batch, which
needs gradients through the gather (torch.distributed.nn's all_gather sends
each rank's gradient back to its owner, the behaviour lightly issue 1528 asks
for).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
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
    return torch.cat(dist_nn.all_gather(tensor.contiguous()))
