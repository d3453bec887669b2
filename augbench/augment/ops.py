"""Augmentation ops that remember: sample per-image parameters, then apply them to a batch.

Every op has two steps: `sample(batch_size, generator) -> params` draws the
parameters of each image on the CPU generator (so a step's augmentation is a
function of its seed, on any device), and `apply(images, params) -> images`
applies them to float images in [0, 1] of shape (B, 3, H, W) on the images'
device. `apply` is deterministic, so replaying recorded parameters reproduces
a view exactly. Every op records an `applied` mask (B,) for its probability
`p`, and parameters that mean "no change" where it was not applied.

The photometric maths is kornia's torchvision-compatible functionals (they
take one factor per image); geometric resampling is torchvision's roi_align
(crops) and kornia's rotate. Per-image random order and probability handling
are ours because neither library records them per image.
"""

from __future__ import annotations

import math

import torch
from kornia.color import rgb_to_grayscale
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_hue,
    adjust_saturation_with_gray_subtraction,
)
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import rotate
from torch import Tensor
from torchvision.ops import roi_align

Params = dict[str, Tensor]


def _uniform(low: float, high: float, shape, generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


def _bernoulli(p: float, batch_size: int, generator: torch.Generator) -> Tensor:
    return torch.rand(batch_size, generator=generator) < p


def _on(params: Params, images: Tensor) -> Params:
    return {k: v.to(images.device, non_blocking=True) for k, v in params.items()}


class Op:
    """Base of all ops: a name, a probability, and the two steps."""

    name: str = "op"
    p: float = 1.0

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        raise NotImplementedError

    def apply(self, images: Tensor, params: Params) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


class RandomResizedCrop(Op):
    """torchvision's RandomResizedCrop sampling, batched; `box` is (x0, y0, x1, y1) in [0, 1] of the input."""

    name = "crop"

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10):
        self.size, self.scale, self.ratio, self.attempts = size, tuple(scale), tuple(ratio), attempts

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        # Normalised coordinates of a square input: area fraction and aspect ratio decide w and h.
        shape = (batch_size, self.attempts)
        area = _uniform(*self.scale, shape, generator)
        log_ratio = _uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), shape, generator)
        aspect = torch.exp(log_ratio)
        width, height = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
        valid = (width <= 1) & (height <= 1)
        first = valid.float().argmax(dim=1, keepdim=True)  # the first valid attempt, as torchvision takes
        width, height = width.gather(1, first)[:, 0], height.gather(1, first)[:, 0]
        fallback = ~valid.any(dim=1)
        width, height = torch.where(fallback, 1.0, width), torch.where(fallback, 1.0, height)
        x0 = torch.rand(batch_size, generator=generator) * (1 - width)
        y0 = torch.rand(batch_size, generator=generator) * (1 - height)
        box = torch.stack([x0, y0, x0 + width, y0 + height], dim=1)
        return {"box": box, "applied": torch.ones(batch_size, dtype=torch.bool)}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        params = _on(params, images)
        height, width = images.shape[-2:]
        scale = images.new_tensor([width, height, width, height])
        index = torch.arange(len(images), device=images.device, dtype=images.dtype)[:, None]
        rois = torch.cat([index, params["box"].to(images.dtype) * scale], dim=1)
        # roi_align averages several samples per output pixel when shrinking: an anti-aliased resize.
        return roi_align(images, rois, output_size=self.size, aligned=True)


class HorizontalFlip(Op):
    name = "flip"

    def __init__(self, p: float = 0.5):
        self.p = p

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        return {"applied": _bernoulli(self.p, batch_size, generator)}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        applied = _on(params, images)["applied"][:, None, None, None]
        return torch.where(applied, images.flip(-1), images)


