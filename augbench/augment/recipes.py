"""Two-view recipes of the methods' papers, each with a 32-px variant, and `augment.views: two_view`.

The `_32` variants drop Gaussian blur, as small-image ports of these methods
do (a blur kernel of 10 % of a 32-px image smears most of the object).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from augbench.augment.background import check_background, with_background
from augbench.augment.looc import LEAVE_ONE_OUT_RECIPES, LOOC_AUG_PAIR_RECIPES, check_augmentations
from augbench.augment.ops import ColorJitter, GaussianBlur, Grayscale, HorizontalFlip, RandomResizedCrop, Solarize
from augbench.augment.views import Pipeline, Recipe


@dataclass
class TwoViewConfig:
    """`augment.views: two_view`, for the two-branch methods: two views of each image from `recipe`, one of
    RECIPES or LOOC_AUG_PAIR_RECIPES, at `crop_size` px (null: the dataset's image size). `augmentations` lists
    the atomic augmentations (augment/looc.py ATOMIC_AUGMENTATIONS) of the `looc_aug_pair` recipes, LooC's MoCo v2
    baseline, which need at least one; the other recipes take none.

    `background` (`none`, `remove` or `swap`, see `augbench.augment.background`) replaces each view's
    background with probability `background_p` before the recipe's ops, where the dataset has foreground masks.
    """

    views: str = "two_view"
    recipe: str = "moco_v2_32"
    crop_size: int | None = None
    augmentations: list[str] = field(default_factory=list)
    background: str = "none"
    background_p: float = 0.5

    def __post_init__(self):
        if self.recipe in LEAVE_ONE_OUT_RECIPES:
            raise ValueError(f"recipe={self.recipe!r} makes leave-one-out views, not two: set views: leave_one_out")
        known = sorted(RECIPES) + sorted(LOOC_AUG_PAIR_RECIPES)
        if self.recipe not in known:
            raise ValueError(f"recipe={self.recipe!r} is unknown; known: {known}")
        if self.recipe in LOOC_AUG_PAIR_RECIPES:
            check_augmentations(self.augmentations, self.recipe)
        elif self.augmentations:
            raise ValueError(f"augmentations={list(self.augmentations)}: only the recipes "
                             f"{sorted(LOOC_AUG_PAIR_RECIPES)} take a list of augmentations, not {self.recipe!r}")
        check_background(self.background, self.background_p)

    def build(self, image_size: int, method: Any = None) -> Recipe:
        size = self.crop_size or image_size
        if self.recipe in LOOC_AUG_PAIR_RECIPES:
            recipe = LOOC_AUG_PAIR_RECIPES[self.recipe](size, list(self.augmentations))
        else:
            recipe = RECIPES[self.recipe](size)
        return with_background(recipe, self.background, self.background_p)


def moco_v2(size: int, blur: bool = True) -> Recipe:
    """MoCo v2: two views from one pipeline (crop 0.2–1, jitter 0.4/0.4/0.4/0.1 p 0.8, grey 0.2, blur 0.5, flip)."""
    ops = [RandomResizedCrop(size, scale=(0.2, 1.0)), ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), Grayscale(p=0.2)]
    ops += [GaussianBlur(sigma=(0.1, 2.0), p=0.5)] if blur else []
    ops += [HorizontalFlip(p=0.5)]
    pipeline = Pipeline(ops)
    return Recipe("moco_v2" if blur else "moco_v2_32", [pipeline, pipeline])


def byol(size: int, blur: bool = True) -> Recipe:
    """BYOL's asymmetric views: blur p 1.0 / 0.1 and solarize p 0.0 / 0.2 (crop 0.08–1, jitter 0.4/0.4/0.2/0.1)."""

    def view(blur_p: float, solarize_p: float) -> Pipeline:
        ops = [
            RandomResizedCrop(size, scale=(0.08, 1.0)),
            HorizontalFlip(p=0.5),
            ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
            Grayscale(p=0.2),
        ]
        ops += [GaussianBlur(sigma=(0.1, 2.0), p=blur_p)] if blur else []
        return Pipeline(ops + [Solarize(p=solarize_p)])

    return Recipe("byol" if blur else "byol_32", [view(1.0, 0.0), view(0.1, 0.2)])


def simclr(size: int, blur: bool = True) -> Recipe:
    """SimCLR: colour strength 1.0 (0.8/0.8/0.8/0.2) with blur on ImageNet; 0.5 (0.4/0.4/0.4/0.1) for CIFAR."""
    strength = 1.0 if blur else 0.5
    ops = [
        RandomResizedCrop(size, scale=(0.08, 1.0)),
        HorizontalFlip(p=0.5),
        ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength, p=0.8),
        Grayscale(p=0.2),
    ]
    ops += [GaussianBlur(sigma=(0.1, 2.0), p=0.5)] if blur else []
    pipeline = Pipeline(ops)
    return Recipe("simclr" if blur else "simclr_32", [pipeline, pipeline])


RECIPES: dict[str, Callable[[int], Recipe]] = {
    "moco_v2": moco_v2,
    "moco_v2_32": lambda size: moco_v2(size, blur=False),
    "byol": byol,
    "byol_32": lambda size: byol(size, blur=False),
    "simclr": simclr,
    "simclr_32": lambda size: simclr(size, blur=False),
}

