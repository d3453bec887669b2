"""The training batch order: a function of (seed, global batch index), sharded over ranks, resumable mid-epoch.

Epoch e is the permutation of the dataset drawn from a generator seeded with
(seed, e), cut into `steps_per_epoch` global batches (the remainder is
dropped). Rank r of W takes slice r of every global batch, so the union over
ranks of step t's batches is the same set of images, in the same order, as
step t's batch of a 1-process run with the same global batch size.

Lightning cannot resume a plain DataLoader mid-epoch (it restarts the epoch's
order from the first batch); this sampler instead starts from `next_batch`,
the number of global batches trained so far, which a checkpoint restores.
torch's DistributedSampler shards per epoch, not per global batch, and has no
mid-epoch position, hence this small sampler.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    def __init__(self, dataset_size: int, global_batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if global_batch_size % world_size:
            raise ValueError(f"global batch {global_batch_size} is not divisible by {world_size} processes")
        if dataset_size < global_batch_size:
            raise ValueError(f"{dataset_size} images are fewer than one global batch of {global_batch_size}")
        self.dataset_size, self.global_batch_size, self.seed = dataset_size, global_batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.local_batch_size = global_batch_size // world_size
        self.steps_per_epoch = dataset_size // global_batch_size
        self.next_batch = 0  # global batches handed out so far, over all epochs

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def global_batch(self, index: int) -> list[int]:
        """The dataset indices of global batch `index` (all ranks together)."""
        epoch, position = divmod(index, self.steps_per_epoch)
        start = position * self.global_batch_size
        return self.epoch_order(epoch)[start : start + self.global_batch_size].tolist()

    def local_slices(self) -> Iterator[tuple[torch.Tensor, slice]]:
        """The epoch's order and this rank's slice of it, for each local batch from `next_batch` to the end of its
        epoch: what `__iter__` hands out as lists, and `augbench.train.device_data` reads on the device."""
        epoch = self.next_batch // self.steps_per_epoch
        order = self.epoch_order(epoch)
        while self.next_batch < (epoch + 1) * self.steps_per_epoch:
            start = (self.next_batch % self.steps_per_epoch) * self.global_batch_size
            start += self.rank * self.local_batch_size
            self.next_batch += 1
            yield order, slice(start, start + self.local_batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        """The local batches from `next_batch` to the end of its epoch."""
        for order, local in self.local_slices():
            yield order[local].tolist()

    def __len__(self) -> int:
        return self.steps_per_epoch
