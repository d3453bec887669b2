"""Augmentation ops that remember: sample per-image parameters, then apply them to a batch.

Every op has two steps: `sample(batch_size, generator) -> params` draws the
parameters of each image on the CPU generator (so a step's augmentation is a
function of its seed, on any device), and `apply(images, params) -> images`
applies them to float images in [0, 1] of shape (B, 3, H, W) on the images'
device. `apply` is deterministic, so replaying recorded parameters reproduces
a view exactly. Every op records an `applied` mask (B,) for its probability
`p`, and parameters that mean "no change" where it was not applied.

The photometric maths is torchvision's, batched with one factor per image
(colour jitter written as one pass per slot of its random order, since no
library records per-image order; blur is kornia's); crops are
resampled by grid_sample when enlarged and roi_align (anti-aliased) when
shrunk, rotations by kornia's rotate. Apply on the device the images are on:
no op loops over images in Python.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
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


def _rows_where(mask: Tensor, images: Tensor) -> Tensor:
    """Indices of the true rows of `mask`, found where the parameters were drawn (the host, in training) and
    then moved to the images' device: `nonzero` of a GPU tensor waits for every kernel queued before it."""
    return torch.nonzero(mask)[:, 0].to(images.device, non_blocking=True)


class Op:
    """Base of all ops: a name, a probability, and the two steps."""

    name: str = "op"
    p: float = 1.0
    # True when flipping an image horizontally before the op or after it gives the same result, as for per-pixel maps
    # and statistics of the whole image: a pipeline may then fold a later flip into an earlier crop (see Pipeline).
    commutes_with_flip: bool = False

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        raise NotImplementedError

    def apply(self, images: Tensor, params: Params) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


class RandomResizedCrop(Op):
    """torchvision's RandomResizedCrop sampling, batched; `box` is (x0, y0, x1, y1) in [0, 1] of a square input.

    One difference: boxes are continuous, sampled without knowing the input's
    pixel size, where torchvision rounds width and height to whole pixels. On
    a 32-px input torchvision's rounding accepts some attempts a little wider
    than the image as whole-image crops; here they are rejected, so the mean
    crop area at scale (0.2, 1) is 0.539 against torchvision's 0.552. At
    224 px the two agree to 0.002.
    """

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
        # torchvision's fallback: the largest centred box whose aspect ratio is within the range.
        fallback_width, fallback_height = min(1.0, self.ratio[1]), min(1.0, 1 / self.ratio[0])
        width = torch.where(fallback, fallback_width, width)
        height = torch.where(fallback, fallback_height, height)
        x0 = torch.where(fallback, 0.5, torch.rand(batch_size, generator=generator)) * (1 - width)
        y0 = torch.where(fallback, 0.5, torch.rand(batch_size, generator=generator)) * (1 - height)
        box = torch.stack([x0, y0, x0 + width, y0 + height], dim=1)
        return {"box": box, "applied": torch.ones(batch_size, dtype=torch.bool)}

    def apply(self, images: Tensor, params: Params, flip: Tensor | None = None) -> Tensor:
        """The crops; `flip` (B,) bool mirrors those crops horizontally as well, for a pipeline that folds a flip in."""
        params = _on(params, images)
        box = params["box"].to(images.dtype)  # (B, 4)
        height, width = images.shape[-2:]
        if height != width:
            # Boxes are sampled as fractions of a square: on another shape their aspect ratios would be stretched.
            raise ValueError(f"RandomResizedCrop needs square images, got {height}×{width}; augbench's datasets give "
                             "square ones (data.resize: center_crop or stretch)")
        if self.size >= max(height, width):
            # Every crop is enlarged (or kept): one bilinear sample per output pixel, which is what roi_align
            # does here too, and grid_sample's vectorised kernel is several times faster than roi_align's.
            return _resample_boxes(images, box, self.size, None if flip is None else flip.to(images.device))
        scale = images.new_tensor([width, height, width, height])
        index = torch.arange(len(images), device=images.device, dtype=images.dtype)[:, None]
        rois = torch.cat([index, box * scale], dim=1)
        # roi_align averages ceil(shrink factor)² bilinear samples per output pixel: a box filter, a little sharper
        # than torchvision's antialiased (triangle-filter) resize.
        crops = roi_align(images, rois, output_size=self.size, aligned=True)
        return crops if flip is None else HorizontalFlip().apply(crops, {"applied": flip})


