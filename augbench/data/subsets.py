"""Balanced and long-tailed subsets of a dataset, chosen by a class label and a seed.

ViRB compares pretraining on balanced data with pretraining on an unbalanced
(long-tailed) sample of the same data; the 'Critical Factors' study
evaluates transfer to long-tailed sets. Both need the same two samplers:

- `long_tailed_indices`: class sizes decay exponentially, as in the
  long-tailed CIFAR of Cui et al. (CVPR 2019): with C classes ranked
  r = 0 … C-1, class r keeps ``floor(n_max * ratio ** (-r / (C - 1)))``
  images, so the head keeps n_max (the largest class size) and the tail
  n_max / ratio (at least 1). Which class is the head is a permutation drawn
  from `seed`; a class with fewer images than its target keeps them all.
- `balanced_indices`: `per_class` images of every class.

A pretraining config asks for one with `data.subset`, e.g.
``data.subset: {kind: long_tailed, imbalance_ratio: 100, label: shape}``;
only the train split is subsampled, so evaluation splits stay whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from augbench.data.dataset import ImageDataset
from augbench.data.disk import LazyImageDataset
from augbench.errors import DataError

SUBSET_KINDS = ("long_tailed", "balanced")


@dataclass
class SubsetConfig:
    """`label` is the class label to balance or skew ("" = the dataset's first label).

    `imbalance_ratio` is read by `long_tailed` (largest / smallest class size);
    `per_class` by `balanced`.
    """

    kind: str = "long_tailed"
    label: str = ""
    imbalance_ratio: float = 100.0
    per_class: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.kind not in SUBSET_KINDS:
            raise ValueError(f"subset.kind={self.kind!r}: expected one of {list(SUBSET_KINDS)}")
        if self.imbalance_ratio < 1:
            raise ValueError(f"subset.imbalance_ratio={self.imbalance_ratio}: must be >= 1")
        if self.per_class < 1:
            raise ValueError(f"subset.per_class={self.per_class}: must be >= 1")


def _class_members(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"subsets need a 1-D integer class label, got dtype {labels.dtype} shape {labels.shape}")
    classes = np.unique(labels)
    return classes, [np.flatnonzero(labels == c) for c in classes]


def long_tailed_sizes(n_max: int, num_classes: int, imbalance_ratio: float) -> np.ndarray:
    """Target size of the class of each rank: n_max * ratio ** (-rank / (C - 1)), floored, at least 1."""
    ranks = np.arange(num_classes)
    sizes = np.floor(n_max * float(imbalance_ratio) ** (-ranks / max(num_classes - 1, 1)) + 1e-9).astype(int)
    return np.maximum(sizes, 1)


def long_tailed_indices(labels: np.ndarray, imbalance_ratio: float, seed: int) -> np.ndarray:
    """Sorted indices of a long-tailed subset of `labels` (see the module docstring for the class sizes)."""
    if imbalance_ratio < 1:
        raise DataError(f"imbalance_ratio={imbalance_ratio}: must be >= 1")
    classes, members = _class_members(labels)
    rng = np.random.default_rng(seed)
    targets = long_tailed_sizes(max(len(m) for m in members), len(classes), imbalance_ratio)
    order = rng.permutation(len(classes))  # order[r] is the class index of rank r
    chosen = [rng.choice(members[c], size=min(targets[r], len(members[c])), replace=False) for r, c in enumerate(order)]
    return np.sort(np.concatenate(chosen))


def balanced_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` examples of every class, drawn without replacement."""
    classes, members = _class_members(labels)
    short = {int(c): len(m) for c, m in zip(classes, members, strict=True) if len(m) < per_class}
    if short:
        raise DataError(f"per_class={per_class}: classes {short} have fewer examples (class: count)")
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(m, size=per_class, replace=False) for m in members]))


def subset(dataset: ImageDataset | LazyImageDataset, indices: np.ndarray) -> ImageDataset | LazyImageDataset:
    """The images and labels of `dataset` at `indices`, in that order; of a lazily decoded split, still lazy."""
    index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    if len(index) and (index.min() < 0 or index.max() >= len(dataset)):
        raise DataError(f"{dataset.name}/{dataset.split}: subset indices outside [0, {len(dataset)})")
    return dataset.take(index)


def apply_subset(dataset: ImageDataset | LazyImageDataset, config: SubsetConfig) -> ImageDataset | LazyImageDataset:
    """`dataset` subsampled as `config` asks (the label named, or the dataset's first label)."""
    label = config.label or next(iter(dataset.labels))
    if label not in dataset.labels:
        raise DataError(f"{dataset.name}: subset.label={label!r} is not a label; known: {list(dataset.labels)}")
    values = dataset.labels[label].numpy()
    if config.kind == "long_tailed":
        indices = long_tailed_indices(values, config.imbalance_ratio, config.seed)
    else:
        indices = balanced_indices(values, config.per_class, config.seed)
    return subset(dataset, indices)
