"""A texture augmentation: blend each image with a crop of a real texture photograph.

LooC (Xiao et al., ICLR 2021) lists texture among its atomic augmentations
without specifying the operation; this is augbench's documented stand-in. Each
image is modulated by a grey texture pattern P in [0, 1] (a random crop of
scikit-image's bundled brick, grass or gravel photographs, the same stack that
Shapes World draws its object textures from, rescaled per crop to span
[0, 1]):

    x' = clamp(x · (1 + s · (2P − 1)), 0, 1)

with a blend strength s drawn per image. The factor averages about 1, so the
image keeps its colour and brightness while its surface takes the texture's
local structure.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor
from torchvision.ops import roi_align

from augbench.augment.ops import Op, Params, _bernoulli, _on, _rows_where, _uniform
from augbench.data.shapes_world import PHOTO_TEXTURES, grey_photo_stack

# The texture photographs are resampled once to this multiple of the image side, so a crop of a quarter of
# the photograph or more is never upsampled.
_STACK_SCALE = 4


class Texture(Op):
    """Texture blending; params `texture` (B,) index into PHOTO_TEXTURES, `box` (B, 4) the crop (x0, y0, x1, y1)
    in [0, 1] of that photograph, `strength` (B,) the blend strength s (0 where not applied)."""

    name = "texture"

    def __init__(self, strength=(0.3, 0.6), crop_scale=(0.0625, 0.25), p: float = 0.8):
        self.strength, self.crop_scale, self.p = tuple(strength), tuple(crop_scale), p

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        applied = _bernoulli(self.p, batch_size, generator)
        texture = torch.randint(len(PHOTO_TEXTURES), (batch_size,), generator=generator)
        side = torch.sqrt(_uniform(*self.crop_scale, batch_size, generator))  # square crops of that area fraction
        corner = torch.rand(batch_size, 2, generator=generator) * (1 - side)[:, None]  # (B, 2): x0, y0
        box = torch.cat([corner, corner + side[:, None]], dim=1)
        strength = torch.where(applied, _uniform(*self.strength, batch_size, generator), 0.0)
        return {"texture": texture, "box": box, "strength": strength, "applied": applied}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        rows = _rows_where(params["applied"], images)
        if not len(rows):
            return images
        params = _on(params, images)
        height, width = images.shape[-2:]
        stack = _texture_stack(_STACK_SCALE * max(height, width), images.device, images.dtype)
        source = params["texture"][rows, None].to(images.dtype)
        rois = torch.cat([source, params["box"][rows].to(images.dtype) * stack.shape[-1]], dim=1)
        pattern = roi_align(stack, rois, output_size=(height, width), aligned=True)  # (R, 1, H, W)
        low, high = pattern.amin((1, 2, 3), keepdim=True), pattern.amax((1, 2, 3), keepdim=True)
        pattern = (pattern - low) / (high - low).clamp_min(1e-6)
        strength = params["strength"][rows].to(images.dtype)[:, None, None, None]
        images = images.clone()
        images[rows] = (images[rows] * (1 + strength * (2 * pattern - 1))).clamp(0, 1)
        return images


@lru_cache(maxsize=8)
def _texture_stack(resolution: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The texture photographs on the images' device, copied there once: a copy each step would wait for it."""
    return grey_photo_stack(PHOTO_TEXTURES, resolution).to(device, dtype)
