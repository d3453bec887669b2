"""The shape vocabulary of Shapes World, as anti-aliased templates.

Each shape is an implicit region on a plane with x to the right and y up. The
default twelve have no rotational symmetry, so an object's orientation in
[0°, 360°) is recoverable from its pixels; the extra shapes are kept out of the
default vocabulary for held-out-class evaluation. Templates are normalised so
that the shape's centroid sits at the template centre and its farthest pixel
at radius 1: a rendered object's `position` label is then its centre of mass
and its `scale` label its diameter.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from skimage.draw import polygon2mask

Region = Callable[[np.ndarray, np.ndarray], np.ndarray]

TEMPLATE_MARGIN = 1.1  # a template spans [-1.1, 1.1] in normalised shape units
_SUPERSAMPLE = 4


def _polygon(*vertices: tuple[float, float]) -> Region:
    points = np.asarray(vertices, dtype=np.float64)

    def region(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # polygon2mask wants (row, col) on an integer grid: map shape units onto the grid's pixels.
        size = x.shape[0]
        span = x[0, -1] - x[0, 0]
        cols = (points[:, 0] - x[0, 0]) / span * (size - 1)
        rows = (y[0, 0] - points[:, 1]) / span * (size - 1)
        return polygon2mask(x.shape, np.stack([rows, cols], axis=1))

    return region


def _box(x0: float, x1: float, y0: float, y1: float) -> Region:
    return lambda x, y: (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def _disc(cx: float, cy: float, r: float) -> Region:
    return lambda x, y: (x - cx) ** 2 + (y - cy) ** 2 <= r**2


def _union(*regions: Region) -> Region:
    return lambda x, y: np.logical_or.reduce([r(x, y) for r in regions])


def _minus(region: Region, *holes: Region) -> Region:
    return lambda x, y: region(x, y) & ~np.logical_or.reduce([h(x, y) for h in holes])


def _heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    u, v = x * 1.25, y * 1.25 + 0.15
    return (u**2 + v**2 - 1) ** 3 - u**2 * v**3 <= 0


def _pacman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    mouth = (np.abs(np.degrees(np.arctan2(y, x))) < 35) & (x > 0)
    return _disc(0, 0, 0.85)(x, y) & ~mouth


SHAPES: dict[str, Region] = {
    "triangle": _polygon((0.0, 0.9), (-0.55, -0.6), (0.55, -0.6)),
    "semicircle": lambda x, y: _disc(0, 0, 0.85)(x, y) & (y >= 0),
    "trapezoid": _polygon((-0.8, -0.45), (0.8, -0.45), (0.4, 0.45), (-0.4, 0.45)),
    "house": _polygon((-0.55, -0.7), (0.55, -0.7), (0.55, 0.1), (0.75, 0.1), (0.0, 0.85), (-0.75, 0.1), (-0.55, 0.1)),
    "heart": _heart,
    "teardrop": _union(_disc(0, -0.3, 0.52), _polygon((-0.47, -0.08), (0.47, -0.08), (0.0, 0.9))),
    "crescent": _minus(_disc(0, 0, 0.85), _disc(0.38, 0.0, 0.7)),
    "arrow": _union(_box(-0.18, 0.18, -0.85, 0.25), _polygon((-0.6, 0.2), (0.6, 0.2), (0.0, 0.9))),
    "cross": _union(_box(-0.17, 0.17, -0.9, 0.9), _box(-0.6, 0.6, 0.2, 0.54)),
    "letter_t": _union(_box(-0.75, 0.75, 0.45, 0.85), _box(-0.2, 0.2, -0.85, 0.45)),
    "letter_l": _union(_box(-0.6, -0.2, -0.85, 0.85), _box(-0.6, 0.6, -0.85, -0.45)),
    "pacman": _pacman,
    # Extra shapes, outside the default vocabulary (held-out classes).
    "kite": _polygon((0.0, 0.9), (0.5, 0.25), (0.0, -0.9), (-0.5, 0.25)),
    "mushroom": _union(lambda x, y: _disc(0, 0.05, 0.8)(x, y) & (y >= 0.05), _box(-0.22, 0.22, -0.85, 0.1)),
    "letter_f": _union(_box(-0.55, -0.15, -0.85, 0.85), _box(-0.55, 0.6, 0.5, 0.85), _box(-0.55, 0.35, -0.05, 0.28)),
    "letter_p": _union(_box(-0.55, -0.15, -0.9, 0.85), _minus(_disc(-0.05, 0.35, 0.5), _disc(-0.05, 0.35, 0.2))),
    "lightning": _polygon(
        (0.1, 0.9), (-0.5, -0.05), (-0.05, -0.05), (-0.25, -0.9), (0.5, 0.15), (0.05, 0.15), (0.35, 0.9)
    ),
    "bell": _union(
        _polygon((-0.7, -0.5), (0.7, -0.5), (0.4, 0.5), (-0.4, 0.5)), _disc(0, 0.45, 0.4), _disc(0, -0.6, 0.2)
    ),
    "flag": _union(_box(-0.6, -0.45, -0.9, 0.9), _polygon((-0.45, 0.9), (0.65, 0.6), (-0.45, 0.25))),
    "hook": _union(
        _box(0.15, 0.45, -0.3, 0.9), _minus(_disc(-0.05, -0.3, 0.5), _disc(-0.05, -0.3, 0.2), _box(-1, 1, -0.3, 1))
    ),
}
DEFAULT_SHAPES: tuple[str, ...] = tuple(list(SHAPES)[:12])


def _grid(size: int, span: float, centre: tuple[float, float] = (0.0, 0.0), radius: float = 1.0):
    """Pixel-centre coordinates of a size×size grid covering [-span, span]², y up."""
    ticks = (np.arange(size) + 0.5) / size * 2 * span - span
    x, y = np.meshgrid(ticks, ticks[::-1])
    return x * radius + centre[0], y * radius + centre[1]


@lru_cache(maxsize=16)
def shape_templates(names: tuple[str, ...], resolution: int) -> torch.Tensor:
    """Anti-aliased coverage maps (S, 1, resolution, resolution) in [0, 1], centred and unit-radius."""
    fine = resolution * _SUPERSAMPLE
    templates = []
    for name in names:
        region = SHAPES[name]
        x, y = _grid(fine, TEMPLATE_MARGIN)
        mask = region(x, y)
        centre = (x[mask].mean(), y[mask].mean())
        radius = np.sqrt((x[mask] - centre[0]) ** 2 + (y[mask] - centre[1]) ** 2).max()
        x, y = _grid(fine, TEMPLATE_MARGIN, centre, radius)
        coverage = region(x, y).astype(np.float32)
        coverage = coverage.reshape(resolution, _SUPERSAMPLE, resolution, _SUPERSAMPLE).mean(axis=(1, 3))
        templates.append(torch.from_numpy(coverage))
    return torch.stack(templates)[:, None]
