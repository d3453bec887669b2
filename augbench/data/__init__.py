"""Datasets: a registry from `data.name` to a config dataclass, a loader of splits, and the labels it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from functools import cache
from typing import Any

from augbench.data.dataset import SPLITS, ImageDataset
from augbench.data.digits import DIGITS_LABELS, DigitsConfig, load_digits
from augbench.data.disk import DISK_DATASETS, LazyImageDataset, load_from_disk
from augbench.data.shapes_world import SHAPES_WORLD_LABELS, ShapesWorldConfig, load_shapes_world
from augbench.data.subsets import SubsetConfig, apply_subset

# A split as `load_split` returns it: in memory, or brought to size as it is read (`lazy: true`).
Split = ImageDataset | LazyImageDataset


@dataclass(frozen=True)
class DatasetEntry:
    config: type
    load: Callable[..., ImageDataset]
    labels: tuple[str, ...]


DATASETS: dict[str, DatasetEntry] = {
    "shapes_world": DatasetEntry(ShapesWorldConfig, load_shapes_world, SHAPES_WORLD_LABELS),
    "digits": DatasetEntry(DigitsConfig, load_digits, DIGITS_LABELS),
    **{name: DatasetEntry(config, load_from_disk, labels) for name, (config, labels) in DISK_DATASETS.items()},
}


def dataset_config_type(name: str) -> type:
    """The config dataclass of dataset `name`, extended with an optional `subset: SubsetConfig`."""
    if name not in DATASETS:
        raise KeyError(f"known datasets: {sorted(DATASETS)}")
    return _with_subset(DATASETS[name].config)


@cache
def _with_subset(config_type: type) -> type:
    # Every dataset can be subsampled and held on the training device, so the options are added here once instead
    # of to each dataset's config. `on_device` (auto | true | false): see augbench.train.device_data.
    subset_field = ("subset", SubsetConfig | None, field(default=None))
    on_device_field = ("on_device", Any, field(default="auto"))
    return make_dataclass(config_type.__name__, [subset_field, on_device_field], bases=(config_type,))


def load_split(config, split: str) -> Split:
    """The `split` ("train", "val" or "test") of the dataset `config` describes; `subset` applies to "train"."""
    dataset = DATASETS[config.name].load(config, split)
    subset_config = getattr(config, "subset", None)
    return apply_subset(dataset, subset_config) if subset_config is not None and split == "train" else dataset


__all__ = ["DATASETS", "SPLITS", "ImageDataset", "LazyImageDataset", "Split", "dataset_config_type", "load_split"]
