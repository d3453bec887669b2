"""The `augment` section: one config per kind of views, chosen by `augment.views`.

| `augment.views` | config | views of each image | methods |
| --- | --- | --- | --- |
| `two_view` | recipes.TwoViewConfig | two, from a paper's recipe | MoCo v2, BYOL, SimCLR, SimSiam, Barlow Twins |
| `multi_crop` | multicrop.MultiCropConfig | a few large crops and several small ones | SwAV |
| `leave_one_out` | looc.LeaveOneOutConfig | a query and a key per left-out augmentation | LooC |
| `hierarchical` | hai.HierarchicalConfig | a pair per backbone stage, with that depth's augmentations | HAI |

Each method declares the kind it trains on (`Method.views_kind`). A section
without `views` is read as the kind its `recipe` names (`moco_v2_32`:
two_view, `looc_32`: leave_one_out), and a config without either as the
method's kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from augbench.augment.hai import HierarchicalConfig
from augbench.augment.looc import LEAVE_ONE_OUT_RECIPES, LOOC_AUG_PAIR_RECIPES, LeaveOneOutConfig
from augbench.augment.multicrop import MultiCropConfig
from augbench.augment.recipes import RECIPES, TwoViewConfig
from augbench.augment.views import Recipe

VIEW_KINDS: dict[str, type] = {
    "two_view": TwoViewConfig,
    "multi_crop": MultiCropConfig,
    "leave_one_out": LeaveOneOutConfig,
    "hierarchical": HierarchicalConfig,
}

# The kind each recipe name makes, for a section that names its recipe but not its kind.
RECIPE_KINDS: dict[str, str] = {
    **{name: "two_view" for name in [*RECIPES, *LOOC_AUG_PAIR_RECIPES]},
    **{name: "leave_one_out" for name in LEAVE_ONE_OUT_RECIPES},
}

# `augment.recipe: method` asked the method config for its views until the section had kinds.
REPLACED_METHOD_RECIPE = (
    "augment.recipe=method is replaced by the kind of views, set in the augment section: for HAI "
    "augment.views=hierarchical with augment.assignment, augment.crop_scale and augment.hierarchical_strength (no "
    "longer under method); for SwAV augment.views=multi_crop with augment.num_crops, crop_sizes, min_scale, "
    "max_scale, color_strength and blur (no longer under method)"
)


def views_config_type(kind: str) -> type:
    """The config dataclass of `augment.views: kind`."""
    if kind not in VIEW_KINDS:
        raise KeyError(f"known kinds of views: {sorted(VIEW_KINDS)}")
    return VIEW_KINDS[kind]


def implied_kind(section: Mapping) -> str | None:
    """The kind an `augment` section that does not set `views` implies by its `recipe`, if it names a known one."""
    recipe = section.get("recipe")
    if recipe == "method":
        raise ValueError(REPLACED_METHOD_RECIPE)
    return RECIPE_KINDS.get(recipe)


def build_views(config: Any, image_size: int, method: Any = None) -> Recipe:
    """The view generator of an `augment` section for images of `image_size` px; `method` is the method's config,
    which hierarchical views read for the stages it taps."""
    return config.build(image_size, method)
