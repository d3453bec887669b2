"""Multi-crop views (Caron et al., SwAV, 2020): a few large crops and several small ones of each image.

SwAV's ImageNet recipe is 2 × 224 px (scale 0.14–1) + 6 × 96 px (scale
0.05–0.14) with colour strength 1.0 and blur. At 32 px the small-image
default is 2 × 32 + 4 × 16, colour strength 0.5 (0.4/0.4/0.4/0.1, as SimCLR's
CIFAR setting) and no blur, which would smear most of a 16-px crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from augbench.augment.ops import ColorJitter, GaussianBlur, Grayscale, HorizontalFlip, RandomResizedCrop
from augbench.augment.views import Pipeline, Recipe


def multicrop(
    num_crops: Sequence[int] = (2, 4),
    crop_sizes: Sequence[int] = (32, 16),
    min_scale: Sequence[float] = (0.14, 0.05),
    max_scale: Sequence[float] = (1.0, 0.14),
    color_strength: float = 0.5,
    blur: bool = False,
) -> Recipe:
    """Views grouped by size: `num_crops[g]` crops of `crop_sizes[g]` px with area scale in [min_scale[g],
    max_scale[g]], in the order of the groups (the large crops first in SwAV's convention)."""
    if not len(num_crops) == len(crop_sizes) == len(min_scale) == len(max_scale):
        raise ValueError("num_crops, crop_sizes, min_scale and max_scale need one entry per crop group")
    pipelines = []
    for count, size, low, high in zip(num_crops, crop_sizes, min_scale, max_scale):
        ops = [
            RandomResizedCrop(size, scale=(low, high)),
            HorizontalFlip(p=0.5),
            ColorJitter(0.8 * color_strength, 0.8 * color_strength, 0.8 * color_strength, 0.2 * color_strength, p=0.8),
            Grayscale(p=0.2),
        ]
        ops += [GaussianBlur(sigma=(0.1, 2.0), p=0.5)] if blur else []
        pipelines += [Pipeline(ops)] * count
    return Recipe("multicrop", pipelines)


@dataclass
class MultiCropConfig:
    """`augment.views: multi_crop`, for SwAV: `multicrop`'s settings, as SwAV's flags (nmb_crops, size_crops,
    min_scale_crops, max_scale_crops). `crop_sizes` are absolute (SwAV's convention): the dataset's image size
    does not rescale them."""

    views: str = "multi_crop"
    num_crops: list[int] = field(default_factory=lambda: [2, 4])
    crop_sizes: list[int] = field(default_factory=lambda: [32, 16])
    min_scale: list[float] = field(default_factory=lambda: [0.14, 0.05])
    max_scale: list[float] = field(default_factory=lambda: [1.0, 0.14])
    color_strength: float = 0.5
    blur: bool = False

    def __post_init__(self):
        groups = {"crop_sizes": self.crop_sizes, "min_scale": self.min_scale, "max_scale": self.max_scale}
        for key, values in groups.items():
            if len(values) != len(self.num_crops):
                raise ValueError(f"{key}={values}: expected one entry per crop group of num_crops={self.num_crops}")
        if min(self.num_crops, default=0) < 1 or sum(self.num_crops) < 2:
            raise ValueError(f"num_crops={self.num_crops}: each group needs a crop and SwAV at least 2 crops")
        if min(self.crop_sizes) < 1:
            raise ValueError(f"crop_sizes={self.crop_sizes}: sizes must be positive")
        for low, high in zip(self.min_scale, self.max_scale):
            if not 0 < low <= high <= 1:
                raise ValueError(f"min_scale={self.min_scale}, max_scale={self.max_scale}: need 0 < min ≤ max ≤ 1")

    def build(self, image_size: int, method: Any = None) -> Recipe:
        return multicrop(self.num_crops, self.crop_sizes, self.min_scale, self.max_scale, self.color_strength,
                         self.blur)