def _resample_boxes(images: Tensor, box: Tensor, size: int, mirrored: Tensor | None = None) -> Tensor:
    """Bilinear crops (B, C, size, size) of `box` (B, 4) = (x0, y0, x1, y1) in [0, 1], sampled at bin centres.

    The same sample points and border clamping as roi_align(aligned=True) with
    one sample per bin: the centre u = (2j + 1) / size − 1 ∈ (−1, 1) of output
    pixel j maps to the normalised input coordinate (x1 − x0)·u + x0 + x1 − 1,
    or, for the crops `mirrored` (B,) flips horizontally, −(x1 − x0)·u + x0 +
    x1 − 1.
    """
    x0, y0, x1, y1 = box.unbind(dim=1)
    width = x1 - x0 if mirrored is None else (x1 - x0) * (1 - 2 * mirrored.to(box.dtype))
    centres = torch.arange(size, device=box.device, dtype=box.dtype).mul_(2 / size).add_(1 / size - 1)  # (S,) u
    columns = torch.addcmul((x0 + x1 - 1)[:, None], width[:, None], centres)  # (B, S)
    rows = torch.addcmul((y0 + y1 - 1)[:, None], (y1 - y0)[:, None], centres)  # (B, S)
    # A crop's grid is separable: x depends on the column only, y on the row only. affine_grid would materialise a
    # base grid for every image and multiply it by each image's matrix (a bmm), 3.5x slower at 96 px.
    grid = torch.stack([columns[:, None, :].expand(-1, size, -1), rows[:, :, None].expand(-1, -1, size)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class HorizontalFlip(Op):
    name = "flip"

    def __init__(self, p: float = 0.5):
        self.p = p

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        return {"applied": _bernoulli(self.p, batch_size, generator)}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        weight = _on(params, images)["applied"].to(images.dtype)[:, None, None, None]
        flipped = images.flip(-1)
        return torch.lerp(images, flipped, weight, out=flipped)  # exact at 0/1, faster than where


class ColorJitter(Op):
    """Brightness, contrast, saturation and hue in a random order per image, as torchvision does.

    `factors` (B, 4) holds [brightness, contrast, saturation, hue]; hue is a
    shift in turns (fractions of the hue circle). Images not jittered get the
    identity [1, 1, 1, 0]. `order` (B, 4) is each image's permutation of the
    four adjustments.

    The maths is torchvision's (`adjust_brightness`, `adjust_contrast`,
    `adjust_saturation`, `adjust_hue`), written batched with one factor per
    image: at each of the four slots of the order, the images whose
    adjustment there is a blend (brightness, contrast or saturation) make it
    in one pass, each toward its own target, and those shifting their hue make
    that in another, instead of one call per adjustment type.
    """

    name = "color_jitter"
    commutes_with_flip = True
    BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)

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
        # The batch reordered by the slot of each image's hue shift, unjittered images last: each slot's hue shifts
        # are then one contiguous slice, shifted in place, and its blends two slices that skip them and the
        # unjittered images. Gathering the hue rows at each slot instead cost a quarter of the op at 96 px, and
        # index_select gathers rows 2-3x faster than indexing or index_copy. The slices' bounds are counted where
        # the parameters were drawn (the host, in training) before they move: counted on a GPU, reading them
        # back would make each step wait for the device.
        hue_slot = torch.where(params["applied"], (params["order"] == self.HUE).int().argmax(dim=1), 4)  # (B,)
        bounds = [0, *torch.bincount(hue_slot, minlength=5).cumsum(0).tolist()]
        jittered_count = bounds[4]
        if not jittered_count:
            return images
        params = _on(params, images)
        by_hue_slot = torch.argsort(hue_slot, stable=True).to(images.device, non_blocking=True)
        order = params["order"][by_hue_slot]  # (B, 4)
        factors = params["factors"][by_hue_slot].to(images.dtype)  # (B, 4)
        out = images.index_select(0, by_hue_slot)  # a copy: adjusted in place
        for slot in range(4):
            start, stop = bounds[slot], bounds[slot + 1]
            for part in (slice(0, start), slice(stop, jittered_count)):
                if part.stop > part.start:
                    _blend_adjustments(out[part], order[part, slot], factors[part], out=out[part])
            if stop > start:
                shift_hue(out[start:stop], factors[start:stop, self.HUE], out=out[start:stop])
        return out.index_select(0, torch.argsort(by_hue_slot))


def _blend_adjustments(images: Tensor, adjustment: Tensor, factors: Tensor, out: Tensor) -> Tensor:
    """Brightness, contrast or saturation as torchvision's blends, each image with its own factor and target.

    torchvision blends an image toward black (brightness), its mean grey level
    (contrast) or its grey image (saturation): out = clamp(f·x + (1 − f)·ref).
    `adjustment` (B,) names each image's blend (never the hue shift); `out`
    may be `images` itself.
    """
    weight = factors.gather(1, adjustment[:, None])[:, :, None, None]  # (B, 1, 1, 1)
    reference = _luma(images)  # (B, 1, H, W)
    mean_gray = reference.mean(dim=(-2, -1), keepdim=True)
    to_gray = (adjustment == ColorJitter.SATURATION).to(images.dtype)[:, None, None, None]
    to_mean = (adjustment == ColorJitter.CONTRAST).to(images.dtype)[:, None, None, None]
    # The reference by 0/1 weights, exact, rather than torch.where (see shift_hue): grey, mean grey or black.
    # In place wherever possible: each fresh image-sized tensor costs page faults as well as memory traffic.
    reference.mul_(to_gray).add_(mean_gray * to_mean)
    return torch.lerp(reference, images, weight, out=out).clamp_(0.0, 1.0)


def _luma(images: Tensor) -> Tensor:
    """kornia's (and ITU-R 601's) grey level (B, 1, H, W) of RGB images, accumulated in one buffer.

    Elementwise, not a matrix product over the channels (1.5x faster): BLAS may round differently with another
    thread count, and a view must not depend on how many threads made it (a DDP rank and a single process differ).
    """
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return (red * 0.299).add_(green, alpha=0.587).add_(blue, alpha=0.114)


# Where each output channel's hue ramp is centred, in sextants: red at 3, green at 5, blue at 1 (see _rotate_hue).
_CHANNEL_PHASES = (3.0, 5.0, 1.0)


def shift_hue(images: Tensor, turns: Tensor, out: Tensor | None = None) -> Tensor:
    """Rotate the hue of images (B, 3, H, W) in [0, 1] by `turns` (B,) of the hue circle, as torchvision's adjust_hue.

    The result goes to `out` when given, which may be `images` itself. On
    contiguous float32 CPU images of 64×64 pixels or more, the rotation's
    thirty elementwise passes run as a few loops that torch.compile fuses
    (`_CompiledHueRotation`; `compiled_hue_rotation(False)` turns it off
    for a block); anywhere else, or where compiling fails, as eager ops
    (`_rotate_hue`).
    """
    if not _compiled_hue_rotation.usable(images):
        return _rotate_hue(images, turns, out)
    with torch.no_grad():  # one grad mode for every caller: the compiled graph is guarded on it
        rotated = _compiled_hue_rotation(images, turns)
    # Copied into `out` rather than written there by the kernel: with `out` aliasing `images` (the jitter's in-place
    # call), the fused loop read channels it had already overwritten (errors up to 0.97).
    return rotated if out is None else out.copy_(rotated)


def _rotate_hue(images: Tensor, turns: Tensor, out: Tensor | None = None) -> Tensor:
    """`shift_hue` as eager ops; the result goes to `out` when given, which may be `images` itself.

    A hue shift keeps the value V = max and the chroma C = max − min of each
    pixel, so the HSV round trip reduces to the hue angle h (in sextants) and
    the closed-form HSV→RGB conversion: channel n is V − C·ramp(h − phase_n)
    with ramp(y) = clamp(||y| − 3| − 1, 0, 1) for y in (−5, 5]. That is a third
    of the passes over the image of a full RGB→HSV→RGB conversion
    (torchvision's, kornia's). Branches are blends with 0/1 weights
    (`torch.lerp` returns either end exactly), not `torch.where`, whose CPU
    kernel is not vectorised and was 5–10× slower than an arithmetic pass;
    temporaries are reused in place for the same reason as in
    `_blend_adjustments`.
    """
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]  # (B, 1, H, W) each
    # Elementwise over the three channel planes: a reduction over dim 1 (aminmax) is several times slower.
    maximum = torch.maximum(red, green)
    torch.maximum(maximum, blue, out=maximum)
    chroma = torch.minimum(red, green)
    torch.minimum(chroma, blue, out=chroma)
    chroma.neg_().add_(maximum)
    # Grey pixels (C = 0) have zero channel differences, so any finite inverse gives them hue 0, as torchvision does.
    inverse = chroma.clamp_min(1e-12).reciprocal_()
    # h = offset + difference / C by the channel that holds the maximum, red first as in torchvision (and Pillow):
    # blue 4 + (r − g)/C, green 2 + (b − r)/C, red (g − b)/C. The comparisons write float 0/1 weights directly:
    # twice as fast as a bool mask, which would then need converting.
    is_red = torch.eq(maximum, red, out=torch.empty_like(maximum))
    is_green = torch.eq(maximum, green, out=torch.empty_like(maximum))
    difference = torch.sub(red, green)
    torch.lerp(difference, torch.sub(blue, red), is_green, out=difference)
    torch.lerp(difference, torch.sub(green, blue), is_red, out=difference)
    shift = 6.0 * turns.view(-1, 1, 1, 1)  # the rotation rides on the offset, without a pass of its own
    hue = torch.add(shift + 4.0, is_green, alpha=-2.0)
    torch.lerp(hue, shift.expand_as(hue), is_red, out=hue)
    hue.addcmul_(difference, inverse)
    hue.add_(torch.floor(hue * (1 / 6)), alpha=-6.0)  # into [0, 6): floor is a vectorised pass, remainder is not
    # The channels are not read from here on, so `out` may be `images`.
    out = torch.empty_like(images) if out is None else out
    torch.sub(hue, images.new_tensor(_CHANNEL_PHASES).view(1, 3, 1, 1), out=out)
    # V − C·(clamp(||y| − 3|, 1, 2) − 1) = (V + C) − C·clamp(||y| − 3|, 1, 2): one pass over three channels fewer.
    out.abs_().sub_(3.0).abs_().clamp_(1.0, 2.0)
    return torch.addcmul(maximum.add_(chroma), chroma, out, value=-1.0, out=out)


