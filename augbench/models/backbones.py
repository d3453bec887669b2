"""Backbones: images in [0, 1] → features.

Every backbone owns its input normalisation, so an encoder is simply a module
that maps float images in [0, 1] of shape (B, 3, H, W) to features (B, D);
data and augmentation never need to know which statistics a model expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import timm
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MIN_WIDTH = 0.125  # the smallest model.width: 8 channels in a ResNet's first stage, 64 in its last

RESNET_LAYOUTS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


@dataclass
class BackboneConfig:
    """Which encoder to build.

    `name` is one of augbench's ResNets (resnet18/34/50/101, which accept
    `cifar_stem` and `width`), any torchvision classification model
    (`torchvision.models.list_models()`) or `timm:NAME` for any timm model
    (`timm.list_models()`); their classifiers are removed. A timm model
    normalises with its own mean and std, not `mean` and `std`.
    """

    name: str = "resnet18"
    cifar_stem: bool = True
    width: float = 1.0
    zero_init_residual: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        # width scales the ResNet's 64-128-256-512 channels; below MIN_WIDTH the first stage would have fewer than
        # 8 channels (at width 0, one channel in every stage: a 274-parameter encoder whose features are noise).
        if not math.isfinite(self.width) or self.width < MIN_WIDTH:
            raise ValueError(f"width={self.width}: must be at least {MIN_WIDTH} (stage widths "
                             f"{[round(64 * MIN_WIDTH * 2**i) for i in range(4)]}); 1.0 is the standard ResNet")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise ValueError(f"{key}={list(values)}: expected three finite numbers, one per RGB channel")
        if min(self.std) <= 0:
            raise ValueError(f"std={list(self.std)}: every value must be positive (inputs are divided by it)")
        if self.name in RESNET_LAYOUTS:
            return
        if self.name.startswith("timm:"):
            if not timm.is_model(self.name.removeprefix("timm:")):
                raise ValueError(f"name={self.name!r}: timm has no model {self.name.removeprefix('timm:')!r} "
                                 "(timm.list_models() lists them)")
        elif self.name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"name={self.name!r} is unknown; accepted: {', '.join(RESNET_LAYOUTS)}, a torchvision "
                             "classification model (torchvision.models.list_models()) or timm:NAME")
        if self.width != 1.0 or self.cifar_stem:
            raise ValueError(f"name={self.name!r}: width and cifar_stem apply to augbench's ResNets "
                             f"({', '.join(RESNET_LAYOUTS)}) only; set model.width=1.0 model.cifar_stem=false")


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std


class ResNetBackbone(ResNet):
    """torchvision's ResNet with a width multiplier and an optional CIFAR stem.

    The CIFAR stem (3×3 conv, stride 1, no max-pool) keeps 32-px images from
    shrinking to 1×1 before the last stage. Parameter names stay torchvision's
    (`conv1`, `layer1.0.conv1`, …), so at width 1 with the ImageNet stem the
    state dict is interchangeable with `torchvision.models.resnet50()`.
    torchvision hard-codes the stage widths in `ResNet.__init__`, hence the
    constructor below; the blocks and `_make_layer` are torchvision's.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        width: float = 1.0,
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ):
        nn.Module.__init__(self)
        planes = [max(1, round(64 * width * 2**i)) for i in range(4)]
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = planes[0]
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.normalize = Normalize(mean, std)
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, planes[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        self.stage_dims = [p * block.expansion for p in planes]
        self.out_dim = self.stage_dims[-1]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward_stages(self, images: Tensor) -> list[Tensor]:
        """Feature maps after layer1..layer4, each (B, C_i, H_i, W_i)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(images)))))
        maps = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, images: Tensor) -> Tensor:
        return torch.flatten(self.avgpool(self.forward_stages(images)[-1]), 1)  # (B, D)


class TorchvisionBackbone(nn.Module):
    """Any torchvision classification model with its last Linear layer removed."""

    def __init__(self, name: str, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = torchvision.models.get_model(name, weights=None)
        self.out_dim = _drop_classifier(self.model, name)

    def forward(self, images: Tensor) -> Tensor:
        return torch.flatten(self.model(self.normalize(images)), 1)


class TimmBackbone(nn.Module):
    """A timm model without its classifier (`num_classes=0`), normalising [0, 1] images with its own mean/std."""

    def __init__(self, name: str):
        super().__init__()
        self.model = timm.create_model(name, pretrained=False, num_classes=0)
        settings = self.model.pretrained_cfg
        self.mean = tuple(float(v) for v in settings.get("mean", IMAGENET_MEAN))
        self.std = tuple(float(v) for v in settings.get("std", IMAGENET_STD))
        self.normalize = Normalize(self.mean, self.std)
        self.out_dim = self.model.num_features

    def forward(self, images: Tensor) -> Tensor:
        return self.model(self.normalize(images))  # (B, D)


def _drop_classifier(model: nn.Module, name: str) -> int:
    """Replace the model's last Linear layer by Identity and return its input width."""
    last = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = module_name
    if last is None:
        raise ValueError(f"model.name={name!r}: torchvision model has no Linear classifier to remove")
    parent_name, _, attr = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    in_features = getattr(parent, attr).in_features
    setattr(parent, attr, nn.Identity())
    return in_features


def build_backbone(config: BackboneConfig) -> nn.Module:
    if config.name in RESNET_LAYOUTS:
        block, layers = RESNET_LAYOUTS[config.name]
        return ResNetBackbone(
            block,
            layers,
            width=config.width,
            cifar_stem=config.cifar_stem,
            zero_init_residual=config.zero_init_residual,
            mean=tuple(config.mean),
            std=tuple(config.std),
        )
    timm_name = config.name.removeprefix("timm:") if config.name.startswith("timm:") else None
    if timm_name is None and config.name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(
            f"model.name={config.name!r} is neither an augbench ResNet ({', '.join(RESNET_LAYOUTS)}), "
            "a torchvision classification model nor timm:NAME"
        )
    if config.width != 1.0 or config.cifar_stem:
        raise ValueError(
            f"model.name={config.name!r}: width and cifar_stem apply to augbench's ResNets "
            f"({', '.join(RESNET_LAYOUTS)}) only; set model.width=1.0 model.cifar_stem=false"
        )
    if timm_name is None:
        return TorchvisionBackbone(config.name, tuple(config.mean), tuple(config.std))
    try:
        return TimmBackbone(timm_name)
    except RuntimeError as error:  # timm: "Unknown model (…)"
        raise ValueError(f"model.name={config.name!r}: {error}") from None
