"""Datasets: a registry from `data.name` to a config dataclass, a loader of splits, and the labels it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from augbench.data.dataset import SPLITS, ImageDataset
from augbench.data.digits import DIGITS_LABELS, DigitsConfig, load_digits
from augbench.data.shapes_world import SHAPES_WORLD_LABELS, ShapesWorldConfig, load_shapes_world


@dataclass(frozen=True)
class DatasetEntry:
    config: type
    load: Callable[..., ImageDataset]
    labels: tuple[str, ...]


DATASETS: dict[str, DatasetEntry] = {
    "shapes_world": DatasetEntry(ShapesWorldConfig, load_shapes_world, SHAPES_WORLD_LABELS),
    "digits": DatasetEntry(DigitsConfig, load_digits, DIGITS_LABELS),
}


def dataset_config_type(name: str) -> type:
    if name not in DATASETS:
        raise KeyError(f"known datasets: {sorted(DATASETS)}")
    return DATASETS[name].config


def load_split(config, split: str) -> ImageDataset:
    """The `split` ("train", "val" or "test") of the dataset `config` describes."""
    return DATASETS[config.name].load(config, split)


__all__ = ["DATASETS", "SPLITS", "ImageDataset", "dataset_config_type", "load_split"]
