"""LooC++'s encoder (Xiao et al., 2021): a backbone whose last stage has a copy per embedding space.

It lives with the models, not with the method that trains it, because an
encoder file of it is rebuilt by `augbench.models.io` without the method.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from augbench.errors import ConfigError
from augbench.models.backbones import ResNetBackbone


class LooCPlusPlusEncoder(nn.Module):
    """LooC++'s representation: the pooled outputs of the backbone's last stage and of its n copies, concatenated.

    images (B, 3, H, W) in [0, 1] → features (B, (n + 1) × backbone.out_dim).
    `encoder_metadata` tells augbench.models.io how to rebuild it.
    """

    def __init__(self, backbone: ResNetBackbone, num_spaces: int):
        super().__init__()
        if not isinstance(backbone, ResNetBackbone):
            raise ConfigError(f"method.representation='looc++' copies the last stage of one of augbench's ResNets; "
                              f"got {type(backbone).__name__}: set model.name to resnet18/34/50/101")
        self.backbone = backbone
        self.stage_copies = nn.ModuleList(_fresh_copy(backbone.layer4) for _ in range(num_spaces - 1))
        self.encoder_metadata = {"representation": "looc++", "spaces": str(num_spaces)}

    def space_features(self, images: Tensor) -> list[Tensor]:
        """The n + 1 pooled stage outputs, (B, backbone.out_dim) each: space 0 first."""
        *_, before_last, last = self.backbone.forward_stages(images)
        maps = [last] + [stage(before_last) for stage in self.stage_copies]
        return [torch.flatten(self.backbone.avgpool(m), 1) for m in maps]

    def forward(self, images: Tensor) -> Tensor:
        return torch.cat(self.space_features(images), dim=1)


def _fresh_copy(stage: nn.Module) -> nn.Module:
    """A copy of `stage` with its own random initialisation (ResNetBackbone's rule for convolutions), so the
    spaces' stages do not start as one."""
    stage = copy.deepcopy(stage)
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return stage
