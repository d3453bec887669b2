"""Shapes World: the embedded default dataset, procedural and seeded.

Each image holds one object (or several, for counting) whose generating
factors are all returned as labels: shape class, hue (continuous and binned),
orientation (continuous and binned), scale, position, texture, background and
object count, plus a per-pixel instance mask. Labels derived from the
rendering serve the pixel-wise and localisation tasks: the object's bounding
box, a foreground mask, a semantic map (shape class per pixel), an edge map
and a distance-to-edge map. With `variants` > 1 each shape comes in that many
fine-grained variants (the template squashed along its own axis) and
`shape_variant` names the pair; `variants: 1` renders exactly the images of
earlier versions for the same seed. Textures and backgrounds come
from real photographs that ship inside scikit-image (no download) and from
procedural patterns, so the images carry natural-image statistics while every
factor stays known.

Rendering is batched: each shape is an anti-aliased template
(`augbench.data.shapes`) warped into place with one `grid_sample` call, photo
crops are taken with `roi_align`, so 10,000 32-px images take a few seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.color import gray2rgb, hsv2rgb
from torchvision.ops import roi_align

from augbench.data.dataset import SPLITS, ImageDataset
from augbench.data.shapes import DEFAULT_SHAPES, SHAPES, TEMPLATE_MARGIN, shape_templates

TEXTURES = ("flat", "brick", "grass", "gravel", "stripes", "dots", "noise")
PHOTO_TEXTURES = ("brick", "grass", "gravel")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
          "retina", "camera", "coins", "moon")
SEEN_PHOTOS = PHOTOS[:6]
HELD_OUT_PHOTOS = PHOTOS[6:]
BACKGROUND_KINDS = ("photo", "flat")
SHAPES_WORLD_LABELS = ("shape", "hue", "hue_bin", "orientation", "orientation_bin", "scale", "position", "texture",
                       "background", "count", "mask", "box", "foreground", "semantic", "edges", "distance", "variant",
                       "shape_variant")
_CHUNK = 1024


# The settings each named world gives the keys left unset (None) in ShapesWorldConfig.
WORLDS: dict[str, dict] = {
    # Objects of a 12-hue palette, one colour per object, on three grey levels, several copies of one shape in a
    # pose: what two crops of an image share is the shape, so contrastive views must learn it (DESIGN.md).
    "objects": {
        "textures": ["flat"], "backgrounds": ["flat"], "scale": [0.7, 0.95], "objects": [4, 4], "hue_palette": 12,
        "saturation": [0.8, 0.8], "value": [0.9, 0.9], "flat_greys": [0.3, 0.5, 0.7], "shared_pose": True,
        "hue_per_object": True,
    },
    # augbench's world before the objects world: one textured object of continuous colour on a photo crop or a flat
    # colour. Two crops share the background's photo crop and the object's colour, which tell images apart more
    # cheaply than the shape does, so the presets learn colour and backgrounds, not the object (feature suppression).
    "photo_backgrounds": {
        "textures": list(TEXTURES), "backgrounds": list(BACKGROUND_KINDS), "scale": [0.45, 0.85], "objects": [1, 1],
        "hue_palette": 0, "saturation": [0.65, 1.0], "value": [0.7, 1.0], "flat_greys": [], "shared_pose": False,
        "hue_per_object": False,
    },
}
DEFAULT_WORLD = "objects"


@dataclass
class ShapesWorldConfig:
    """Generation settings; the defaults are the quickstart's data.

    `world` names a design of WORLDS, which sets every key below that is left
    unset (None); a key given explicitly overrides it.

    `scale` is the object's diameter as a fraction of its grid cell;
    `objects` is the inclusive range of the object count. Several objects
    share shape and texture (and orientation and scale with `shared_pose`,
    hue unless `hue_per_object`) and are placed in distinct cells of a grid,
    so the count is unambiguous; the pose and hue labels describe object 0.
    `hue_palette` k > 0 draws hues from the centres of k equal bins (0:
    continuous); `flat_greys` lists the grey levels a flat background takes
    (empty: a continuous colour), each a class of the `background` label.
    """

    name: str = "shapes_world"
    world: str = DEFAULT_WORLD
    image_size: int = 32
    seed: int = 0
    train_size: int = 10_000
    val_size: int = 1_000
    test_size: int = 2_000
    shapes: list[str] = field(default_factory=lambda: list(DEFAULT_SHAPES))
    textures: list[str] | None = None
    backgrounds: list[str] | None = None
    photos: list[str] = field(default_factory=lambda: list(SEEN_PHOTOS))
    scale: list[float] | None = None
    orientation: list[float] = field(default_factory=lambda: [0.0, 360.0])
    objects: list[int] | None = None
    hue_bins: int = 12
    orientation_bins: int = 8
    variants: int = 1
    variant_squash: float = 0.35
    hue_palette: int | None = None
    saturation: list[float] | None = None
    value: list[float] | None = None
    flat_greys: list[float] | None = None
    shared_pose: bool | None = None
    hue_per_object: bool | None = None

    def __post_init__(self):
        if self.world not in WORLDS:
            raise ValueError(f"world={self.world!r}: unknown; known: {list(WORLDS)}")
        if any(getattr(self, key) is None for key in WORLDS[self.world]):
            self.resolved()  # validates the settings the world fills in
            return
        _check_names("shapes", self.shapes, SHAPES)
        _check_names("textures", self.textures, TEXTURES)
        _check_names("backgrounds", self.backgrounds, BACKGROUND_KINDS)
        if "photo" in self.backgrounds or self.photos:  # a misspelt photo is an error even where none is drawn
            _check_names("photos", self.photos, PHOTOS)
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale={list(self.scale)}: expected [low, high] with 0 < low <= high <= 1")
        if len(self.objects) != 2 or not 1 <= self.objects[0] <= self.objects[1]:
            raise ValueError(f"objects={list(self.objects)}: expected [min, max] with 1 <= min <= max")
        if self.image_size < 8:
            raise ValueError(f"image_size={self.image_size}: must be at least 8")
        if self.variants < 1 or not 0 <= self.variant_squash < 1:
            raise ValueError(f"variants={self.variants}, variant_squash={self.variant_squash}: expected variants >= 1 "
                             "and 0 <= variant_squash < 1")
        if self.hue_palette < 0:
            raise ValueError(f"hue_palette={self.hue_palette}: expected 0 (continuous) or a number of hues")
        for key in ("saturation", "value"):
            low_high = list(getattr(self, key))
            if len(low_high) != 2 or not 0 <= low_high[0] <= low_high[1] <= 1:
                raise ValueError(f"{key}={low_high}: expected [low, high] with 0 <= low <= high <= 1")
        if not all(0 <= grey <= 1 for grey in self.flat_greys):
            raise ValueError(f"flat_greys={list(self.flat_greys)}: grey levels lie in [0, 1]")

    def resolved(self) -> ShapesWorldConfig:
        """This config with each key left unset taken from its world. The unset keys stay None in the config
        itself, so a config merged over with another `world` takes that world's settings, not the first's."""
        unset = {key: copy.deepcopy(value) for key, value in WORLDS[self.world].items() if getattr(self, key) is None}
        return dataclasses.replace(self, **unset) if unset else self

    def split_size(self, split: str) -> int:
        return {"train": self.train_size, "val": self.val_size, "test": self.test_size}[split]


def _check_names(key: str, names: list[str], known) -> None:
    if not names:
        raise ValueError(f"{key} is empty")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{key}: unknown {unknown}; known: {list(known)}")


def load_shapes_world(config: ShapesWorldConfig, split: str) -> ImageDataset:
    """Generate one split; the same config and split always give the same images."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    config = config.resolved()
    rng = np.random.default_rng([config.seed, SPLITS.index(split)])
    factors = _sample_factors(config, config.split_size(split), rng)
    # Variants come from a stream of their own, so adding them leaves every other factor (and image) unchanged.
    variant_rng = np.random.default_rng([config.seed, SPLITS.index(split), 1])
    factors["variant"] = variant_rng.integers(0, config.variants, size=len(factors["shape"]))
    # Hues of objects 1.. come from a stream of their own too; object 0's hue (the label) is the image's.
    hue_rng = np.random.default_rng([config.seed, SPLITS.index(split), 2])
    factors["object_hue"] = np.repeat(factors["hue"][:, None], config.objects[1], axis=1)
    if config.hue_per_object:
        others = hue_rng.uniform(0, 1, size=(len(factors["hue"]), config.objects[1] - 1))
        factors["object_hue"][:, 1:] = _palette(others, config.hue_palette)
    images, masks = [], []
    for start in range(0, len(factors["shape"]), _CHUNK):
        chunk = {k: v[start : start + _CHUNK] for k, v in factors.items()}
        image, mask = _render(config, chunk)
        images.append(image)
        masks.append(mask)
    labels = {
        "shape": torch.from_numpy(factors["shape"]),
        "hue": torch.from_numpy(factors["hue"]).float(),
        "hue_bin": torch.from_numpy(np.floor(factors["hue"] * config.hue_bins).astype(np.int64)),
        "orientation": torch.from_numpy(factors["orientation"][:, 0]).float(),
        "orientation_bin": torch.from_numpy(
            np.floor(factors["orientation"][:, 0] / (360 / config.orientation_bins)).astype(np.int64)
        ),
        "scale": torch.from_numpy(factors["scale"][:, 0]).float(),
        "position": torch.from_numpy(factors["position"][:, 0]).float(),
        "texture": torch.from_numpy(factors["texture"]),
        "background": torch.from_numpy(factors["background"]),
        "count": torch.from_numpy(factors["count"]),
        "mask": torch.cat(masks) if masks else torch.zeros(0, config.image_size, config.image_size, dtype=torch.uint8),
        "variant": torch.from_numpy(factors["variant"]),
        "shape_variant": torch.from_numpy(factors["shape"] * config.variants + factors["variant"]),
    }
    labels |= _mask_labels(labels["mask"], labels["shape"])
    classes = {
        "shape": list(config.shapes),
        "texture": list(config.textures),
        "background": _background_names(config),
        "hue_bin": [f"{360 * i / config.hue_bins:.0f}°" for i in range(config.hue_bins)],
        "orientation_bin": [f"{360 * i / config.orientation_bins:.0f}°" for i in range(config.orientation_bins)],
        "shape_variant": [f"{shape}/{v}" for shape in config.shapes for v in range(config.variants)],
    }
    size = config.image_size
    empty = torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return ImageDataset("shapes_world", split, torch.cat(images) if images else empty, labels, classes)


