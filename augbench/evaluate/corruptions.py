"""ImageNet-C's 15 corruptions × 5 severities, on batched float tensors (B, 3, H, W) in [0, 1].

Hendrycks & Dietterich (ICLR 2019) generate ImageNet-C and CIFAR-10-C with
NumPy, scikit-image, ImageMagick (Wand) and a folder of frost photographs.
augbench runs them on tensors with torch, kornia and torchvision instead, so
any dataset can be corrupted on the fly, batched and seeded, with no
downloads. Severity parameters are those of their CIFAR-10-C generator
(`make_cifar_c.py`, for 32-px images); lengths in pixels are scaled by
H / 32 so larger images see the same relative corruption. Where their code
depends on something we do not ship, a documented stand-in is used:

- `motion_blur` and `snow`: ImageMagick's motion blur (through Wand) →
  the same filter on tensors (`_imagemagick_motion_blur`).
- `frost`: the frost photographs are not shipped → a procedural frost layer
  (fractal noise sharpened into crystal-like ridges, tinted blue-white),
  blended with the image weights of the original.
- `fog`: the diamond-square plasma fractal → spectral fractal noise with the
  same per-octave decay (`wibbledecay`).
- `elastic_transform`: severities made monotone (see its docstring).
- `glass_blur`: their pixel-swapping loop → every pixel taking a random
  neighbour within `max_delta` per iteration, between the two blurs.

Every corruption is a function `(images, severity, generator) -> images`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import hsv_to_rgb, rgb_to_grayscale, rgb_to_hsv
from kornia.filters import filter2d, gaussian_blur2d
from PIL import Image
from torch import Tensor
from torchvision.ops import roi_align

SEVERITIES = (1, 2, 3, 4, 5)


def _scale(images: Tensor) -> float:
    return images.shape[-1] / 32


def _odd(value: float) -> int:
    """The odd integer nearest `value`, at least 3."""
    return max(3, 2 * math.floor(value / 2) + 1)


def _blur(images: Tensor, sigma: float) -> Tensor:
    if sigma <= 0:
        return images
    return gaussian_blur2d(images, _odd(6 * sigma), (sigma, sigma), border_type="reflect")


def gaussian_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return (images + torch.randn(images.shape, generator=generator) * c).clamp(0, 1)


def shot_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = (500, 250, 100, 75, 50)[severity - 1]
    return (torch.poisson(images * c, generator=generator) / c).clamp(0, 1)


def impulse_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Salt and pepper on each value with probability `amount`, as skimage's random_noise('s&p')."""
    amount = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    hit = torch.rand(images.shape, generator=generator) < amount
    salt = torch.rand(images.shape, generator=generator) < 0.5
    return torch.where(hit, salt.to(images.dtype), images)


