"""HAI's views: one pair per backbone stage, and the augmentation-parameter vectors of its expanded views.

Zhang & Ma, "Rethinking the Augmentation Module in Contrastive Learning:
Learning Hierarchical Augmentation Invariance with Expanded Views" (CVPR
2022). Each augmentation is assigned to a stage; the pair of stage k applies
the augmentations assigned to stages ≤ k, each view drawing them
independently, and leaves every other augmentation out. A left-out op still
runs with "no change" parameters (probability 0, a crop of the whole image),
so every view records every op's parameters and a shallow pair differs only
in the augmentations assigned to it. An augmentation assigned to no stage
(`None`, or absent) is left out of every pair. The paper's "uniform" ablation
is the assignment of every augmentation to the first stage; its "hierarchical
strength" ablation weakens each stage's augmentations by its depth (see
`HierarchicalStrength`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from augbench.augment.ops import (
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    Op,
    Params,
    RandomResizedCrop,
    Rotate90,
)
from augbench.augment.views import Pipeline, Recipe

# The code's cumulative modules: crop + colour at stage 1, then grayscale, blur and flip one stage deeper each.
DEFAULT_ASSIGNMENT: dict[str, int | None] = {
    "crop": 1, "color_jitter": 1, "grayscale": 2, "blur": 3, "flip": 4, "rotate90": None,
}


def hai_ops(size: int, crop_scale: tuple[float, float] = (0.2, 1.0)) -> list[Op]:
    """The paper's augmentations in the order applied; rotation {0, 90, 180, 270}° p 0.5 is the optional extra.

    Blur is never applied to images of 32 px or less, as in the official code
    (`p_blur = 0.5 if image_size > 32 else 0`) and augbench's `_32` recipes:
    there a blur stage's pair is its shallower neighbour's.
    """
    return [
        RandomResizedCrop(size, scale=crop_scale),
        ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        Grayscale(p=0.2),
        GaussianBlur(sigma=(0.1, 2.0), p=0.5 if size > 32 else 0.0),
        HorizontalFlip(p=0.5),
        Rotate90(p=0.5),
    ]


AUGMENTATIONS = tuple(op.name for op in hai_ops(32))
DEEPEST_STAGE = 4


@dataclass
class HierarchicalStrength:
    """The paper's "hierarchical strength" ablation (supplement §D), off unless `enabled`: every stage's pair applies
    every augmentation, weaker toward the shallow stages. At level L = 4 − stage, each augmentation's probability
    drops by `probability`·L, colour jitter's four factors by `jitter`·L, and the crop's minimum scale rises by
    `crop_min_scale`·L, each held within its range."""

    enabled: bool = False
    probability: float = 0.05
    jitter: float = 0.02
    crop_min_scale: float = 0.1

    def __post_init__(self):
        for key in ("probability", "jitter", "crop_min_scale"):
            if getattr(self, key) < 0:
                raise ValueError(f"hierarchical_strength.{key}={getattr(self, key)}: a step per level, not negative")


def left_out(op: Op) -> Op:
    """A copy of `op` that records "no change" parameters: probability 0, or a crop of the whole image."""
    op = copy.copy(op)
    if isinstance(op, RandomResizedCrop):
        op.scale, op.ratio = (1.0, 1.0), (1.0, 1.0)
    else:
        op.p = 0.0
    return op


def weakened(op: Op, level: int, strength: HierarchicalStrength) -> Op:
    """A copy of `op` weakened by `level` (4 − stage) steps of `strength`; the op itself at level 0."""
    op = copy.copy(op)
    if isinstance(op, RandomResizedCrop):
        low, high = op.scale
        op.scale = (min(high, low + strength.crop_min_scale * level), high)
        return op
    if isinstance(op, ColorJitter):
        op.brightness, op.contrast, op.saturation, op.hue = (
            max(0.0, magnitude - strength.jitter * level)
            for magnitude in (op.brightness, op.contrast, op.saturation, op.hue))
    op.p = max(0.0, op.p - strength.probability * level)
    return op


def stage_pipeline(ops: Sequence[Op], assignment: Mapping[str, int | None], stage: int,
                   strength: HierarchicalStrength | None = None) -> Pipeline:
    """The pipeline of one stage's views: the ops assigned to stages ≤ `stage`, weakened for the stage's depth when
    `strength` is enabled, the others left out."""

    def applies(op: Op) -> bool:
        assigned = assignment.get(op.name)
        return assigned is not None and assigned <= stage

    def kept(op: Op) -> Op:
        return weakened(op, DEEPEST_STAGE - stage, strength) if strength is not None and strength.enabled else op

    return Pipeline([kept(op) if applies(op) else left_out(op) for op in ops])


def hai_views(
    size: int,
    assignment: Mapping[str, int | None] = DEFAULT_ASSIGNMENT,
    stages: Sequence[int] = (1, 2, 3, 4),
    crop_scale: tuple[float, float] = (0.2, 1.0),
    strength: HierarchicalStrength | None = None,
) -> Recipe:
    """Views [stage s₁ view 1, stage s₁ view 2, stage s₂ view 1, …]: two independent draws per stage, weakened by
    depth when `strength` is enabled."""
    ops = hai_ops(size, crop_scale)
    pipelines = []
    for stage in stages:
        pipeline = stage_pipeline(ops, assignment, stage, strength)
        pipelines += [pipeline, pipeline]
    return Recipe("hai", pipelines)


@dataclass
class HierarchicalConfig:
    """`augment.views: hierarchical`, for HAI: one pair of views per stage the method taps (`method.stages`).
    `assignment` maps each augmentation (AUGMENTATIONS) to the shallowest stage whose pair applies it (null: to
    none); `crop_scale` is the crop's area range; `hierarchical_strength` weakens each stage's augmentations by its
    depth, the paper's "hierarchical strength" ablation; `crop_size` as for two views (null: the dataset's image
    size)."""

    views: str = "hierarchical"
    crop_size: int | None = None
    assignment: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_ASSIGNMENT))
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hierarchical_strength: HierarchicalStrength = field(default_factory=HierarchicalStrength)

    def __post_init__(self):
        self.crop_scale = tuple(float(v) for v in self.crop_scale)
        for augmentation, stage in self.assignment.items():
            if augmentation not in AUGMENTATIONS:
                raise ValueError(f"assignment.{augmentation}: unknown augmentation; known: {list(AUGMENTATIONS)}")
            if stage is not None and not 1 <= stage <= DEEPEST_STAGE:
                raise ValueError(f"assignment.{augmentation}={stage}: stages are 1 to {DEEPEST_STAGE} (null: none)")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale={list(self.crop_scale)}: need 0 < min ≤ max ≤ 1")

    def build(self, image_size: int, method: Any = None) -> Recipe:
        """Pairs for the stages `method.stages` taps (every stage without a method)."""
        stages = getattr(method, "stages", range(1, DEEPEST_STAGE + 1))
        return hai_views(self.crop_size or image_size, self.assignment, stages, self.crop_scale,
                         self.hierarchical_strength)


def _flag(key: str) -> Callable[[Params], Tensor]:
    return lambda params: params[key][:, None].float()


# Per op of hai_ops, which every HAI view records: the width of its slice of the vector and how to read it from the
# op's recorded parameters.
EMBEDDED_PARAMS: dict[str, tuple[int, Callable[[Params], Tensor]]] = {
    "color_jitter": (4, lambda params: params["factors"].float()),  # brightness, contrast, saturation, hue
    "crop": (4, lambda params: params["box"].float()),  # x0, y0, x1, y1 as fractions of the input
    "grayscale": (1, _flag("applied")),
    "blur": (1, _flag("sigma")),  # 0 when not blurred
    "flip": (1, _flag("applied")),
    "rotate90": (4, lambda params: F.one_hot(params["quarter_turns"].long(), 4).float()),
}


def vector_width(names: Sequence[str]) -> int:
    return sum(EMBEDDED_PARAMS[name][0] for name in names)


def augmentation_vector(params: Mapping[str, Params], names: Sequence[str]) -> Tensor:
    """The view's parameters of the ops `names`, concatenated in that order: (B, vector_width(names)).

    E.g. names ["color_jitter"] gives HAI's default [brightness, contrast,
    saturation, hue] per image, [1, 1, 1, 0] where jitter was not applied.
    """
    missing = [name for name in names if name not in params]
    if missing:
        raise ValueError(f"the view records no parameters of {missing}; it has {sorted(params)}")
    return torch.cat([EMBEDDED_PARAMS[name][1](params[name]) for name in names], dim=1)
