"""MoCo's queue of negative keys, kept as buffers so checkpoints carry it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Queue(nn.Module):
    """A ring buffer of up to `size` L2-normalised keys (size, dim).

    MoCo fills its queue with random unit vectors; until real keys replace
    them, every negative is uninformative and the loss only pulls positives
    together, which collapses the embedding of small, short runs. Here
    `negatives()` returns only the keys pushed so far.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def negatives(self) -> Tensor:
        """The keys pushed so far, (min(pushed, size), dim); a copy, safe to use across the next push."""
        return self.keys[: int(self.filled)].clone()

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        """Overwrite the oldest entries with `keys` (B, dim), wrapping around the end."""
        keys = F.normalize(keys.detach(), dim=1)[-len(self.keys) :]
        positions = (self.pointer + torch.arange(len(keys), device=keys.device)) % len(self.keys)
        self.keys[positions] = keys.to(self.keys.dtype)
        self.pointer.copy_((self.pointer + len(keys)) % len(self.keys))
        self.filled.clamp_(max=len(self.keys) - len(keys)).add_(len(keys))
