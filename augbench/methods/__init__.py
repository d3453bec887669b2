"""Methods: a registry from `method.name` to a config dataclass and a class."""

from __future__ import annotations

from torch import nn

from augbench.methods.barlow_twins import BarlowTwinsConfig, BarlowTwinsMethod
from augbench.methods.base import Method
from augbench.methods.hai import HAIConfig, HAIMethod
from augbench.methods.looc import LooCConfig, LooCMethod
from augbench.methods.siamese import SiameseConfig, SiameseMethod
from augbench.methods.supervised import SupervisedConfig, SupervisedMethod
from augbench.methods.swav import SwAVConfig, SwAVMethod

METHODS: dict[str, tuple[type, type[Method]]] = {
    "siamese": (SiameseConfig, SiameseMethod),
    "hai": (HAIConfig, HAIMethod),
    "swav": (SwAVConfig, SwAVMethod),
    "looc": (LooCConfig, LooCMethod),
    "barlow_twins": (BarlowTwinsConfig, BarlowTwinsMethod),
    "supervised": (SupervisedConfig, SupervisedMethod),
}


def method_config_type(name: str) -> type:
    if name not in METHODS:
        raise KeyError(f"known methods: {sorted(METHODS)}")
    return METHODS[name][0]


def build_method(config, backbone: nn.Module) -> Method:
    return METHODS[config.name][1](backbone, config)


__all__ = ["METHODS", "Method", "build_method", "method_config_type"]
