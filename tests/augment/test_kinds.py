"""The `augment` section's kinds of views: which one a config gets, and the errors of a wrong one."""

import pytest
import torch
import yaml

from augbench.augment.hai import HierarchicalConfig
from augbench.augment.kinds import VIEW_KINDS, build_views
from augbench.augment.looc import LeaveOneOutConfig
from augbench.augment.multicrop import MultiCropConfig
from augbench.augment.recipes import TwoViewConfig
from augbench.config import shipped_config
from augbench.errors import ConfigError
from augbench.methods import METHODS, views_kind
from augbench.train.config import load_config

VIEWS_PER_IMAGE = {"two_view": 2, "multi_crop": 6, "leave_one_out": 5, "hierarchical": 8}


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("method", sorted(METHODS))
def test_without_an_augment_section_a_method_gets_the_views_it_trains_on(method):
    config, _ = load_config(overrides=[f"method.name={method}"])
    kind = views_kind(method)
    assert type(config.augment) is VIEW_KINDS[kind] and config.augment.views == kind
    views = build_views(config.augment, 32, config.method)(torch.rand(2, 3, 32, 32), torch.Generator())
    assert len(views) == VIEWS_PER_IMAGE[kind]


def test_a_recipe_alone_implies_its_kind_so_a_config_without_views_keeps_working(tmp_path):
    two_view = _write(tmp_path / "byol.yaml", "augment:\n  recipe: byol_32\n")
    assert load_config(two_view)[0].augment == TwoViewConfig(recipe="byol_32")
    leave_one_out = _write(tmp_path / "looc.yaml", "method: {name: looc}\naugment:\n  recipe: looc\n"
                                                   "  augmentations: [rotation]\n")
    assert load_config(leave_one_out)[0].augment == LeaveOneOutConfig(recipe="looc", augmentations=["rotation"])


def test_recipe_method_is_refused_with_the_keys_that_replace_it(tmp_path):
    old = _write(tmp_path / "old_hai.yaml", "method:\n  name: hai\n  crop_scale: [0.3, 1.0]\naugment:\n"
                                            "  recipe: method\n")
    with pytest.raises(ConfigError) as error:
        load_config(old)
    message = str(error.value)
    assert message.startswith(f"{old}: augment.recipe=method is replaced") and "\n" not in message
    assert "augment.views=hierarchical with augment.assignment, augment.crop_scale" in message
    assert "augment.views=multi_crop with augment.num_crops" in message


@pytest.mark.parametrize(("preset", "override", "expected"), [
    ("swav", "augment.recipe=moco_v2_32", "method.name=swav trains on augment.views=multi_crop, not two_view"),
    ("looc", "augment.recipe=byol_32", "method.name=looc trains on augment.views=leave_one_out, not two_view"),
    ("moco_v2", "augment.views=hierarchical", "method.name=moco_v2 trains on augment.views=two_view, not hierarchical"),
    ("hai_byol", "augment.views=multi_crop", "method.name=hai trains on augment.views=hierarchical, not multi_crop"),
])
def test_views_of_another_kind_than_the_method_trains_on_are_one_line_naming_both(preset, override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(shipped_config(f"methods/{preset}.yaml"), [override])
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_kind_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"command line: augment.views='three_view' is unknown; known kinds of "
                                          r"views: \['hierarchical', 'leave_one_out', 'multi_crop', 'two_view'\]"):
        load_config(overrides=["augment.views=three_view"])


@pytest.mark.parametrize(("preset", "override", "now"), [
    ("swav", "method.num_crops=[2,6]", "augment.num_crops"),
    ("hai_simsiam", "method.assignment.flip=null", "augment.assignment"),
    ("hai_simsiam", "method.hierarchical_strength.enabled=true", "augment.hierarchical_strength"),
    ("looc", "method.augmentations=[color]", "augment.augmentations"),
])
def test_a_view_setting_given_under_method_names_where_it_moved(preset, override, now):
    with pytest.raises(ConfigError, match=rf"command line: method\.\w+(\.\w+)?: moved to {now} "):
        load_config(shipped_config(f"methods/{preset}.yaml"), [override])


def test_a_source_that_names_no_kind_adds_to_the_kind_before_it_and_a_new_kind_replaces_the_section(tmp_path):
    config, _ = load_config(shipped_config("methods/looc.yaml"),
                            ["augment.crop_size=24", "augment.augmentations=[texture]"])
    assert config.augment == LeaveOneOutConfig(crop_size=24, augmentations=["texture"])
    config, _ = load_config(shipped_config("methods/hai_simsiam.yaml"), ["augment.crop_scale=[0.5,1.0]"])
    assert isinstance(config.augment, HierarchicalConfig) and config.augment.crop_scale == (0.5, 1.0)
    # The two-view settings of the first file do not carry into the leave-one-out views that the override switches to.
    two_view = _write(tmp_path / "swap.yaml", "augment:\n  recipe: moco_v2_32\n  background: swap\n  crop_size: 20\n")
    config, _ = load_config(two_view, ["method.name=looc", "augment.recipe=looc_32"])
    assert config.augment == LeaveOneOutConfig()


def test_every_shipped_method_preset_names_the_kind_of_views_its_method_trains_on():
    kinds = {}
    for path in sorted(shipped_config("methods").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        config, _ = load_config(path)
        assert config.augment.views == views_kind(config.method.name), path
        if "base" not in raw:  # a preset that inherits its views from its base may leave the kind to it
            assert raw["augment"]["views"] == config.augment.views, path
        kinds[config.augment.views] = type(config.augment)
    assert kinds == {"two_view": TwoViewConfig, "multi_crop": MultiCropConfig, "leave_one_out": LeaveOneOutConfig,
                     "hierarchical": HierarchicalConfig}
