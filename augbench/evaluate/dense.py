"""A light dense head for pixel-wise tasks over the frozen encoder's stage features.

ViRB decodes pixel-wise tasks with a U-Net-like decoder over the stage
features of a frozen encoder. Ours is deliberately light (a feature-pyramid
sum): each stage gets a 1×1 lateral conv to `hidden` channels, the laterals
are upsampled to the label resolution and summed, then BN-ReLU-3×3 conv-BN-
ReLU-1×1 conv gives the per-pixel output. Stage features are computed once
(encoder in eval mode, no gradients) and cached at most `cache_resolution`
pixels a side in float16, so the head trains for many epochs without
running the encoder again.

An encoder without `forward_stages` (any module mapping images to features)
contributes its global features as a single 1×1 stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augbench.augment.views import to_float


@dataclass
class DenseConfig:
    """Adam (ViRB's optimiser for its heads) for a fixed budget of `epochs`; `max_train_images` 0 = all."""

    hidden: int = 32
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    cache_resolution: int = 16
    max_train_images: int = 0


@torch.inference_mode()
def stage_features(encoder: nn.Module, images: Tensor, config: DenseConfig, device: str,
                   batch_size: int = 256) -> list[Tensor]:
    """Per stage, (N, C_i, h_i, w_i) float16 on the CPU, pooled to at most `cache_resolution` a side."""
    was_training = encoder.training
    encoder.eval()
    chunks: list[list[Tensor]] = []
    try:
        for start in range(0, len(images), batch_size):
            batch = to_float(images[start : start + batch_size].to(device))
            if hasattr(encoder, "forward_stages"):
                maps = encoder.forward_stages(batch)
            else:
                maps = [encoder(batch).flatten(1)[:, :, None, None]]
            chunks.append([_pool(m, config.cache_resolution).half().cpu() for m in maps])
    finally:
        encoder.train(was_training)
    return [torch.cat(stage) for stage in zip(*chunks)]


def _pool(feature_map: Tensor, resolution: int) -> Tensor:
    if feature_map.shape[-1] <= resolution:
        return feature_map.float()
    return F.adaptive_avg_pool2d(feature_map.float(), resolution)


class DenseHead(nn.Module):
    def __init__(self, stage_dims: list[int], hidden: int, out_channels: int, size: int):
        super().__init__()
        self.size = size
        self.lateral = nn.ModuleList(nn.Conv2d(dim, hidden, 1) for dim in stage_dims)
        self.fuse = nn.Sequential(
            nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, stages: list[Tensor]) -> Tensor:
        """Stage maps → (B, out_channels, size, size)."""
        upsampled = [
            F.interpolate(lateral(stage.float()), size=(self.size, self.size), mode="bilinear", align_corners=False)
            for lateral, stage in zip(self.lateral, stages)
        ]
        return self.fuse(torch.stack(upsampled).sum(0))


def fit_dense_head(stages: list[Tensor], targets: Tensor, target: str, config: DenseConfig, seed: int):
    """Train a head on cached `stages` for `targets` (N, H, W); return a predictor of stage lists → label maps.

    `target` is "segmentation" (cross-entropy over the classes seen in
    training, argmax), "binary_map" (BCE with the positive class weighted by
    the negative/positive ratio, capped at 50, so thin edges are not ignored;
    threshold 0.5) or "map" (L1 regression, ViRB's depth loss).
    """
    if config.max_train_images:
        stages, targets = [s[: config.max_train_images] for s in stages], targets[: config.max_train_images]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    num_classes = int(targets.max()) + 1 if target == "segmentation" else 1
    head = DenseHead([s.shape[1] for s in stages], config.hidden, num_classes, targets.shape[-1])
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if target == "binary_map":
        positive = targets.float().mean().clamp(1e-6, 1 - 1e-6)
        pos_weight = ((1 - positive) / positive).clamp(max=50.0)

    def loss_of(outputs: Tensor, batch_targets: Tensor) -> Tensor:
        if target == "segmentation":
            return F.cross_entropy(outputs, batch_targets.long())
        if target == "binary_map":
            return F.binary_cross_entropy_with_logits(outputs[:, 0], batch_targets.float(), pos_weight=pos_weight)
        return F.l1_loss(outputs[:, 0], batch_targets.float())

    head.train()
    for _ in range(config.epochs):
        for batch in torch.randperm(len(targets), generator=generator).split(config.batch_size):
            if len(batch) < 2:
                continue
            optimizer.zero_grad()
            loss_of(head([s[batch] for s in stages]), targets[batch]).backward()
            optimizer.step()
    head.eval()

    @torch.no_grad()
    def predict(test_stages: list[Tensor]) -> Tensor:
        outputs = torch.cat([
            head([s[start : start + 256] for s in test_stages]) for start in range(0, len(test_stages[0]), 256)
        ])
        if target == "segmentation":
            return outputs.argmax(1)
        return (outputs[:, 0] > 0).long() if target == "binary_map" else outputs[:, 0]

    return predict
