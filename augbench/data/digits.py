"""`digits`: scikit-learn's bundled handwritten digits as a small real dataset.

1,797 8×8 greyscale scans (UCI optical digits) ship inside scikit-learn, so
this real dataset needs no download. Images are upsampled to `image_size` and
repeated to RGB; the split is a fixed stratified partition by `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits as sklearn_digits
from sklearn.model_selection import train_test_split

from augbench.data.dataset import SPLITS, ImageDataset

DIGITS_LABELS = ("digit",)


@dataclass
class DigitsConfig:
    name: str = "digits"
    image_size: int = 32
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.3


def load_digits(config: DigitsConfig, split: str) -> ImageDataset:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    bunch = sklearn_digits()
    indices = np.arange(len(bunch.target))
    train_val, test = train_test_split(
        indices, test_size=config.test_fraction, stratify=bunch.target, random_state=config.seed
    )
    train, val = train_test_split(
        train_val,
        test_size=config.val_fraction / (1 - config.test_fraction),
        stratify=bunch.target[train_val],
        random_state=config.seed,
    )
    chosen = np.sort({"train": train, "val": val, "test": test}[split])
    scans = torch.from_numpy(bunch.images[chosen]).float()[:, None] / 16  # (N, 1, 8, 8) in [0, 1]
    size = (config.image_size, config.image_size)
    images = F.interpolate(scans, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    images = (images * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = {"digit": torch.from_numpy(bunch.target[chosen]).long()}
    return ImageDataset("digits", split, images, labels, {"digit": [str(d) for d in range(10)]})
