"""Taps at intermediate depths: run a backbone up to one stage, and heads that pool a stage to a feature vector.

HAI (Zhang & Ma, CVPR 2022) attaches a loss after every ResNet stage; a pair
meant for stage k only needs the backbone up to stage k, so a step costs
partial forward passes instead of four full ones.
"""

from __future__ import annotations

from torch import Tensor, nn

from augbench.models.backbones import ResNetBackbone

NUM_STAGES = 4


def check_staged(backbone: nn.Module) -> ResNetBackbone:
    """`backbone` if it exposes its stages (augbench's ResNets), else a ValueError naming the model."""
    if not isinstance(backbone, ResNetBackbone):
        raise ValueError(
            f"model: {type(backbone).__name__} has no stage taps; stage-wise methods need an augbench ResNet "
            "(model.name=resnet18/34/50/101)"
        )
    return backbone


def forward_to_stage(backbone: ResNetBackbone, images: Tensor, stage: int) -> Tensor:
    """The feature map after layer`stage` (1-based), (B, C_stage, H_stage, W_stage); deeper stages are not run."""
    x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(backbone.normalize(images)))))
    for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)[:stage]:
        x = layer(x)
    return x


class StageHead(nn.Module):
    """A stage's feature map (B, C, H, W) → a vector (B, out_dim).

    The last stage is plain global average pooling, as the backbone's own
    output. Shallower stages first pass a light 3×3 conv (stride 2) + BN +
    ReLU to `out_dim` channels: a documented stand-in for HAI's attention gate
    and separable convs, which METHODS.md allows.
    """

    def __init__(self, in_channels: int, out_dim: int, last: bool):
        super().__init__()
        if last and in_channels != out_dim:
            raise ValueError(f"the last stage pools its {in_channels} channels as they are, not to {out_dim}")
        layers: list[nn.Module] = []
        if not last:
            layers += [
                nn.Conv2d(in_channels, out_dim, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_dim),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.out_dim = out_dim

    def forward(self, feature_map: Tensor) -> Tensor:
        return self.body(feature_map)
