"""Methods: a registry from `method.name` to a config dataclass and a class."""

from __future__ import annotations

from torch import nn

from augbench.methods.barlow_twins import BarlowTwinsConfig, BarlowTwinsMethod
from augbench.methods.base import Method
from augbench.methods.hai import HAIConfig, HAIMethod
from augbench.methods.looc import LooCConfig, LooCMethod
from augbench.methods.siamese import SiameseConfig, SiameseMethod
from augbench.methods.swav import SwAVConfig, SwAVMethod

METHODS: dict[str, tuple[type, type[Method]]] = {
    "siamese": (SiameseConfig, SiameseMethod),
    "hai": (HAIConfig, HAIMethod),
    "swav": (SwAVConfig, SwAVMethod),
    "looc": (LooCConfig, LooCMethod),
    "barlow_twins": (BarlowTwinsConfig, BarlowTwinsMethod),
}


def method_config_type(name: str) -> type:
    if name not in METHODS:
        raise KeyError(f"known methods: {sorted(METHODS)}")
    return METHODS[name][0]


def views_kind(name: str) -> str:
    """The kind of views (`augment.views`) the method `name` trains on."""
    return METHODS[name][1].views_kind


def check_views(config, views) -> None:
    """Refuse an `augment` section the method of `config` cannot train on: another kind of views, or views its
    config contradicts (the method config's `check_views`)."""
    needed = views_kind(config.name)
    if views.views != needed:
        raise ValueError(f"method.name={config.name} trains on augment.views={needed}, not {views.views}")
    if hasattr(config, "check_views"):
        config.check_views(views)


def build_method(config, backbone: nn.Module, views=None) -> Method:
    """The method of `config` over `backbone`; `views` is the `augment` section, which LooC reads."""
    return METHODS[config.name][1].build(backbone, config, views)


__all__ = ["METHODS", "Method", "build_method", "check_views", "method_config_type", "views_kind"]
