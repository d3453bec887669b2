"""Views: images plus the parameters that made them; pipelines and recipes that make them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from augbench.augment.ops import Op, Params


@dataclass
class View:
    """An augmented batch (B, 3, H, W) and, per op name, the per-image parameters that made it."""

    images: Tensor
    params: dict[str, Params]


class Pipeline:
    """Ops applied in order; each records its parameters under its name."""

    def __init__(self, ops: list[Op]):
        names = [op.name for op in ops]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline op names must be unique, got {names}")
        self.ops = ops

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, Params]:
        return {op.name: op.sample(batch_size, generator) for op in self.ops}

    def apply(self, images: Tensor, params: dict[str, Params]) -> Tensor:
        for op in self.ops:
            images = op.apply(images, params[op.name])
        return images

    def __call__(self, images: Tensor, generator: torch.Generator) -> View:
        params = self.sample(len(images), generator)
        return View(self.apply(images, params), params)

    def __repr__(self) -> str:
        return f"Pipeline({self.ops})"


class Recipe:
    """One pipeline per view: `recipe(images, generator)` returns the list of views."""

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
