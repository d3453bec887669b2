"""Frozen features: the encoder in eval mode, no gradients, BN statistics untouched."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from augbench.augment.views import to_float


@torch.inference_mode()
def extract_features(encoder: nn.Module, images: Tensor, batch_size: int = 512, device: str | None = None) -> Tensor:
    """Features (N, D) float32 on the CPU of uint8 `images` (N, 3, H, W).

    The encoder runs in eval mode, so BatchNorm uses its running statistics
    and does not update them (the failure of lightly issue 1440); its
    train/eval mode is restored afterwards.
    """
    device = device or next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        chunks = [
            encoder(to_float(images[start : start + batch_size].to(device))).float().flatten(1).cpu()
            for start in range(0, len(images), batch_size)
        ]
    finally:
        encoder.train(was_training)
    return torch.cat(chunks)
