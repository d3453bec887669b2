"""The one Dataset API: uint8 CHW images plus a dict of labels."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")


@dataclass
class ImageDataset(Dataset):
    """An in-memory split: `images` (N, 3, H, W) uint8 and `labels[name]` (N, ...).

    `classes[name]` names the classes of a categorical label, in label order.
    An item is `{"image": (3, H, W) uint8, "labels": {name: value}}`, so a
    collated batch is a dict of tensors.
    """

    name: str
    split: str
    images: Tensor
    labels: dict[str, Tensor]
    classes: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"{self.name}/{self.split}: images must be uint8 (N, 3, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        for label, values in self.labels.items():
            if len(values) != len(self.images):
                raise ValueError(f"{self.name}/{self.split}: label {label!r} has {len(values)} values for "
                                 f"{len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "labels": {k: v[index] for k, v in self.labels.items()}}

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def batches(self, batch_size: int, order: Tensor | None = None) -> Iterator[Tensor]:
        """The images in order, or those at `order` (indices), (B, 3, H, W) uint8 `batch_size` at a time (as
        `LazyImageDataset.batches`)."""
        if order is None:
            yield from self.images.split(batch_size)
        else:
            yield from (self.images[indices] for indices in order.split(batch_size))

    def take(self, indices: Tensor) -> ImageDataset:
        """The images and labels at `indices` (a long tensor), in that order."""
        return ImageDataset(self.name, self.split, self.images[indices],
                            {name: values[indices] for name, values in self.labels.items()}, dict(self.classes))
