"""MoCo's queue of negative keys, kept as buffers so checkpoints carry it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augbench.methods.host_counters import HostCounters

QUEUE_INITS = ("random", "empty")


class Queue(HostCounters, nn.Module):
    """A ring buffer of `size` L2-normalised keys (size, dim).

    `init="random"` starts it full of random unit vectors, as MoCo's code
    does (facebookresearch/moco, moco/builder.py: `torch.randn(dim, K)`, then
    normalised), drawn from torch's global generator: from step 1 the loss is
    about ln(K) and every negative pushes. `init="empty"` starts it empty and
    `negatives()` returns only the keys pushed so far: the one-way loss and
    every gradient are 0 at step 1, and until real keys replace the random
    ones nothing uninformative is contrasted against.
    """

    def __init__(self, size: int, dim: int, init: str = "random"):
        super().__init__()
        if init not in QUEUE_INITS:
            raise ValueError(f"queue_init={init!r}: expected one of {QUEUE_INITS}")
        keys = F.normalize(torch.randn(size, dim), dim=1) if init == "random" else torch.zeros(size, dim)
        self.register_buffer("keys", keys)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.tensor(size if init == "random" else 0, dtype=torch.long))

    def negatives(self) -> Tensor:
        """The keys held, (min(pushed, size), dim) when started empty; a copy, safe to use across the next push."""
        return self.keys[: self.host_int("filled")].clone()

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        """Overwrite the oldest entries with `keys` (B, dim), wrapping around the end."""
        keys = F.normalize(keys.detach(), dim=1)[-len(self.keys) :]
        filled = self.host_int("filled")
        positions = (self.pointer + torch.arange(len(keys), device=keys.device)) % len(self.keys)
        self.keys[positions] = keys.to(self.keys.dtype)
        self.pointer.copy_((self.pointer + len(keys)) % len(self.keys))
        self.filled.clamp_(max=len(self.keys) - len(keys)).add_(len(keys))
        self.set_host_int("filled", min(filled, len(self.keys) - len(keys)) + len(keys))