class _CompiledHueRotation:
    """`_rotate_hue` compiled by torch.compile (inductor's C++ backend) on first use, once per process.

    Why: on the CPU each eager op is a pass over memory, and the rotation's
    thirty passes made two thirds of the colour jitter's time; the fused loops
    read each pixel once. Two MoCo v2 views of 256 images, compiled against
    eager, in one process: 1.27-1.46x at 96 px, 1.23x at 128 px, 0.96x and
    1.23x at 64 px in two runs, but 0.98x at 32 px and 1.05x at 48 px, where a
    batch's passes stay in the cache; hence only from `min_pixels` up, and
    only for contiguous images (the crops' output; the whole jitter compiled
    for channels_last images ran 3x slower than eager). The kernel is
    elementwise, so its results depend neither on the thread count nor on how
    rows are split between calls, as the eager ops'; they differ from the
    eager ops' by float rounding (< 1e-6). Compiling takes 15-25 s and a C++
    compiler: without one, the first call warns and the eager ops take over.
    GPUs, not measured, keep the eager ops.
    """

    min_pixels = 64 * 64

    def __init__(self):
        self.compiles = True  # until compiling fails: then never tried again in this process
        self._compiled = None  # compiled on first use: importing torch.compile's machinery alone takes 1-3 s

    def usable(self, images: Tensor) -> bool:
        return (self.compiles and _HUE_ROTATION_COMPILED.get() and images.device.type == "cpu"
                and images.dtype == torch.float32
                and images.shape[-2] * images.shape[-1] >= self.min_pixels and images.is_contiguous()
                and not images.requires_grad)

    def __call__(self, images: Tensor, turns: Tensor) -> Tensor:
        if self._compiled is None:
            self._compiled = torch.compile(_rotate_hue, dynamic=True)
        try:
            return self._compiled(images, turns)
        except Exception as error:  # torch.compile's failures vary by platform (no C++ compiler, no headers, ...)
            self.compiles = False
            reason = str(error).splitlines()[0] if str(error) else ""
            warnings.warn(f"augbench: compiling the hue rotation failed ({type(error).__name__}: {reason}); the colour "
                          f"jitter runs as eager ops from here on: the same maths, slower. "
                          f"trainer.compile_augmentation=false skips the attempt", stacklevel=3)
            return _rotate_hue(images, turns)