def _mask_labels(instance: torch.Tensor, shape: torch.Tensor) -> dict[str, torch.Tensor]:
    """Labels read off the rendered instance mask (N, H, W).

    `box` (N, 4) is object 0's (x0, y0, x1, y1) pixel extent as fractions of
    the side; `semantic` is 0 on the background and shape + 1 on objects;
    `edges` marks pixels whose 3×3 neighbourhood holds two instance ids;
    `distance` is each pixel's Euclidean distance to the nearest edge pixel
    as a fraction of the side (SciPy's exact EDT).
    """
    n, size = instance.shape[0], instance.shape[-1]
    first = instance == 1
    cols, rows = first.any(dim=1), first.any(dim=2)  # (N, W), (N, H)
    ticks = torch.arange(size)
    def extent(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.where(hit, ticks, size).amin(dim=1)
        high = torch.where(hit, ticks + 1, 0).amax(dim=1)
        return low, high
    (x0, x1), (y0, y1) = extent(cols), extent(rows)
    box = torch.stack([x0, y0, x1, y1], dim=1).float() / size
    ids = instance.float()[:, None]
    edges = (F.max_pool2d(ids, 3, 1, 1) != -F.max_pool2d(-ids, 3, 1, 1))[:, 0]
    distance = np.stack([ndimage.distance_transform_edt(~e) for e in edges.numpy()]) if n else np.zeros((0, size, size))
    foreground = (instance > 0).to(torch.uint8)
    return {
        "box": box,
        "foreground": foreground,
        "semantic": foreground * (shape.to(torch.uint8)[:, None, None] + 1),
        "edges": edges.to(torch.uint8),
        "distance": torch.from_numpy(distance).float() / size,
    }


def _background_names(config: ShapesWorldConfig) -> list[str]:
    flat = [f"grey {level:.2f}" for level in config.flat_greys] if config.flat_greys else ["flat"]
    photos = list(config.photos) if "photo" in config.backgrounds else []
    return (flat if "flat" in config.backgrounds else []) + photos



def _sample_factors(config: ShapesWorldConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every random choice of the split, drawn up front so rendering is a pure function of them."""
    max_objects = config.objects[1]
    grid = math.ceil(math.sqrt(max_objects))
    count = rng.integers(config.objects[0], max_objects + 1, size=n)
    scale = rng.uniform(*config.scale, size=(n, max_objects)) / grid
    if config.shared_pose:
        scale[:] = scale[:, :1]
    # Objects sit in distinct cells of a grid×grid layout and inside their cell, so they never overlap.
    cells = np.argsort(rng.random((n, grid * grid)), axis=1)[:, :max_objects]
    offset = rng.uniform(size=(n, max_objects, 2))
    radius = scale[..., None] / 2
    cell_origin = np.stack([cells % grid, cells // grid], axis=-1) / grid
    position = cell_origin + radius + offset * (1 / grid - 2 * radius)
    backgrounds = _background_names(config)
    factors = {
        "shape": rng.integers(0, len(config.shapes), size=n),
        "hue": _palette(rng.uniform(0, 1, size=n), config.hue_palette),
        "saturation": rng.uniform(*config.saturation, size=n),
        "value": rng.uniform(*config.value, size=n),
        "orientation": rng.uniform(*config.orientation, size=(n, max_objects)) % 360,
        "scale": scale,
        "position": position,
        "count": count,
        "texture": rng.integers(0, len(config.textures), size=n),
        "texture_box": _random_boxes(rng, n, 0.3, 0.7),
        "texture_frequency": rng.uniform(3, 6, size=n),
        "texture_angle": rng.uniform(0, np.pi, size=n),
        "texture_phase": rng.uniform(0, 1, size=(n, 2)),
        "dot_radius": rng.uniform(0.2, 0.35, size=n),
        "noise": rng.uniform(0, 1, size=(n, 6, 6)),
        "background": rng.integers(0, len(backgrounds), size=n),
        "background_box": _random_boxes(rng, n, 0.25, 0.6),
        "background_colour": np.stack(
            [rng.uniform(0, 1, n), rng.uniform(0, 0.6, n), rng.uniform(0.15, 0.95, n)], axis=1
        ),
    }
    if config.shared_pose:
        factors["orientation"][:] = factors["orientation"][:, :1]
    return factors


def _palette(uniform: np.ndarray, size: int) -> np.ndarray:
    """`uniform` draws in [0, 1) snapped to the centres of `size` equal bins (unchanged when `size` is 0)."""
    return (np.floor(uniform * size) + 0.5) / size if size else uniform


def _random_boxes(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """Square boxes (n, 4) as (x0, y0, x1, y1) fractions of a square source image."""
    side = rng.uniform(low, high, size=n)
    corner = rng.uniform(0, 1, size=(n, 2)) * (1 - side)[:, None]
    return np.concatenate([corner, corner + side[:, None]], axis=1)


def _render(config: ShapesWorldConfig, f: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    n, size = len(f["shape"]), config.image_size
    image = _backgrounds(config, f)
    pattern = 0.45 + 0.55 * _texture_patterns(config, f)
    templates = shape_templates(tuple(config.shapes), _template_resolution(size))[torch.from_numpy(f["shape"])]
    instance = torch.zeros(n, size, size, dtype=torch.uint8)
    for k in range(f["orientation"].shape[1]):
        present = torch.from_numpy(f["count"] > k).float()[:, None, None, None]
        pose = _pose_matrices(f["position"][:, k], f["scale"][:, k], f["orientation"][:, k])
        if config.variants > 1:
            # Variant v squashes the template along its own x axis by 1 - squash·v/(variants-1).
            squash = 1 - config.variant_squash * f["variant"] / (config.variants - 1)
            pose[:, 0] /= torch.from_numpy(squash).float()[:, None]
        grid = F.affine_grid(pose, [n, 1, size, size], align_corners=False)
        alpha = F.grid_sample(templates, grid, mode="bilinear", padding_mode="zeros", align_corners=False) * present
        hsv = np.stack([f["object_hue"][:, k], f["saturation"], f["value"]], axis=1)
        fill = torch.from_numpy(hsv2rgb(hsv[:, None, :])[:, 0]).float()[:, :, None, None] * pattern
        image = image * (1 - alpha) + fill * alpha
        instance[alpha[:, 0] >= 0.5] = k + 1
    return (image * 255).round().clamp(0, 255).to(torch.uint8), instance


def _template_resolution(image_size: int) -> int:
    return int(min(512, max(64, 2 * image_size)))


def _pose_matrices(position: np.ndarray, scale: np.ndarray, orientation: np.ndarray) -> torch.Tensor:
    """Affine maps (n, 2, 3) from output pixels to template coordinates, as `affine_grid` wants.

    Both spaces use grid_sample's [-1, 1] coordinates with y pointing down;
    the object is rotated counter-clockwise by `orientation` degrees and its
    unit-radius template is scaled to radius `scale` (the diameter as a
    fraction of the image side).
    """
    theta = np.radians(orientation)
    cos, sin = np.cos(theta), np.sin(theta)
    # template = flip_y · R(-θ) · flip_y · (u - c) / (scale · margin); flip_y · R(-θ) · flip_y = R(θ) in y-down axes.
    k = 1 / (scale * TEMPLATE_MARGIN)
    linear = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2) * k[:, None, None]
    centre = position * 2 - 1
    translation = -np.einsum("nij,nj->ni", linear, centre)
    return torch.from_numpy(np.concatenate([linear, translation[..., None]], axis=2)).float()


def _texture_patterns(config: ShapesWorldConfig, f: dict[str, np.ndarray]) -> torch.Tensor:
    """Brightness patterns (n, 1, H, W) in [0, 1] that modulate the object's colour."""
    n, size = len(f["shape"]), config.image_size
    pattern = torch.ones(n, 1, size, size)
    kinds = np.asarray(config.textures)[f["texture"]]
    ticks = (torch.arange(size) + 0.5) / size
    v, u = torch.meshgrid(ticks, ticks, indexing="ij")  # (H, W) in [0, 1)
    frequency = torch.from_numpy(f["texture_frequency"]).float()[:, None, None]
    phase = torch.from_numpy(f["texture_phase"]).float()

    rows = np.flatnonzero(np.isin(kinds, PHOTO_TEXTURES))
    if len(rows):
        stack = grey_photo_stack(PHOTO_TEXTURES, 4 * size)
        source = np.array([PHOTO_TEXTURES.index(k) for k in kinds[rows]])
        crops = _crop(stack, source, f["texture_box"][rows], size)
        low, high = crops.amin((1, 2, 3), keepdim=True), crops.amax((1, 2, 3), keepdim=True)
        pattern[rows] = (crops - low) / (high - low).clamp_min(1e-6)
    rows = np.flatnonzero(kinds == "stripes")
    if len(rows):
        angle = torch.from_numpy(f["texture_angle"][rows]).float()[:, None, None]
        wave = (u * angle.cos() + v * angle.sin()) * frequency[rows] + phase[rows, :1, None]
        pattern[rows, 0] = 0.5 + 0.5 * torch.sin(2 * math.pi * wave)
    rows = np.flatnonzero(kinds == "dots")
    if len(rows):
        cell_u = (u * frequency[rows] + phase[rows, :1, None]) % 1 - 0.5
        cell_v = (v * frequency[rows] + phase[rows, 1:, None]) % 1 - 0.5
        distance = torch.sqrt(cell_u**2 + cell_v**2)
        radius = torch.from_numpy(f["dot_radius"][rows]).float()[:, None, None]
        pattern[rows, 0] = ((distance - radius) * 8 + 0.5).clamp(0, 1)
    rows = np.flatnonzero(kinds == "noise")
    if len(rows):
        coarse = torch.from_numpy(f["noise"][rows]).float()[:, None]
        pattern[rows] = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return pattern


def _backgrounds(config: ShapesWorldConfig, f: dict[str, np.ndarray]) -> torch.Tensor:
    n, size = len(f["shape"]), config.image_size
    # The background classes are the flat ones (one colour, or each grey level) first, then the photos.
    flat_classes = len(_background_names(config)) - (len(config.photos) if "photo" in config.backgrounds else 0)
    flat = hsv2rgb(f["background_colour"][:, None, :])[:, 0]
    if config.flat_greys:
        grey = np.asarray(config.flat_greys)[np.minimum(f["background"], len(config.flat_greys) - 1)]
        flat = np.repeat(grey[:, None], 3, axis=1)
    image = torch.from_numpy(flat).float()[:, :, None, None].expand(n, 3, size, size).clone()
    rows = np.flatnonzero(f["background"] >= flat_classes)
    if len(rows):
        stack = _photo_stack(tuple(config.photos), 4 * size)
        image[rows] = _crop(stack, f["background"][rows] - flat_classes, f["background_box"][rows], size)
    return image


def _crop(stack: torch.Tensor, source: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Anti-aliased crops (len(source), C, size, size) of fractional `boxes` from `stack[source]`."""
    side = stack.shape[-1]
    rois = torch.from_numpy(np.concatenate([source[:, None], boxes * side], axis=1)).float()
    return roi_align(stack, rois, output_size=size, aligned=True)


@lru_cache(maxsize=8)
def _photo_stack(names: tuple[str, ...], resolution: int) -> torch.Tensor:
    photos = []
    for name in names:
        photo = getattr(skimage.data, name)()
        photo = gray2rgb(photo) if photo.ndim == 2 else photo[..., :3]
        photos.append(_square(photo, resolution))
    return torch.stack(photos)


@lru_cache(maxsize=8)
def grey_photo_stack(names: tuple[str, ...], resolution: int) -> torch.Tensor:
    """(len(names), 1, resolution, resolution) floats in [0, 1]: the bundled greyscale photos `names` (scikit-image
    data), each centre-cropped square; cached, as Shapes World's textures and the texture augmentation reuse them."""
    return torch.stack([_square(getattr(skimage.data, name)()[..., None], resolution) for name in names])


def _square(photo: np.ndarray, resolution: int) -> torch.Tensor:
    """Centre square crop of an (H, W, C) uint8 photo, resized to (C, resolution, resolution) floats in [0, 1]."""
    height, width = photo.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    tensor = torch.from_numpy(np.ascontiguousarray(photo[top : top + side, left : left + side])).permute(2, 0, 1)
    tensor = tensor[None].float() / 255
    return F.interpolate(tensor, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)[0]
