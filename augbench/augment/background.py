"""Background augmentations (Ryali, Schwab & Morcos, 2021): each view's background replaced, its object kept.

Two crops of one image share its background, which can tell images apart more
cheaply than the object does. Replacing the background of each view on its
own, where the dataset knows its objects' masks, takes that shortcut away:
`remove` puts the object on a flat grey of a random level (their BG_RM),
`swap` on the background of another image of the batch (their BG_Random, with
the batch as the pool of backgrounds).

The op runs first in a view's pipeline, on images that carry the foreground
mask as a fourth channel (B, 4, H, W), and returns the three colour channels,
so the crop, flip and jitter that follow treat object and new background
alike. The pool's objects are painted out with their own image's mean
background colour, so a swapped background shows no second object.
"""

from __future__ import annotations

import torch
from torch import Tensor

from augbench.augment.ops import Op, Params, _bernoulli, _on, _uniform
from augbench.augment.views import Pipeline, Recipe

BACKGROUND_KINDS = ("remove", "swap")


class BackgroundAugmentation(Op):
    """`params`: `applied` (B,), `grey` (B,) the level of `remove`, `source` (B,) the image whose background
    `swap` takes (never the image itself when the batch has two or more)."""

    name = "background"
    commutes_with_flip = False

    def __init__(self, kind: str, p: float = 0.5):
        if kind not in BACKGROUND_KINDS:
            raise ValueError(f"background={kind!r}: expected one of {list(BACKGROUND_KINDS)}")
        self.kind, self.p = kind, p

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        offset = torch.randint(1, max(2, batch_size), (batch_size,), generator=generator)
        return {
            "applied": _bernoulli(self.p, batch_size, generator),
            "grey": _uniform(0.0, 1.0, batch_size, generator),
            "source": (torch.arange(batch_size) + offset) % max(1, batch_size),
        }

    def apply(self, images: Tensor, params: Params) -> Tensor:
        if images.shape[1] != 4:
            raise ValueError(f"the background op needs images with the foreground mask as a 4th channel, got "
                             f"{images.shape[1]} channels")
        params = _on(params, images)
        colour, foreground = images[:, :3], images[:, 3:]  # (B, 3, H, W), (B, 1, H, W) in {0, 1}
        if self.kind == "remove":
            backdrop = params["grey"].to(images.dtype)[:, None, None, None].expand_as(colour)
        else:
            background = 1 - foreground
            mean = (colour * background).sum((2, 3), keepdim=True) / background.sum((2, 3), keepdim=True).clamp_min(1)
            painted_out = colour * background + mean * foreground
            backdrop = painted_out[params["source"]]
        keep = foreground + (1 - foreground) * (~params["applied"]).to(images.dtype)[:, None, None, None]
        return colour * keep + backdrop * (1 - keep)


def check_background(background: str, background_p: float) -> None:
    """Refuse the `background` and `background_p` settings of a views config that make no sense."""
    if background not in ("none", *BACKGROUND_KINDS):
        raise ValueError(f"background={background!r}: expected one of {['none', *BACKGROUND_KINDS]}")
    if not 0 <= background_p <= 1:
        raise ValueError(f"background_p={background_p}: a probability lies in [0, 1]")


def with_background(recipe: Recipe, background: str, background_p: float) -> Recipe:
    """`recipe` with the background op first in each of its pipelines (a pipeline several views share stays
    shared); its views then take images with the foreground mask as a fourth channel (`needs_foreground`).
    `background: none` leaves it as it is."""
    if background == "none":
        return recipe
    op = BackgroundAugmentation(background, background_p)
    rebuilt = {id(p): Pipeline([op, *p.ops]) for p in recipe.pipelines}
    recipe.pipelines = [rebuilt[id(p)] for p in recipe.pipelines]
    recipe.needs_foreground = True
    return recipe

