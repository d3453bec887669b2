"""Methods: a registry from `method.name` to a config dataclass and a class.

MoCo v2, BYOL, SimCLR and SimSiam are presets of one two-branch method: each
name has its own config class (its paper's defaults) and shares the class
`TwoBranchMethod`; `two_branch` is the generic method for points between them.
"""

from __future__ import annotations

from torch import nn

from augbench.methods.barlow_twins import BarlowTwinsConfig, BarlowTwinsMethod
from augbench.methods.base import Method
from augbench.methods.byol import BYOLConfig
from augbench.methods.hai import HAIConfig, HAIMethod
from augbench.methods.looc import LooCConfig, LooCMethod
from augbench.methods.moco_v2 import MoCoV2Config
from augbench.methods.simclr import SimCLRConfig
from augbench.methods.simsiam import SimSiamConfig
from augbench.methods.supervised import SupervisedConfig, SupervisedMethod
from augbench.methods.swav import SwAVConfig, SwAVMethod
from augbench.methods.two_branch import TwoBranchConfig, TwoBranchMethod

METHODS: dict[str, tuple[type, type[Method]]] = {
    "moco_v2": (MoCoV2Config, TwoBranchMethod),
    "byol": (BYOLConfig, TwoBranchMethod),
    "simclr": (SimCLRConfig, TwoBranchMethod),
    "simsiam": (SimSiamConfig, TwoBranchMethod),
    "two_branch": (TwoBranchConfig, TwoBranchMethod),
    "swav": (SwAVConfig, SwAVMethod),
    "looc": (LooCConfig, LooCMethod),
    "hai": (HAIConfig, HAIMethod),
    "barlow_twins": (BarlowTwinsConfig, BarlowTwinsMethod),
    "supervised": (SupervisedConfig, SupervisedMethod),
}
# Names of earlier versions → the name their stored runs' configs load as (`stored_method_name`).
RENAMED = {"siamese": "two_branch"}


def method_config_type(name: str) -> type:
    if name in RENAMED:
        raise KeyError(f"{name!r} was split by paper: moco_v2, byol, simclr, simsiam (presets of the two-branch "
                       f"method) or {RENAMED[name]} (its generic form, the old {name!r}); known methods: "
                       f"{sorted(METHODS)}")
    if name not in METHODS:
        raise KeyError(f"known methods: {sorted(METHODS)}")
    return METHODS[name][0]


def stored_method_name(name: str) -> str:
    """The method name under which a run directory's stored config.yaml of an earlier version loads today."""
    return RENAMED.get(name, name)


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


__all__ = ["METHODS", "Method", "build_method", "check_views", "method_config_type", "stored_method_name",
           "views_kind"]
