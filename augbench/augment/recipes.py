"""View recipes of the methods' papers, each with a 32-px variant.

The `_32` variants drop Gaussian blur, as small-image ports of these methods
do (a blur kernel of 10 % of a 32-px image smears most of the object).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from augbench.augment.background import BACKGROUND_KINDS, BackgroundAugmentation
from augbench.augment.looc import ATOMIC_AUGMENTATIONS, LOOC_RECIPES
from augbench.augment.ops import ColorJitter, GaussianBlur, Grayscale, HorizontalFlip, RandomResizedCrop, Solarize
from augbench.augment.views import Pipeline, Recipe
from augbench.errors import ConfigError


@dataclass
class AugmentConfig:
    """`recipe` names one of RECIPES, or `method` for views the method config describes (HAI's per-stage pairs,
    SwAV's multi-crop); `crop_size` defaults to the dataset's image size. `augmentations` lists the atomic
    augmentations (ATOMIC_AUGMENTATIONS) of the recipes of LOOC_RECIPES, which need at least one.

    `background` (`none`, `remove` or `swap`, see `augbench.augment.background`) replaces each view's
    background with probability `background_p` before the recipe's ops, where the dataset has foreground masks.
    """

    recipe: str = "moco_v2_32"
    crop_size: int | None = None
    augmentations: list[str] = field(default_factory=list)
    background: str = "none"
    background_p: float = 0.5

    def __post_init__(self):
        known = sorted(RECIPES) + sorted(LOOC_RECIPES) + [METHOD_RECIPE]
        if self.recipe not in known:
            raise ValueError(f"recipe={self.recipe!r} is unknown; known: {known}")
        unknown = [name for name in self.augmentations if name not in ATOMIC_AUGMENTATIONS]
        if unknown:
            raise ValueError(f"augmentations={list(self.augmentations)}: {unknown} unknown; "
                             f"known: {sorted(ATOMIC_AUGMENTATIONS)}")
        if len(set(self.augmentations)) != len(self.augmentations):
            raise ValueError(f"augmentations={list(self.augmentations)}: each augmentation may appear once")
        if self.recipe in LOOC_RECIPES and not self.augmentations:
            raise ValueError(f"augmentations=[]: recipe {self.recipe!r} needs at least one of "
                             f"{sorted(ATOMIC_AUGMENTATIONS)}")
        if self.background not in ("none", *BACKGROUND_KINDS):
            raise ValueError(f"background={self.background!r}: expected one of {['none', *BACKGROUND_KINDS]}")
        if not 0 <= self.background_p <= 1:
            raise ValueError(f"background_p={self.background_p}: a probability lies in [0, 1]")
        if self.background != "none" and self.recipe == METHOD_RECIPE:
            raise ValueError(f"background={self.background!r}: the method's own views ({METHOD_RECIPE!r}) take no "
                             "background op; choose a recipe of " + str(sorted(RECIPES) + sorted(LOOC_RECIPES)))
        if self.augmentations and self.recipe not in LOOC_RECIPES:
            raise ValueError(f"augmentations={list(self.augmentations)}: only the recipes {sorted(LOOC_RECIPES)} "
                             f"take a list of augmentations, not {self.recipe!r}")


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


METHOD_RECIPE = "method"


def build_recipe(config: AugmentConfig, image_size: int, method: Any = None) -> Recipe:
    """The recipe `config` names; `augment.recipe: method` asks the method config's `views(image_size)` for it."""
    size = config.crop_size or image_size
    if config.recipe in LOOC_RECIPES:
        return _with_background(LOOC_RECIPES[config.recipe](size, list(config.augmentations)), config)
    if config.recipe != METHOD_RECIPE:
        return _with_background(RECIPES[config.recipe](size), config)
    if not hasattr(method, "views"):
        name = getattr(method, "name", None)
        raise ConfigError(f"augment.recipe={METHOD_RECIPE!r}: method {name!r} describes no views of its own; "
                          f"choose one of {sorted(RECIPES)}")
    return method.views(size)


def _with_background(recipe: Recipe, config: AugmentConfig) -> Recipe:
    """`recipe` with the background op first in each of its pipelines (a pipeline several views share stays
    shared); its views then take images with the foreground mask as a fourth channel (`needs_foreground`)."""
    if config.background == "none":
        return recipe
    op = BackgroundAugmentation(config.background, config.background_p)
    rebuilt = {id(p): Pipeline([op, *p.ops]) for p in recipe.pipelines}
    recipe.pipelines = [rebuilt[id(p)] for p in recipe.pipelines]
    recipe.needs_foreground = True
    return recipe
