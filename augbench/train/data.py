"""The training data as Lightning's data module: global batches in a resumable order."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from augbench.config import ConfigError
from augbench.data import ImageDataset
from augbench.train.device_data import DeviceBatches, resolve_on_device
from augbench.train.sampler import ResumableBatchSampler


class TrainData(L.LightningDataModule):
    """Batches from a ResumableBatchSampler; its position (global batches trained) travels in checkpoints."""

    # Lightning files the data module's state under its class's qualified name, and on resume passes over a state
    # it does not find under it: this is the name checkpoints have carried it under, so theirs resume in order.
    __qualname__ = "_TrainData"

    def __init__(self, dataset: ImageDataset, batch_size: int, num_workers: int, seed: int, on_device="auto"):
        super().__init__()
        self.dataset, self.batch_size, self.num_workers, self.seed = dataset, batch_size, num_workers, seed
        self.on_device = on_device
        self.next_batch = 0

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        world = self.trainer.world_size
        if self.batch_size % world:
            raise ConfigError(f"trainer.batch_size={self.batch_size} is not divisible by the {world} processes")
        sampler = ResumableBatchSampler(len(self.dataset), self.batch_size, self.seed, self.trainer.global_rank, world)
        sampler.next_batch = self.next_batch
        device = self.trainer.strategy.root_device
        if resolve_on_device(self.on_device, self.dataset, device):
            return DeviceBatches(self.dataset, sampler, device)
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=device.type == "cuda",
            # Each new iterator draws its workers' base seed from this generator, not the global one: the global
            # generator travels in checkpoints, and a resumed run, which opens its epoch's iterator after the
            # restore, would otherwise be one draw ahead of the uninterrupted run from then on.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def state_dict(self) -> dict:
        # Without gradient accumulation one optimiser step consumes one global batch.
        return {"next_batch": self.trainer.global_step}

    def load_state_dict(self, state: dict) -> None:
        self.next_batch = state["next_batch"]