_compiled_hue_rotation = _CompiledHueRotation()
# A context variable, not a module flag: the choice holds for the block that makes it (a pretraining call's
# `trainer.compile_augmentation`), and the rest of the process keeps the default.
_HUE_ROTATION_COMPILED: ContextVar[bool] = ContextVar("hue_rotation_compiled", default=True)


@contextmanager
def compiled_hue_rotation(enabled: bool) -> Iterator[None]:
    """Whether `shift_hue` runs compiled where it can inside this block; outside any such block it does."""
    token = _HUE_ROTATION_COMPILED.set(enabled)
    try:
        yield
    finally:
        _HUE_ROTATION_COMPILED.reset(token)


class Grayscale(Op):
    name = "grayscale"
    commutes_with_flip = True

    def __init__(self, p: float = 0.2):
        self.p = p

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        return {"applied": _bernoulli(self.p, batch_size, generator)}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        weight = _on(params, images)["applied"].to(images.dtype)[:, None, None, None]
        return torch.lerp(images, _luma(images).expand_as(images), weight)  # exact at 0/1, faster than where


class GaussianBlur(Op):
    """Blur with σ in pixels drawn per image; the kernel spans about 10 % of the image side, as in SimCLR/BYOL."""

    name = "blur"
    commutes_with_flip = True  # a symmetric kernel, reflected at the borders

    def __init__(self, sigma=(0.1, 2.0), p: float = 0.5, kernel_fraction: float = 0.1):
        self.sigma, self.p, self.kernel_fraction = tuple(sigma), p, kernel_fraction

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        applied = _bernoulli(self.p, batch_size, generator)
        sigma = torch.where(applied, _uniform(*self.sigma, batch_size, generator), 0.0)
        return {"sigma": sigma, "applied": applied}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        rows = _rows_where(params["applied"], images)
        if not len(rows):
            return images
        params = _on(params, images)
        kernel = max(3, 2 * round(self.kernel_fraction * images.shape[-1] / 2) + 1)
        sigma = params["sigma"][rows].to(images.dtype)[:, None].expand(-1, 2)
        images = images.clone()
        images[rows] = gaussian_blur2d(images[rows], kernel, sigma, border_type="reflect")
        return images


class Solarize(Op):
    name = "solarize"
    commutes_with_flip = True

    def __init__(self, p: float = 0.2, threshold: float = 0.5):
        self.p, self.threshold = p, threshold

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        return {"applied": _bernoulli(self.p, batch_size, generator)}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        applied = _on(params, images)["applied"][:, None, None, None]
        inverted = 1 - images
        return torch.where(applied & (images >= self.threshold), inverted, images, out=inverted)


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
        out = images.clone()
        for k in (1, 2, 3):
            rows = _rows_where(params["quarter_turns"] == k, images)
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