class ColorJitter(Op):
    """Brightness, contrast, saturation and hue in a random order per image, as torchvision does.

    `factors` (B, 4) holds [brightness, contrast, saturation, hue]; hue is a
    shift in turns (fractions of the hue circle). Images not jittered get the
    identity [1, 1, 1, 0]. `order` (B, 4) is each image's permutation of the
    four adjustments.
    """

    name = "color_jitter"
    _adjustments = (
        adjust_brightness_accumulative,
        adjust_contrast_with_mean_subtraction,
        adjust_saturation_with_gray_subtraction,
        lambda images, turns: adjust_hue(images, turns * 2 * math.pi),
    )

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p: float = 0.8):
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        applied = _bernoulli(self.p, batch_size, generator)
        ranges = [
            (max(0.0, 1 - self.brightness), 1 + self.brightness),
            (max(0.0, 1 - self.contrast), 1 + self.contrast),
            (max(0.0, 1 - self.saturation), 1 + self.saturation),
            (-self.hue, self.hue),
        ]
        factors = torch.stack([_uniform(low, high, batch_size, generator) for low, high in ranges], dim=1)
        identity = torch.tensor([1.0, 1.0, 1.0, 0.0])
        factors = torch.where(applied[:, None], factors, identity)
        order = torch.argsort(torch.rand(batch_size, 4, generator=generator), dim=1)
        return {"factors": factors, "order": order, "applied": applied}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        params = _on(params, images)
        images = images.clone()
        for slot in range(4):
            for adjustment, adjust in enumerate(self._adjustments):
                rows = torch.nonzero(params["applied"] & (params["order"][:, slot] == adjustment))[:, 0]
                if len(rows):
                    images[rows] = adjust(images[rows], params["factors"][rows, adjustment].to(images.dtype))
        return images


class Grayscale(Op):
    name = "grayscale"

    def __init__(self, p: float = 0.2):
        self.p = p

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        return {"applied": _bernoulli(self.p, batch_size, generator)}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        applied = _on(params, images)["applied"][:, None, None, None]
        return torch.where(applied, rgb_to_grayscale(images).expand_as(images), images)


class GaussianBlur(Op):
    """Blur with σ in pixels drawn per image; the kernel spans about 10 % of the image side, as in SimCLR/BYOL."""

    name = "blur"

    def __init__(self, sigma=(0.1, 2.0), p: float = 0.5, kernel_fraction: float = 0.1):
        self.sigma, self.p, self.kernel_fraction = tuple(sigma), p, kernel_fraction

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        applied = _bernoulli(self.p, batch_size, generator)
        sigma = torch.where(applied, _uniform(*self.sigma, batch_size, generator), 0.0)
        return {"sigma": sigma, "applied": applied}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        params = _on(params, images)
        rows = torch.nonzero(params["applied"])[:, 0]
        if not len(rows):
            return images
        kernel = max(3, 2 * round(self.kernel_fraction * images.shape[-1] / 2) + 1)
        sigma = params["sigma"][rows].to(images.dtype)[:, None].expand(-1, 2)
        images = images.clone()
        images[rows] = gaussian_blur2d(images[rows], kernel, sigma, border_type="reflect")
        return images


class Solarize(Op):
    name = "solarize"

    def __init__(self, p: float = 0.2, threshold: float = 0.5):
        self.p, self.threshold = p, threshold

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        return {"applied": _bernoulli(self.p, batch_size, generator)}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        applied = _on(params, images)["applied"][:, None, None, None]
        return torch.where(applied & (images >= self.threshold), 1 - images, images)


class Rotate90(Op):
    """Rotation by a multiple of 90° (counter-clockwise); `quarter_turns` (B,) in {0, 1, 2, 3}."""

    name = "rotate90"

    def __init__(self, p: float = 1.0, quarter_turns=(0, 1, 2, 3)):
        self.p, self.quarter_turns = p, tuple(quarter_turns)

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        applied = _bernoulli(self.p, batch_size, generator)
        choices = torch.tensor(self.quarter_turns)
        turns = choices[torch.randint(len(choices), (batch_size,), generator=generator)]
        return {"quarter_turns": torch.where(applied, turns, 0), "applied": applied}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        turns = _on(params, images)["quarter_turns"]
        out = images.clone()
        for k in (1, 2, 3):
            rows = torch.nonzero(turns == k)[:, 0]
            if len(rows):
                out[rows] = torch.rot90(images[rows], k, dims=(-2, -1))
        return out


class Rotate(Op):
    """Rotation by a free angle in degrees (counter-clockwise), reflecting at the borders."""

    name = "rotate"

    def __init__(self, degrees=(-180.0, 180.0), p: float = 1.0):
        self.degrees, self.p = tuple(degrees), p

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        applied = _bernoulli(self.p, batch_size, generator)
        angle = torch.where(applied, _uniform(*self.degrees, batch_size, generator), 0.0)
        return {"angle": angle, "applied": applied}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        angle = _on(params, images)["angle"].to(images.dtype)
        return rotate(images, angle, mode="bilinear", padding_mode="reflection", align_corners=False)
