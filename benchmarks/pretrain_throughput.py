"""Pretraining images/s: augbench vs lightly, MoCo v2 and BYOL built to one spec, side by side.

Shared spec (both libraries): the same backbone (augbench's ResNet-18 module,
a torchvision ResNet; `--width`, CIFAR stem at ≤ 64 px, ImageNet stem above),
the same batch, image size and images (Shapes World, uint8), the same heads
(MoCo v2: 2048→128 projector, no BN, queue 4,096, τ 0.2, one-way InfoNCE, EMA
0.99, Shuffle BN over 8 sub-batches; BYOL: 4096→256 BN projector and predictor, symmetric 2 − 2cos, EMA
0.99 → 1), the same augmentation settings (`moco_v2_32` / `byol_32`: MoCo
v2's and BYOL's views without blur) and optimiser (MoCo: SGD lr 0.03·B/256,
momentum 0.9, wd 5e-4; BYOL: LARS lr 1.0·B/256, wd 1e-5, BN and biases
excluded).

- augbench: the presets in configs/methods, built by `build_backbone`,
  `build_method`, `build_views` and `augbench.optim.build_optimizer`;
  per step, what `PretrainModule` does: the uint8 batch from a DataLoader over
  the ImageDataset, `to_float`, channels_last, both views augmented batched
  on the device, the method's loss, backward, optimiser step, EMA update.
- lightly: its users' loop from its examples: `MoCoV2Transform` /
  `BYOLTransform` on PIL images, per sample, in a DataLoader
  (`--lightly-workers` processes); `MoCoProjectionHead` + `NTXentLoss` with a
  memory bank, `SplitBatchNorm` + `batch_shuffle` for Shuffle BN, `BYOLProjectionHead` + `BYOLPredictionHead` +
  `NegativeCosineSimilarity`, `update_momentum`; torch SGD or lightly's LARS.

`--device cuda` runs both sides on the GPU: augbench as `augbench pretrain`
trains there (the split held on the device as uint8, batches drawn by index,
`data.on_device`; fused SGD/AdamW), lightly's loop with its views copied from
pinned memory by `--lightly-workers` DataLoader workers (default there: the
machine's cores). Timings wait for the device (`torch.cuda.synchronize`).

Each side runs in fp32 and under bf16 autocast (`--precisions`); its faster
setting is its figure, so neither side is held back by a setting the other
got. Each setting is timed in `--rounds` rounds, the two sides taking turns,
and each side's best round counts, as in `common.best_rates`: a slow spell of
the machine then has to hit a side in every round to lower its figure. Each
round builds its side afresh, so lightly's DataLoader workers are gone before
augbench's turn. Images/s counts source images (two views each). Prints,
last, the ratios augbench / lightly.
Usage: python benchmarks/pretrain_throughput.py [--sizes 32 96] [--batch 256] [--width 0.25] [--rounds 2]
       [--device cpu|cuda] [--lightly-workers N]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable, Iterator

import torch
from common import (
    add_default_malloc_option,
    augbench_config,
    autocast,
    gpu_name,
    machine,
    process_memory,
    shapes_world_images,
)
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.batchnorm import SplitBatchNorm
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, MoCoV2Transform
from lightly.utils.lars import LARS
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from augbench.augment.kinds import build_views
from augbench.augment.views import to_float
from augbench.data.dataset import ImageDataset
from augbench.methods import build_method
from augbench.models.backbones import build_backbone
from augbench.optim import build_optimizer, parameter_groups

METHODS = ("moco_v2", "byol")


def timed_steps(step: Callable[[], None], warmup: int, steps: int, batch: int, device: str = "cpu") -> float:
    wait = torch.cuda.synchronize if device == "cuda" else lambda: None  # a GPU runs behind the host
    for _ in range(warmup):
        step()
    wait()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wait()
    return steps * batch / (time.perf_counter() - start)


def _device_batches(images: torch.Tensor, batch: int, device: str) -> Iterator[torch.Tensor]:
    """Shuffled batches drawn by index from `images` held on `device`, as `data.on_device` draws them."""
    held = images.to(device)
    generator = torch.Generator().manual_seed(0)
    while True:
        order = torch.randperm(len(held), generator=generator).to(device)
        yield from (held[order[start:start + batch]] for start in range(0, len(held) - batch + 1, batch))


def augbench_rate(method: str, images: torch.Tensor, batch: int, width: float, precision: str,
                  warmup: int, steps: int, device: str = "cpu") -> float:
    size = images.shape[-1]
    config = augbench_config(method, size, batch, width)
    model = build_method(config.method, build_backbone(config.model)).to(device, memory_format=torch.channels_last)
    recipe = build_views(config.augment, size)
    optimizer = build_optimizer(model, config.optim, batch, fused=device == "cuda")
    if device == "cuda":
        batches = _device_batches(images, batch, device)
    else:  # as `data.on_device=auto` trains on a CPU: a DataLoader in the training process
        dataset = ImageDataset("shapes_world", "train", images, {"index": torch.arange(len(images))})
        batches = (item["image"] for item in _forever(DataLoader(dataset, batch_size=batch, shuffle=True,
                                                                 drop_last=True)))
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        views_input = to_float(next(batches)).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            views = recipe(views_input, generator)
        with autocast(precision, device):
            loss = model(views)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_target(0.5)

    return timed_steps(step, warmup, steps, batch, device)


class PILDataset(Dataset):
    """PIL images through a lightly transform, as a lightly user's dataset returns them."""

    def __init__(self, images: torch.Tensor, transform):
        self.images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index])


