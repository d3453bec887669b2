"""Frozen features: the encoder in eval mode, no gradients, BN statistics untouched."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from augbench.augment.views import to_float
from augbench.data import Split

# On a CPU, batches whose activations outgrow the caches embed up to 2.5x fewer images a second. Measured on 2 cores
# (Shapes World, best of interleaved runs): a quarter-width ResNet-18 with the CIFAR stem embedded 2,418 / 2,490 /
# 1,838 32-px images/s in batches of 64 / 256 / 512, and 232 / 97 96-px images/s in batches of 8 / 256; a
# standard-width one 163 / 132 32-px images/s in batches of 64 / 256; a ResNet-50 20.5 / 13.0 224-px images/s in
# batches of 8 / 48. So CPU batches hold about this many input pixels, and at least 8 images; a GPU gets the batch
# size asked for.
CPU_BATCH_PIXELS = 65_536
CPU_MIN_BATCH = 8


@torch.inference_mode()
def extract_features(
    encoder: nn.Module, images: Tensor | Split, batch_size: int = 512, device: str | None = None,
    order: Tensor | None = None,
) -> Tensor:
    """Features (N, D) float32 on the CPU of uint8 `images` (N, 3, H, W), or of a split's images.

    `order`: the indices of the images to encode, in that order (all, when
    None). A lazily decoded split is encoded as its batches are decoded, so
    memory holds its features, never its images. The encoder runs in eval
    mode, so BatchNorm uses its running statistics and does not update them
    (the failure of lightly issue 1440); its train/eval mode is restored
    afterwards. On a CPU, `batch_size` is capped as `CPU_BATCH_PIXELS` says.
    """
    device = torch.device(device or next(encoder.parameters()).device)
    if device.type == "cpu":
        pixels = images.shape[-2] * images.shape[-1] if isinstance(images, Tensor) else images.image_size**2
        batch_size = min(batch_size, max(CPU_MIN_BATCH, CPU_BATCH_PIXELS // pixels))
    if isinstance(images, Tensor):
        batches = (images if order is None else images[order]).split(batch_size)
    else:
        batches = images.batches(batch_size, order)
    was_training = encoder.training
    encoder.eval()
    try:
        chunks = [encoder(to_float(batch.to(device))).float().flatten(1).cpu() for batch in batches]
    finally:
        encoder.train(was_training)
    return torch.cat(chunks)
