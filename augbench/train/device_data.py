"""Training batches gathered on the device from a split held there (`data.on_device`), without a DataLoader.

An in-memory split of uint8 images small enough for the device (CIFAR-10 at
32 px: 150 MB) is copied there once; each step then gathers its batch by
index on the device, in the order `ResumableBatchSampler` gives (the same
epoch permutation, resume position and per-rank slice), so its batches are
the DataLoader's, image for image and label for label. On a GPU this removes
the host's work per step (collating the batch image by image, copying it over)
that caps a small model's step rate, and the worker processes that hide it.

`data.on_device`: `true` always (an in-memory split only), `false` never,
`auto` on a CUDA device when the split takes less than
`FREE_MEMORY_FRACTION` of its free memory; on a CPU, `auto` keeps the
DataLoader, whose batches are the same and need no copy of the split.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from augbench.config import ConfigError
from augbench.data import ImageDataset, Split
from augbench.train.sampler import ResumableBatchSampler

# `auto`'s share of the device's free memory for the split: the model, its activations and the augmented views of a
# batch need the rest, and a split that takes more than a quarter is no longer small beside them.
FREE_MEMORY_FRACTION = 0.25


def check_on_device_setting(setting) -> None:
    # `is`, not `in`: 1 == True, and a 1 or a 0 in a config is a typo, not a choice.
    if not (setting == "auto" or setting is True or setting is False):
        raise ValueError(f"data.on_device={setting!r}: expected auto, true or false")


def split_bytes(dataset: ImageDataset) -> int:
    """Device memory the split takes there: its images and every label."""
    return dataset.images.nbytes + sum(values.nbytes for values in dataset.labels.values())


def resolve_on_device(setting, dataset: Split, device: torch.device) -> bool:
    """Whether the training batches of `dataset` are gathered on `device` (see the module's docstring)."""
    check_on_device_setting(setting)
    if setting is False:
        return False
    in_memory = isinstance(dataset, ImageDataset)
    if setting is True:
        if not in_memory:
            raise ConfigError(f"data.on_device=true: {dataset.name}/{dataset.split} is read lazily (data.lazy=true), "
                              "so it is not in memory to be copied to the device; set data.lazy=false or "
                              "data.on_device=auto")
        return True
    if device.type != "cuda" or not in_memory:
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return split_bytes(dataset) < FREE_MEMORY_FRACTION * free


class DeviceBatches:
    """The batches of `sampler` as the DataLoader collates them (`{"image": (B, 3, H, W) uint8, "labels": {name:
    (B, ...)}}`), gathered on `device` from the split's images and labels copied there once."""

    def __init__(self, dataset: ImageDataset, sampler: ResumableBatchSampler, device: torch.device):
        self.images = dataset.images.to(device)
        self.labels = {name: values.to(device) for name, values in dataset.labels.items()}
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict]:
        host_order = device_order = None
        for order, local in self.sampler.local_slices():
            if order is not host_order:  # one copy of the epoch's permutation, not one per step
                host_order, device_order = order, order.to(self.images.device)
            indices = device_order[local]
            yield {"image": self.images[indices], "labels": {name: values[indices]
                                                             for name, values in self.labels.items()}}