def defocus_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Their `disk`: the pixels within `radius` of the centre, normalised, then Gaussian-blurred (`alias_sigma`) in
    a zero margin wide enough that none of the blur folds back."""
    radius, alias_sigma = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))[severity - 1]
    radius, alias_sigma = radius * _scale(images), alias_sigma * _scale(images)
    alias_size = _odd(6 * alias_sigma)
    half = math.floor(radius) + alias_size // 2
    ticks = torch.arange(-half, half + 1, dtype=images.dtype)
    disk = (ticks[:, None] ** 2 + ticks[None, :] ** 2 <= radius**2).to(images.dtype)
    disk = gaussian_blur2d((disk / disk.sum())[None, None], alias_size, (alias_sigma, alias_sigma),
                           border_type="constant")[0]
    return filter2d(images, disk / disk.sum(), border_type="reflect").clamp(0, 1)


def glass_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    sigma, max_delta, iterations = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))[severity - 1]
    scale = _scale(images)
    images = _blur(images, sigma * scale)
    delta = max(1, round(max_delta * scale))
    batch, _, height, width = images.shape
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    for _ in range(iterations):
        dy = torch.randint(-delta, delta + 1, (batch, height, width), generator=generator)
        dx = torch.randint(-delta, delta + 1, (batch, height, width), generator=generator)
        source = (rows + dy).clamp(0, height - 1) * width + (cols + dx).clamp(0, width - 1)
        images = images.flatten(2).gather(2, source.flatten(1)[:, None].expand(-1, 3, -1)).view_as(images)
    return _blur(images, sigma * scale).clamp(0, 1)


def _imagemagick_motion_blur(images: Tensor, radius: float, sigma: float, degrees: Tensor) -> Tensor:
    """ImageMagick's MotionBlurImage, per image at `degrees` (B,): a one-sided Gaussian along the angle.

    Output pixel p is Σᵢ wᵢ · image(p + round(i · (cos θ, sin θ))) for
    i = 0 … 2⌈radius⌉, wᵢ ∝ exp(−i² / 2σ²), with edge pixels repeated.
    Written here because kornia's and torchvision's motion blurs are centred
    lines of equal weights: a different filter from the one ImageNet-C used.
    """
    taps = torch.arange(2 * math.ceil(radius) + 1, dtype=images.dtype)
    weights = torch.exp(-(taps**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    radians = torch.deg2rad(degrees.to(images.dtype))[:, None]
    # ImageMagick rounds an offset v to ceil(v − 0.5).
    dx = torch.ceil(taps * torch.cos(radians) - 0.5).long()  # (B, taps)
    dy = torch.ceil(taps * torch.sin(radians) - 0.5).long()
    channels, height, width = images.shape[1:]
    rows, cols = torch.arange(height)[None, :, None], torch.arange(width)[None, None, :]
    flat = images.flatten(2)
    total = torch.zeros_like(flat)
    for tap, weight in enumerate(weights.tolist()):
        y = (rows + dy[:, tap, None, None]).clamp(0, height - 1)
        x = (cols + dx[:, tap, None, None]).clamp(0, width - 1)
        source = (y * width + x).flatten(1)[:, None].expand(-1, channels, -1)
        total += weight * flat.gather(2, source)
    return total.view_as(images)


def _uniform_degrees(low: float, high: float, batch: int, generator: torch.Generator) -> Tensor:
    return torch.rand(batch, generator=generator) * (high - low) + low


def motion_blur_corruption(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    radius, sigma = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))[severity - 1]
    degrees = _uniform_degrees(-45, 45, len(images), generator)
    scale = _scale(images)
    return _imagemagick_motion_blur(images, radius * scale, sigma * scale, degrees).clamp(0, 1)


def zoom_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    top = (1.06, 1.11, 1.16, 1.21, 1.26)[severity - 1]
    zooms = np.arange(1, top, 0.01)  # NumPy's, as theirs: its float64 steps decide whether `top` itself is in
    height, width = images.shape[-2:]
    index = torch.arange(len(images), dtype=images.dtype)[:, None]
    total = images.clone()
    for zoom in zooms.tolist():  # 1.0 included: their mean weighs the clean image twice
        half_w, half_h = width / zoom / 2, height / zoom / 2
        box = torch.tensor([width / 2 - half_w, height / 2 - half_h, width / 2 + half_w, height / 2 + half_h])
        rois = torch.cat([index, box.expand(len(images), 4)], dim=1)
        total += roi_align(images, rois, output_size=(height, width), aligned=True)
    return (total / (len(zooms) + 1)).clamp(0, 1)


def _fractal_noise(batch: int, size: int, decay: float, generator: torch.Generator) -> Tensor:
    """(B, 1, size, size) in [0, 1]: octaves of bicubically upsampled noise, octave k weighted decay^-k."""
    total = torch.zeros(batch, 1, size, size)
    octaves = max(1, math.ceil(math.log2(size)))
    for octave in range(octaves):
        cells = 2 ** (octave + 1)
        noise = torch.rand(batch, 1, cells, cells, generator=generator) - 0.5
        total += F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False) * decay**-octave
    low, high = total.amin((2, 3), keepdim=True), total.amax((2, 3), keepdim=True)
    return (total - low) / (high - low).clamp_min(1e-6)


def snow(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    loc, scale, zoom, threshold, radius, sigma, blend = (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    )[severity - 1]
    batch, _, height, width = images.shape
    coarse = max(2, round(height / zoom))
    layer = torch.randn(batch, 1, coarse, coarse, generator=generator) * scale + loc
    layer = F.interpolate(layer, size=(height, width), mode="bilinear", align_corners=False)
    layer = torch.where(layer < threshold, 0.0, layer).clamp(0, 1)
    degrees = _uniform_degrees(-135, -45, batch, generator)  # around −90°: streaks that fall
    layer = _imagemagick_motion_blur(layer, radius * _scale(images), sigma * _scale(images), degrees)
    grey = rgb_to_grayscale(images) * 1.5 + 0.5
    images = blend * images + (1 - blend) * torch.maximum(images, grey)
    return (images + layer + layer.flip(-1, -2)).clamp(0, 1)


def frost(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    image_weight, frost_weight = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))[severity - 1]
    batch, _, size, _ = images.shape
    noise = _fractal_noise(batch, size, 1.4, generator)
    ridges = 1 - (2 * noise - 1).abs()  # sharp bright ridges where the noise crosses its middle: ice crystals
    layer = ridges**3 * 0.8 + _fractal_noise(batch, size, 2.0, generator) * 0.4
    tint = torch.tensor([0.85, 0.93, 1.0]).view(1, 3, 1, 1)
    return (image_weight * images + frost_weight * layer * tint).clamp(0, 1)


def fog(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    strength, decay = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))[severity - 1]
    peak = images.amax((1, 2, 3), keepdim=True)
    layer = _fractal_noise(len(images), images.shape[-1], decay, generator)
    return ((images + strength * layer) * peak / (peak + strength)).clamp(0, 1)


def brightness(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    hsv = rgb_to_hsv(images)
    hsv = torch.cat([hsv[:, :2], (hsv[:, 2:] + c).clamp(0, 1)], dim=1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def contrast(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    mean = images.mean((2, 3), keepdim=True)  # per channel, as theirs
    return ((images - mean) * c + mean).clamp(0, 1)


def elastic_transform(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """A random affine jitter then a Gaussian-smoothed random displacement field (alpha, sigma as image fractions).

    The original's severities trade affine jitter against displacement so
    that severity 1 can move pixels more than severity 5; ours raise both
    monotonically over the same ranges.
    """
    alpha, sigma, affine = ((0.04, 0.06, 0.01), (0.06, 0.05, 0.02), (0.08, 0.05, 0.03), (0.1, 0.04, 0.04),
                            (0.12, 0.03, 0.05))[severity - 1]
    batch, _, height, width = images.shape
    jitter = (torch.rand(batch, 2, 3, generator=generator) * 2 - 1) * affine
    theta = torch.eye(2, 3).expand(batch, 2, 3) + jitter
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if alpha > 0:
        field = torch.rand(batch, 2, height, width, generator=generator) * 2 - 1
        field = _blur(field, sigma * height)
        grid = grid + field.permute(0, 2, 3, 1) * alpha * 2  # alpha of the side is 2·alpha in [-1, 1] units
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp(0, 1)


def pixelate(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Box-filter down to `c` of the side and back up, through Pillow as theirs: torch's `area` resize weighs the
    input pixels a box overlaps equally rather than by how much of them it covers."""
    c = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    height, width = images.shape[-2:]
    small = (max(1, int(width * c)), max(1, int(height * c)))
    return _through_pillow(images, lambda image: image.resize(small, Image.BOX).resize((width, height), Image.BOX))


def _through_pillow(images: Tensor, change: Callable[[Image.Image], Image.Image]) -> Tensor:
    """`change` applied to each image as an 8-bit Pillow image."""
    pixels = (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    changed = [np.asarray(change(Image.fromarray(image)).convert("RGB")) for image in pixels]
    return torch.from_numpy(np.stack(changed)).permute(0, 3, 1, 2).float() / 255


def jpeg_compression(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """A JPEG round trip through Pillow, as the original (torchvision's JPEG codec is deprecated)."""
    quality = (80, 65, 58, 50, 40)[severity - 1]

    def round_trip(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return Image.open(buffer)

    return _through_pillow(images, round_trip)


CORRUPTIONS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur_corruption,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}


def corrupt(images: Tensor, name: str, severity: int, generator: torch.Generator) -> Tensor:
    """`images` (B, 3, H, W) float in [0, 1] on the CPU, corrupted by `name` at `severity` (1–5)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"corruption {name!r} is unknown; known: {list(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity={severity}: expected one of {SEVERITIES}")
    return CORRUPTIONS[name](images, severity, generator)
