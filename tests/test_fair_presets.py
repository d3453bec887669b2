from dataclasses import asdict
from itertools import pairwise

import pytest
import yaml

from augbench.config import shipped_config
from augbench.train.config import load_config, read_status
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES

FAIR = shipped_config("fair")
STEPS = sorted(path.name for path in FAIR.glob("*.yaml"))

# The factors of the design space the path may change, each as the composed config keys it is set by (the run name
# aside). A factor set by several keys (the projector's width, the optimiser) changes as one.
FACTORS = {
    "projector BN": {"method.projector.bn"},
    "projector width": {"method.projector.hidden_dim", "method.projector.out_dim"},
    "predictor": {"method.predictor.enabled"},
    "momentum schedule": {"method.momentum.final"},
    "BatchNorm statistics": {"method.shuffle_bn"},
    "symmetric loss": {"method.symmetric"},
    "negatives": {"method.negatives"},
    "augmentation": {"augment.recipe"},
    "optimiser": {"optim.name", "optim.lr", "optim.weight_decay", "optim.exclude_bn_bias"},  # warm-up from 00
}
# The one factor each step turns.
SWITCHES = {
    "01_projector_bn.yaml": "projector BN",
    "02_wider_projector.yaml": "projector width",
    "03_predictor.yaml": "predictor",
    "04_momentum_schedule.yaml": "momentum schedule",
    "05_whole_batch_bn.yaml": "BatchNorm statistics",  # MoCo v2+'s SyncBN for MoCo v2's Shuffle BN
    "06_symmetric_loss.yaml": "symmetric loss",  # = MoCo v2+
    "07_no_negatives.yaml": "negatives",
    "08_byol_augmentation.yaml": "augmentation",
    "09_lars.yaml": "optimiser",  # = the study's BYOL
}

def _flat(config) -> dict:
    def walk(value, prefix):
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in walk(item, f"{prefix}{key}.").items()}
        return {prefix[:-1]: value}

    return walk(asdict(config), "")


def _composed(step: str, *overrides: str) -> dict:
    """The step's composed config but for the run name and the method's name (the method is its switches)."""
    config, _ = load_config(FAIR / step, list(overrides))
    flat = _flat(config)
    flat.pop("name"), flat.pop("method.name")
    return flat


def test_the_steps_are_numbered_and_each_inherits_from_its_predecessor():
    assert ["00_moco_v2.yaml", *SWITCHES] == STEPS
    assert yaml.safe_load((FAIR / STEPS[0]).read_text())["base"] == "../methods/moco_v2.yaml"
    for previous, step in pairwise(STEPS):
        base = yaml.safe_load((FAIR / step).read_text())["base"]
        assert base == previous or base == [previous, "../optim/lars.yaml"], step  # 09 takes the shared LARS block


def test_the_path_is_named_by_paper_at_its_ends_and_two_branch_between():
    names = [load_config(FAIR / step)[0].method.name for step in STEPS]
    assert names == ["moco_v2", *["two_branch"] * (len(STEPS) - 2), "byol"]


def _changed(before: dict, after: dict) -> set[str]:
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


@pytest.mark.parametrize("index", range(1, len(STEPS)))
def test_each_step_turns_exactly_one_factor_its_own(index):
    changed = _changed(_composed(STEPS[index - 1]), _composed(STEPS[index]))
    factors = {name for name, keys in FACTORS.items() if changed & keys}
    assert changed <= set().union(*FACTORS.values()), changed - set().union(*FACTORS.values())
    assert factors == {SWITCHES[STEPS[index]]}


def test_the_path_starts_at_moco_v2_passes_moco_v2_plus_and_ends_at_byol():
    def preset(name: str) -> dict:
        flat = _flat(load_config(shipped_config(f"methods/{name}.yaml"))[0])
        flat.pop("name"), flat.pop("method.name")
        return flat

    # MoCo v2 with the study's 10 warm-up epochs, which every step of the path keeps.
    assert _composed(STEPS[0]) == preset("moco_v2") | {"optim.warmup_epochs": 10.0}
    assert all(_composed(step)["optim.warmup_epochs"] == 10.0 for step in STEPS)
    # BYOL but for the weight decay, which is the study's (1e-6) where byol.yaml has its small-image value.
    assert _composed(STEPS[-1]) == preset("byol") | {"optim.weight_decay": 1e-6}
    moco_v2_plus = _composed("06_symmetric_loss.yaml")  # the study's MoCo v2+ row
    assert (moco_v2_plus["method.projector.hidden_dim"], moco_v2_plus["method.projector.out_dim"]) == (4096, 256)
    assert moco_v2_plus["method.projector.bn"] and moco_v2_plus["method.predictor.enabled"]
    assert moco_v2_plus["method.negatives"] == "queue" and moco_v2_plus["method.symmetric"]
    assert moco_v2_plus["method.enqueue"] == "one_view" and moco_v2_plus["method.shuffle_bn"] == 0
    # revisitAIRL's mocov2_plus.py and byol.py sum the two directions; so do the path from MoCo v2+ on and BYOL.
    assert all(_composed(step)["method.pair_reduction"] == "sum" for step in STEPS)
    assert _composed(STEPS[0])["method.queue_init"] == "random"  # MoCo's builder: random unit keys
    assert (moco_v2_plus["method.momentum.base"], moco_v2_plus["method.momentum.final"]) == (0.99, 1.0)


def test_every_step_has_its_own_run_name():
    names = [load_config(FAIR / step)[0].name for step in STEPS]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("step", STEPS)
def test_two_pretraining_steps_per_step(step, tmp_path):
    config, _ = load_config(
        FAIR / step, [*TINY_OVERRIDES, "data.image_size=16", f"output_dir={tmp_path}", "method.queue_size=32"]
    )
    run = pretrain(config)
    status = read_status(run.directory)
    assert status["state"] == "finished" and status["steps"] == 2


def test_s_moco_v2_plus_is_moco_v2_plus_with_the_predictor_on_both_branches(tmp_path):
    side = FAIR / "side" / "s_moco_v2_plus.yaml"
    before, after = _composed("06_symmetric_loss.yaml"), _composed(f"side/{side.name}")
    assert {key for key in before if before[key] != after[key]} == {"method.target_predictor"}
    assert after["method.target_predictor"]
    config, _ = load_config(side, [*TINY_OVERRIDES, "data.image_size=16", f"output_dir={tmp_path}",
                                   "method.queue_size=32"])
    run = pretrain(config)
    assert read_status(run.directory)["steps"] == 2
