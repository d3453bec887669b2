"""Invariance probes: how much each augmentation moves the features, stage by stage, and how well it can be read back.

For each augmentation (applied alone) and each backbone stage (global-average
pooled output of ResNetBackbone.forward_stages; the encoder's output for
any other module):

- **cosine**: the mean cosine similarity between the features of an image
  and of its augmented copy (over the images the op was applied to).
  1 means the stage is invariant to the augmentation.
- **predictability**: how well a linear probe on [f(x), f(t(x)), |f(t(x)) − f(x)|]
  recovers the parameter the op recorded (the absolute difference lets a
  linear probe tell that an op was applied at all: a flip moves features in
  an image-dependent direction that no fixed linear weight can follow): R² of ridge regression for continuous
  parameters (crop area and centre, the four colour-jitter factors, blur σ),
  top-1 accuracy (%) of logistic regression for discrete ones (flip,
  grayscale, solarize applied or not; the number of quarter turns). The
  probe is fitted on the first 60 % of the images, its penalty chosen on the
  next 20 % and scored on the last 20 %.

An encoder that is invariant to an augmentation scores a cosine near 1 and
a predictability near chance (R² ≈ 0; accuracy ≈ 100 / classes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augbench.augment.ops import (
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    Op,
    Params,
    RandomResizedCrop,
    Rotate90,
    Solarize,
)
from augbench.augment.views import to_float
from augbench.evaluate.protocols import LinearConfig, fit_linear_classifier, fit_ridge
from augbench.metrics import r2


def _crop_target(params: Params) -> Tensor:
    box = params["box"]
    area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    return torch.stack([area, (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2], dim=1)


@dataclass(frozen=True)
class Probe:
    """An op alone (`make(image_size)`), the parameter a probe reads (`target(params)`), its kind, and which images
    it changed (`changed(params)`, (N,) bool), the ones its cosine averages over."""

    make: Callable[[int], Op]
    target: Callable[[Params], Tensor]
    discrete: bool
    changed: Callable[[Params], Tensor] = lambda params: params["applied"]


PROBES: dict[str, Probe] = {
    "crop": Probe(lambda size: RandomResizedCrop(size, scale=(0.2, 1.0)), _crop_target, False),
    "color_jitter": Probe(lambda size: ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0), lambda p: p["factors"], False),
    "blur": Probe(lambda size: GaussianBlur(sigma=(0.1, 2.0), p=1.0), lambda p: p["sigma"][:, None], False),
    "grayscale": Probe(lambda size: Grayscale(p=0.5), lambda p: p["applied"].long(), True),
    "flip": Probe(lambda size: HorizontalFlip(p=0.5), lambda p: p["applied"].long(), True),
    "solarize": Probe(lambda size: Solarize(p=0.5), lambda p: p["applied"].long(), True),
    # Every image draws a turn, a quarter of them 0°: those are unchanged copies.
    "rotate90": Probe(lambda size: Rotate90(p=1.0), lambda p: p["quarter_turns"].long(), True,
                      lambda p: p["quarter_turns"] != 0),
}


@dataclass
class ProbeConfig:
    """`augmentations` name entries of PROBES; `images` is how many test images are probed."""

    augmentations: list[str] = field(default_factory=lambda: list(PROBES))
    images: int = 1000
    batch_size: int = 256
    linear: LinearConfig = field(default_factory=LinearConfig)

    def __post_init__(self):
        unknown = [name for name in self.augmentations if name not in PROBES]
        if unknown:
            raise ValueError(f"augmentations: unknown {unknown}; known: {list(PROBES)}")


@torch.inference_mode()
def stage_vectors(encoder: nn.Module, images: Tensor, batch_size: int, device: str) -> dict[str, Tensor]:
    """Per stage name, pooled features (N, C) of float `images` in [0, 1]; the encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    chunks: dict[str, list[Tensor]] = {}
    try:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device)
            if hasattr(encoder, "forward_stages"):
                pooled = {f"layer{i + 1}": m.float().mean((2, 3)).cpu()
                          for i, m in enumerate(encoder.forward_stages(batch))}
            else:
                pooled = {"output": encoder(batch).float().flatten(1).cpu()}
            for name, vectors in pooled.items():
                chunks.setdefault(name, []).append(vectors)
    finally:
        encoder.train(was_training)
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def sensitivity_table(encoder: nn.Module, images: Tensor, config: ProbeConfig, seed: int = 0,
                      device: str = "cpu") -> pd.DataFrame:
    """One row per (augmentation, stage): cosine, predictability and its metric (r2 or top1), n images."""
    images = to_float(images[: config.images])
    clean = stage_vectors(encoder, images, config.batch_size, device)
    n = len(images)
    fit_end, val_end = int(0.6 * n), int(0.8 * n)
    rows = []
    for name in config.augmentations:
        probe = PROBES[name]
        op = probe.make(images.shape[-1])
        generator = torch.Generator().manual_seed(seed)
        params = op.sample(n, generator)
        augmented = stage_vectors(encoder, op.apply(images, params), config.batch_size, device)
        target = probe.target(params)
        changed = probe.changed(params)
        for stage, features in clean.items():
            cosine = F.cosine_similarity(features[changed], augmented[stage][changed], dim=1).mean().item()
            pair = torch.cat([features, augmented[stage], (augmented[stage] - features).abs()], dim=1)
            train, val = (pair[:fit_end], target[:fit_end]), (pair[fit_end:val_end], target[fit_end:val_end])
            test_features, test_target = pair[val_end:], target[val_end:]
            if probe.discrete:
                num_classes = int(target.max()) + 1
                predict, _ = fit_linear_classifier(train, val, num_classes, config.linear)
                score, metric = (predict(test_features) == test_target).float().mean().item() * 100, "top1"
            else:
                predict, _ = fit_ridge(train, val, config.linear)
                score, metric = r2(predict(test_features), test_target), "r2"
            rows.append({"augmentation": name, "stage": stage, "cosine": cosine, "predictability": score,
                         "predictability_metric": metric, "n_images": n})
    return pd.DataFrame(rows)
