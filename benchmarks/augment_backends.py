"""Which library should augbench's per-image augmentation be built on? Measured, not assumed.

Both candidates apply MoCo v2's two-view pipeline (crop 0.2–1, colour jitter
p 0.8 in random order, grayscale p 0.2, flip p 0.5) with *independent
parameters per image*, which the design needs (views remember their params):

- kornia: augbench's ops (augbench.augment), whose photometric maths is
  kornia's batched, per-sample functionals;
- torchvision.transforms.v2: its functionals take one factor per call, so
  per-image parameters mean a Python loop over the batch.

Prints images/s of each and, last, the ratio kornia / torchvision.
Usage: python benchmarks/augment_backends.py [--size 32] [--batch 256]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision.transforms.v2.functional as TF

from augbench.augment.recipes import moco_v2


def torchvision_per_image(images: torch.Tensor, params: dict) -> torch.Tensor:
    """The same recorded parameters, applied image by image with torchvision's functionals."""
    size = images.shape[-1]
    jitter = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    out = []
    for i, image in enumerate(images):
        x0, y0, x1, y1 = (params["crop"]["box"][i] * size).tolist()
        image = TF.resized_crop(image, int(y0), int(x0), max(1, int(y1 - y0)), max(1, int(x1 - x0)), [size, size],
                                antialias=True)
        if params["color_jitter"]["applied"][i]:
            for index in params["color_jitter"]["order"][i].tolist():
                image = jitter[index](image, params["color_jitter"]["factors"][i, index].item())
        if params["grayscale"]["applied"][i]:
            image = TF.rgb_to_grayscale(image, num_output_channels=3)
        if params["flip"]["applied"][i]:
            image = TF.horizontal_flip(image)
        out.append(image)
    return torch.stack(out)


def images_per_second(run, images: torch.Tensor, repeats: int) -> float:
    run(images)
    start = time.perf_counter()
    for _ in range(repeats):
        run(images)
    return repeats * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size)
    pipeline = moco_v2(args.size, blur=False).pipelines[0]
    generator = torch.Generator().manual_seed(0)

    def with_kornia(batch):
        return [pipeline(batch, generator) for _ in range(2)]

    def with_torchvision(batch):
        return [torchvision_per_image(batch, pipeline.sample(len(batch), generator)) for _ in range(2)]

    ours = images_per_second(with_kornia, images, args.repeats)
    theirs = images_per_second(with_torchvision, images, args.repeats)
    print(f"{args.size} px, batch {args.batch}, two MoCo v2 views per image, {torch.get_num_threads()} threads")
    print(f"kornia functionals, batched:        {ours:10.0f} images/s")
    print(f"torchvision v2 functionals, looped: {theirs:10.0f} images/s")
    print(f"ratio kornia / torchvision: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