def lightly_split_batchnorm(module: nn.Module, splits: int) -> nn.Module:
    """`module` with each BatchNorm2d replaced by lightly's SplitBatchNorm, as its MoCo benchmarks build one."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            setattr(module, name, SplitBatchNorm(child.num_features, splits))
        else:
            lightly_split_batchnorm(child, splits)
    return module


class LightlyMoCo(nn.Module):
    def __init__(self, backbone: nn.Module, out_dim: int, bn_splits: int):
        super().__init__()
        self.backbone = lightly_split_batchnorm(backbone, bn_splits)
        self.projection_head = MoCoProjectionHead(out_dim, 2048, 128)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(4096, 128))

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        update_momentum(self.backbone, self.backbone_momentum, m=0.99)
        update_momentum(self.projection_head, self.projection_head_momentum, m=0.99)
        query = self.projection_head(self.backbone(views[0]).flatten(start_dim=1))
        with torch.no_grad():
            keys, shuffle = batch_shuffle(views[1])
            key = self.projection_head_momentum(self.backbone_momentum(keys).flatten(start_dim=1))
            key = batch_unshuffle(key, shuffle)
        return self.criterion(query, key)


class LightlyBYOL(nn.Module):
    def __init__(self, backbone: nn.Module, out_dim: int):
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(out_dim, 4096, 256)
        self.prediction_head = BYOLPredictionHead(256, 4096, 256)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        update_momentum(self.backbone, self.backbone_momentum, m=0.995)
        update_momentum(self.projection_head, self.projection_head_momentum, m=0.995)
        online = [self.prediction_head(self.projection_head(self.backbone(v).flatten(start_dim=1))) for v in views]
        with torch.no_grad():
            target = [self.projection_head_momentum(self.backbone_momentum(v).flatten(start_dim=1)) for v in views]
        return 0.5 * (self.criterion(online[0], target[1]) + self.criterion(online[1], target[0]))


def lightly_rate(method: str, images: torch.Tensor, batch: int, width: float, precision: str, workers: int,
                 warmup: int, steps: int, device: str = "cpu") -> float:
    size = images.shape[-1]
    config = augbench_config(method, size, batch, width)
    # The same backbone module; lightly's transforms normalise, so the backbone's own normalisation is the identity.
    config.model.mean, config.model.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    backbone = build_backbone(config.model)
    if method == "moco_v2":
        transform = MoCoV2Transform(input_size=size, gaussian_blur=0.0)
        model = LightlyMoCo(backbone, backbone.out_dim, config.method.shuffle_bn)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.03 * batch / 256, momentum=0.9, weight_decay=5e-4)
    else:
        transform = BYOLTransform(BYOLView1Transform(input_size=size, gaussian_blur=0.0),
                                  BYOLView2Transform(input_size=size, gaussian_blur=0.0))
        model = LightlyBYOL(backbone, backbone.out_dim)
        groups = parameter_groups(model, 1e-5, exclude_bn_bias=True)
        optimizer = LARS(groups, lr=1.0 * batch / 256, momentum=0.9)
    model.to(device)
    loader = DataLoader(PILDataset(images, transform), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0, pin_memory=device == "cuda")
    batches = _forever(loader)

    def step() -> None:
        views = [view.to(device, non_blocking=True) for view in next(batches)]
        with autocast(precision, device):
            loss = model(views)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed_steps(step, warmup, steps, batch, device)


def rounds_text(rates: list[float]) -> str:
    return "rounds " + " / ".join(f"{rate:.0f}" for rate in rates)


def _forever(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=float, default=0.25, help="ResNet-18 width (0.25: the quickstart's)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--lightly-workers", type=int, default=None,
                        help="lightly's DataLoader workers (default: 1 on a CPU, which its two cores share with the "
                             "training process; the machine's cores with --device cuda)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8,
                        help="timed steps per round; 4 were too few on 2 cores (a ratio read 1.05x, at 8 1.58x)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="turns each side takes per setting, its best counting; with one, a BYOL ratio read "
                             "1.28x where reruns read 1.50x and 1.99x")
    add_default_malloc_option(parser)
    args = parser.parse_args()
    if args.lightly_workers is None:
        args.lightly_workers = len(os.sched_getaffinity(0)) if args.device == "cuda" else 1
    print(machine())
    if args.device == "cuda":
        print(f"GPU: {gpu_name(args.device)}")
    print(process_memory(args.default_malloc))
    print(f"ResNet-18 width {args.width}, batch {args.batch}, lightly DataLoader workers {args.lightly_workers}")
    ratios = []
    for size in args.sizes:
        images = shapes_world_images(args.batch * (args.warmup + args.steps), size)
        for method in args.methods:
            ours, theirs = {}, {}
            for precision in args.precisions:
                our_rounds, their_rounds = [], []
                for _ in range(args.rounds):
                    torch.manual_seed(0)
                    our_rounds.append(augbench_rate(method, images, args.batch, args.width, precision,
                                                    args.warmup, args.steps, args.device))
                    torch.manual_seed(0)
                    their_rounds.append(lightly_rate(method, images, args.batch, args.width, precision,
                                                     args.lightly_workers, args.warmup, args.steps, args.device))
                ours[precision], theirs[precision] = max(our_rounds), max(their_rounds)
                print(f"{size:3d} px {method:8s} {precision}: augbench {ours[precision]:7.1f} images/s "
                      f"({rounds_text(our_rounds)}), lightly {theirs[precision]:7.1f} images/s "
                      f"({rounds_text(their_rounds)})", flush=True)
            best_ours, best_theirs = max(ours, key=ours.get), max(theirs, key=theirs.get)
            ratio = ours[best_ours] / theirs[best_theirs]
            ratios.append((size, method, ratio))
            print(f"{size:3d} px {method:8s} best: augbench {ours[best_ours]:.1f} ({best_ours}) / lightly "
                  f"{theirs[best_theirs]:.1f} ({best_theirs}) = {ratio:.2f}x", flush=True)
    print("ratio augbench / lightly (training images/s): "
          + ", ".join(f"{method} {size} px {ratio:.2f}x" for size, method, ratio in ratios))


if __name__ == "__main__":
    main()
