"""Two-view MoCo v2 augmentation: augbench's batched ops vs torchvision's per-sample PIL pipeline.

Both sides make two MoCo v2 views (crop scale 0.2–1, colour jitter
0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2, horizontal flip; no blur, as in
small-image MoCo v2) of each image and end with float tensors (B, 3, S, S) in
[0, 1], in one process:

- augbench: the `moco_v2_32` recipe on a uint8 batch (B, 3, S, S): `to_float`,
  then each view's ops sample per-image parameters and apply them to the whole
  batch (torch's intra-op threads, as many as the process has);
- torchvision: `transforms.Compose([RandomResizedCrop, RandomApply([ColorJitter],
  p=0.8), RandomGrayscale, RandomHorizontalFlip, ToTensor])` called twice on
  each PIL image, then the views stacked into batches: what MoCo v2's
  reference code and a DataLoader with num_workers=0 do.

Images/s counts source images (each gives two views). Prints, last, the ratio augbench / torchvision.
Usage: python benchmarks/augment_throughput.py [--sizes 32 96] [--batch 256]
"""

from __future__ import annotations

import argparse

import torch
from common import add_default_malloc_option, best_rates, machine, process_memory, shapes_world_images
from PIL import Image
from torchvision import transforms

from augbench.augment.recipes import moco_v2
from augbench.augment.views import to_float


def torchvision_pipeline(size: int) -> transforms.Compose:
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.2, 1.0)),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ])


def measure(size: int, batch: int, repeats: int) -> tuple[float, float]:
    images = shapes_world_images(batch, size)  # (B, 3, S, S) uint8
    pil_images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    recipe = moco_v2(size, blur=False)
    generator = torch.Generator().manual_seed(0)
    pipeline = torchvision_pipeline(size)

    def augbench_views() -> int:
        views = recipe(to_float(images), generator)
        assert views[1].images.shape == (batch, 3, size, size)
        return batch

    def torchvision_views() -> int:
        pairs = [(pipeline(image), pipeline(image)) for image in pil_images]
        views = [torch.stack(view) for view in zip(*pairs)]
        assert views[1].shape == (batch, 3, size, size)
        return batch

    ours, theirs = best_rates([augbench_views, torchvision_views], repeats)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    add_default_malloc_option(parser)
    args = parser.parse_args()
    print(machine())
    print(process_memory(args.default_malloc))
    ratios = []
    for size in args.sizes:
        ours, theirs = measure(size, args.batch, args.repeats)
        ratios.append(ours / theirs)
        print(f"{size:3d} px, batch {args.batch}: augbench {ours:8.0f} images/s, torchvision PIL {theirs:8.0f} "
              f"images/s, ratio {ours / theirs:.2f}")
    print("ratio augbench / torchvision PIL (two MoCo v2 views): "
          + ", ".join(f"{size} px {ratio:.2f}x" for size, ratio in zip(args.sizes, ratios)))


if __name__ == "__main__":
    main()
