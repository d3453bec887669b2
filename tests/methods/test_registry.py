from pathlib import Path

import pytest

import augbench.methods
from augbench.methods import METHODS
from augbench.methods.two_branch import TwoBranchConfig, TwoBranchMethod

FOLDER = Path(augbench.methods.__file__).parent


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_has_its_config_in_a_file_of_its_name(name):
    config_type, _ = METHODS[name]
    assert (FOLDER / f"{name}.py").is_file()
    assert config_type.__module__ == f"augbench.methods.{name}"
    assert config_type().name == name


def test_the_paper_presets_and_two_branch_share_one_method_and_one_set_of_switches():
    presets = {name for name, (config, _) in METHODS.items() if issubclass(config, TwoBranchConfig)}
    assert presets == {"moco_v2", "byol", "simclr", "simsiam", "two_branch"}
    assert all(METHODS[name][1] is TwoBranchMethod for name in presets)
    keys = {name: list(vars(METHODS[name][0]())) for name in presets}
    assert all(k == keys["two_branch"] for k in keys.values())  # a preset changes defaults, never keys
