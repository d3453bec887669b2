"""LooC's leave-one-out views (Xiao, Wang, Efros & Darrell, "What Should Not Be Contrastive in Contrastive
Learning", ICLR 2021), and the two-view recipe with the same augmentations for the MoCo v2 baseline.

Given n atomic augmentations on top of the always-on crop and flip (and blur
at 224 px), which get no embedding space of their own, the recipe returns
n + 2 views of a batch: the query q, then keys k0, k1, …, kn.

- k0 samples every op independently of q;
- ki samples every op independently too, then replays q's recorded
  parameters for the ops of augmentation i, so ki and q agree on exactly
  augmentation i.

Atomic augmentations (ATOMIC_AUGMENTATIONS):

- `color`: MoCo v2's colour jitter (0.4, 0.4, 0.4, 0.1) p 0.8 and grayscale p 0.2;
- `rotation`: a quarter turn from {0°, 90°, 180°, 270°}. Re-implementations
  draw from {90°, 180°, 270°}; augbench keeps 0° so that upright images, which
  downstream tasks see, are in the training distribution;
- `texture`: augbench.augment.texture.Texture, a documented stand-in (the
  paper does not specify its texture operation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from augbench.augment.background import check_background, with_background
from augbench.augment.ops import ColorJitter, GaussianBlur, Grayscale, HorizontalFlip, Op, RandomResizedCrop, Rotate90
from augbench.augment.texture import Texture
from augbench.augment.views import Pipeline, Recipe, View

ATOMIC_AUGMENTATIONS: dict[str, Callable[[], list[Op]]] = {
    "color": lambda: [ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), Grayscale(p=0.2)],
    "rotation": lambda: [Rotate90(p=1.0, quarter_turns=(0, 1, 2, 3))],
    "texture": lambda: [Texture()],
}


def _pipeline(size: int, augmentations: list[str], blur: bool) -> tuple[Pipeline, dict[str, list[str]]]:
    """Crop, flip, the atomic augmentations in the given order, blur (optional); and each augmentation's op names.

    The flip comes before the atomic augmentations, so that their parameters
    act on the same frame in every view: a flip after a quarter turn would
    turn 90° into 270°, and a key sharing q's rotation would show q's content
    upside down whenever the two views' independent flips differ.
    """
    unknown = [name for name in augmentations if name not in ATOMIC_AUGMENTATIONS]
    if unknown or not augmentations or len(set(augmentations)) != len(augmentations):
        raise ValueError(
            f"augmentations={augmentations}: expected distinct names, at least one, from {sorted(ATOMIC_AUGMENTATIONS)}"
        )
    groups = {name: ATOMIC_AUGMENTATIONS[name]() for name in augmentations}
    ops: list[Op] = [RandomResizedCrop(size, scale=(0.2, 1.0)), HorizontalFlip(p=0.5)]
    ops += [op for group in groups.values() for op in group]
    ops += [GaussianBlur(sigma=(0.1, 2.0), p=0.5)] if blur else []
    return Pipeline(ops), {name: [op.name for op in group] for name, group in groups.items()}


class LeaveOneOutRecipe(Recipe):
    """`recipe(images, generator)` → [q, k0, k1, …, kn]; `augmentations[i - 1]` is the one ki shares with q."""

    def __init__(self, name: str, size: int, augmentations: list[str], blur: bool):
        pipeline, self.op_names = _pipeline(size, augmentations, blur)
        self.augmentations = list(augmentations)
        super().__init__(name, [pipeline] * (len(augmentations) + 2))

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[View]:
        pipeline = self.pipelines[0]
        query_params = pipeline.sample(len(images), generator)
        views = [View(pipeline.apply(images, query_params), query_params)]
        for shared in [None, *self.augmentations]:
            params = pipeline.sample(len(images), generator)
            if shared is not None:
                params.update({op: query_params[op] for op in self.op_names[shared]})
            views.append(View(pipeline.apply(images, params), params))
        return views


def looc(size: int, augmentations: list[str], blur: bool = True) -> Recipe:
    return LeaveOneOutRecipe("looc" if blur else "looc_32", size, augmentations, blur)


def looc_aug_pair(size: int, augmentations: list[str], blur: bool = True) -> Recipe:
    """Two symmetric views from LooC's pipeline: the MoCo v2 baseline that sees the same augmentations."""
    pipeline, _ = _pipeline(size, augmentations, blur)
    return Recipe("looc_aug_pair" if blur else "looc_aug_pair_32", [pipeline, pipeline])


# The `_32` variants drop blur, as the other small-image recipes do.
LEAVE_ONE_OUT_RECIPES: dict[str, Callable[[int, list[str]], Recipe]] = {
    "looc": looc,
    "looc_32": lambda size, augmentations: looc(size, augmentations, blur=False),
}
# Two-view recipes (`augment.views: two_view`) over the same augmentations.
LOOC_AUG_PAIR_RECIPES: dict[str, Callable[[int, list[str]], Recipe]] = {
    "looc_aug_pair": looc_aug_pair,
    "looc_aug_pair_32": lambda size, augmentations: looc_aug_pair(size, augmentations, blur=False),
}


def check_augmentations(augmentations: Sequence[str], recipe: str) -> None:
    """Refuse a list of atomic augmentations that is empty, names one twice or names one augbench lacks."""
    unknown = [name for name in augmentations if name not in ATOMIC_AUGMENTATIONS]
    if unknown:
        raise ValueError(f"augmentations={list(augmentations)}: {unknown} unknown; known: "
                         f"{sorted(ATOMIC_AUGMENTATIONS)}")
    if len(set(augmentations)) != len(augmentations):
        raise ValueError(f"augmentations={list(augmentations)}: each augmentation may appear once")
    if not augmentations:
        raise ValueError(f"augmentations=[]: recipe {recipe!r} needs at least one of {sorted(ATOMIC_AUGMENTATIONS)}")


@dataclass
class LeaveOneOutConfig:
    """`augment.views: leave_one_out`, for LooC: a query and n + 1 keys from `recipe` (LEAVE_ONE_OUT_RECIPES) over
    the n atomic `augmentations` (ATOMIC_AUGMENTATIONS), at `crop_size` px (null: the dataset's image size). LooC
    embeds one space per augmentation, in this order. `background` and `background_p` as for two views
    (`augbench.augment.recipes.TwoViewConfig`)."""

    views: str = "leave_one_out"
    recipe: str = "looc_32"
    crop_size: int | None = None
    augmentations: list[str] = field(default_factory=lambda: ["color", "rotation", "texture"])
    background: str = "none"
    background_p: float = 0.5

    def __post_init__(self):
        if self.recipe not in LEAVE_ONE_OUT_RECIPES:
            raise ValueError(f"recipe={self.recipe!r} makes no leave-one-out views; known: "
                             f"{sorted(LEAVE_ONE_OUT_RECIPES)}")
        check_augmentations(self.augmentations, self.recipe)
        check_background(self.background, self.background_p)

    def build(self, image_size: int, method: Any = None) -> Recipe:
        recipe = LEAVE_ONE_OUT_RECIPES[self.recipe](self.crop_size or image_size, list(self.augmentations))
        return with_background(recipe, self.background, self.background_p)
