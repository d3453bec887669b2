"""Views: images plus the parameters that made them; pipelines and recipes that make them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from augbench.augment.ops import HorizontalFlip, Op, Params, RandomResizedCrop


@dataclass
class View:
    """An augmented batch (B, 3, H, W) and, per op name, the per-image parameters that made it."""

    images: Tensor
    params: dict[str, Params]


class Pipeline:
    """Ops applied in order; each records its parameters under its name.

    A horizontal flip that follows a crop, with only ops between that commute
    with it (`Op.commutes_with_flip`), is made by the crop's resampling itself,
    as kornia composes consecutive geometric transforms into one warp: it
    saves a pass over the batch, and the result is the one the ops give
    applied one by one, up to float rounding.
    """

    def __init__(self, ops: list[Op]):
        names = [op.name for op in ops]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline op names must be unique, got {names}")
        self.ops = ops
        self._folded_flips = _flips_folded_into_crops(ops)  # crop index -> flip index
        self._made_by_crops = set(self._folded_flips.values())

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, Params]:
        return {op.name: op.sample(batch_size, generator) for op in self.ops}

    def apply(self, images: Tensor, params: dict[str, Params]) -> Tensor:
        for index, op in enumerate(self.ops):
            if index in self._folded_flips:
                flip = self.ops[self._folded_flips[index]]
                images = op.apply(images, params[op.name], flip=params[flip.name]["applied"])
            elif index not in self._made_by_crops:
                images = op.apply(images, params[op.name])
        return images

    def __call__(self, images: Tensor, generator: torch.Generator) -> View:
        params = self.sample(len(images), generator)
        return View(self.apply(images, params), params)

    def __repr__(self) -> str:
        return f"Pipeline({self.ops})"


def _flips_folded_into_crops(ops: list[Op]) -> dict[int, int]:
    """For each crop, the index of the horizontal flip after it with only flip-commuting ops between, if any."""
    folded = {}
    for index, op in enumerate(ops):
        if not isinstance(op, RandomResizedCrop):
            continue
        for later_index, later in enumerate(ops[index + 1:], start=index + 1):
            if isinstance(later, HorizontalFlip):
                folded[index] = later_index
                break
            if not later.commutes_with_flip:
                break
    return folded


class Recipe:
    """One pipeline per view: `recipe(images, generator)` returns the list of views. With `needs_foreground`,
    `images` carry the foreground mask as a fourth channel (see `augbench.augment.background`)."""

    needs_foreground = False

    def __init__(self, name: str, pipelines: list[Pipeline]):
        self.name, self.pipelines = name, pipelines

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[View]:
        return [pipeline(images, generator) for pipeline in self.pipelines]

    def __len__(self) -> int:
        return len(self.pipelines)

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}, {self.pipelines})"


def to_float(images: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) in [0, 255] → float in [0, 1]; images travel as uint8 until here."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images
