from dataclasses import dataclass, field
from typing import Any

import pytest
from omegaconf import OmegaConf

from augbench.augment.recipes import TwoViewConfig
from augbench.config import Polymorphic, Source, compose, shipped_config
from augbench.data import dataset_config_type
from augbench.errors import ConfigError
from augbench.methods import METHODS, Method
from augbench.train.config import MonitorConfig, PretrainConfig, TrainerConfig, load_config


def _write(path, text):
    path.write_text(text)
    return path


def test_preset_and_overrides_compose_in_order(tmp_path):
    config, _ = load_config(shipped_config("methods/byol.yaml"), ["optim.lr=0.5", "method.symmetric=false"])
    assert config.optim.name == "lars" and config.optim.lr == 0.5 and config.method.symmetric is False
    assert config.method.predictor.enabled and config.data.name == "shapes_world"


def test_base_files_are_inherited_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "common.yaml", "seed: 7\ntrainer: {batch_size: 64}\n")
    child = _write(tmp_path / "sub" / "child.yaml", "base: ../common.yaml\ntrainer: {max_epochs: 3}\n")
    config, _ = load_config(child)
    assert (config.seed, config.trainer.batch_size, config.trainer.max_epochs) == (7, 64, 3)


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = _write(tmp_path / "bad.yaml", "method:\n  name: moco_v2\n  temprature: 0.1\n")
    with pytest.raises(ConfigError, match=rf"{path}: method.temprature: Key 'temprature' not in 'MoCoV2Config'"):
        load_config(path)


def test_wrong_type_names_the_key_and_the_file(tmp_path):
    path = _write(tmp_path / "bad.yaml", "trainer:\n  batch_size: lots\n")
    with pytest.raises(ConfigError, match=rf"{path}: trainer.batch_size: Value 'lots'"):
        load_config(path)


def test_bad_override_names_the_command_line():
    with pytest.raises(ConfigError, match=r"command line: optim.lr: Value 'fast'"):
        load_config(overrides=["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"override 'optim.lr' is not of the form key=value"):
        load_config(overrides=["optim.lr"])


def test_semantic_errors_name_the_section():
    with pytest.raises(ConfigError, match=r"command line: method: negatives='some'"):
        load_config(overrides=["method.negatives=some"])
    with pytest.raises(ConfigError, match=r"augment: recipe='moco_v3' is unknown"):
        load_config(overrides=["augment.recipe=moco_v3"])


def test_unknown_method_name_names_the_file(tmp_path):
    path = _write(tmp_path / "m.yaml", "method: {name: dino}\n")
    with pytest.raises(ConfigError, match=rf"{path}: method.name='dino' is unknown; known methods: \[.*'moco_v2'.*\]"):
        load_config(path)


def test_missing_file_and_broken_yaml_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    broken = _write(tmp_path / "broken.yaml", "trainer: {batch_size: [\n")
    with pytest.raises(ConfigError, match=rf"{broken}: not valid YAML"):
        load_config(broken)
    missing_base = _write(tmp_path / "child.yaml", "base: parent.yaml\n")
    with pytest.raises(ConfigError, match=r"parent.yaml: config file not found \(base of"):
        load_config(missing_base)


def _set_keys(values: dict, prefix: str = "") -> dict:
    """A YAML section's leaf keys, dotted, with their values."""
    keys = {}
    for key, value in values.items():
        keys |= _set_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return keys


@pytest.mark.parametrize("preset", ["moco_v2", "byol", "simclr", "simsiam"])
def test_a_paper_preset_file_sets_only_what_differs_from_its_paper_defaults(preset):
    import yaml
    from omegaconf import OmegaConf

    from augbench.methods import METHODS

    path = shipped_config(f"methods/{preset}.yaml")
    config, _ = load_config(path)
    assert type(config.method) is METHODS[preset][0] and config.method.name == preset
    paper = _set_keys(OmegaConf.to_container(OmegaConf.structured(METHODS[preset][0])))
    written = _set_keys(yaml.safe_load(path.read_text())["method"])
    written.pop("name")
    # Every key the file sets is a small-image value that differs from the paper's: none is inert or a copy.
    assert written and all(paper[key] != value for key, value in written.items()), written


def test_siamese_of_earlier_versions_is_refused_in_one_line_naming_the_new_names(tmp_path):
    path = _write(tmp_path / "old.yaml", "method: {name: siamese, negatives: none}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: method.name='siamese' is unknown") and "\n" not in message
    assert all(name in message for name in ("moco_v2", "byol", "simclr", "simsiam", "two_branch"))


def test_a_rename_within_the_two_branch_family_keeps_the_switches_and_a_sibling_starts_from_its_paper(tmp_path):
    moco_v2, _ = load_config(shipped_config("methods/moco_v2.yaml"))
    generic, _ = load_config(shipped_config("methods/moco_v2.yaml"), ["method.name=two_branch"])
    assert generic.method.name == "two_branch" and {**vars(generic.method), "name": "moco_v2"} == vars(moco_v2.method)
    # two_branch → byol keeps them too (configs/fair/09_lars.yaml names the path's end BYOL)
    moco_v2_file = shipped_config("methods/moco_v2.yaml")
    step = _write(tmp_path / "step.yaml", f"base: {moco_v2_file}\nmethod: {{name: two_branch}}\n")
    back, _ = load_config(step, ["method.name=byol"])
    assert (back.method.name, back.method.negatives, back.method.queue_size) == ("byol", "queue", 4096)
    # A sibling preset is another method: the command line's byol over moco_v2.yaml is BYOL's paper defaults.
    byol, _ = load_config(shipped_config("methods/moco_v2.yaml"), ["method.name=byol"])
    assert (byol.method.negatives, byol.method.momentum.base, byol.method.predictor.enabled) == ("none", 0.996, True)


def test_hai_presets_take_their_base_preset_as_base_method_with_only_hais_own_changes():
    from dataclasses import asdict

    def method(preset):
        return _set_keys(asdict(load_config(shipped_config(f"methods/{preset}.yaml"))[0].method))

    def changed(preset, hai):
        base, over = method(preset), {k.removeprefix("base_method."): v for k, v in method(hai).items()
                                      if k.startswith("base_method.")}
        return {key for key in base if base[key] != over[key]}

    assert changed("moco_v2", "hai_moco_v2") == {"shuffle_bn"}  # HAI runs without Shuffle BN
    assert changed("byol", "hai_byol") == {"projector.out_dim", "predictor.hidden_dim", "momentum.final"}  # §B
    assert changed("simsiam", "hai_simsiam") == {"projector.num_layers", "projector.last_bn_affine"}
    assert changed("simclr", "hai_simclr") == set()
    barlow = load_config(shipped_config("methods/barlow_twins.yaml"))[0].method
    assert load_config(shipped_config("methods/hai_barlow_twins.yaml"))[0].method.base_method == barlow.two_branch()


def test_the_scaling_and_checkpoint_keys_are_validated():
    config, _ = load_config(overrides=["trainer.devices=8", "trainer.num_nodes=2", "trainer.strategy=ddp",
                                       "trainer.sync_batchnorm=true", "trainer.checkpoint_every_n_steps=500"])
    assert (config.trainer.devices, config.trainer.num_nodes, config.trainer.sync_batchnorm) == (8, 2, True)
    with pytest.raises(ConfigError, match=r"command line: trainer: checkpoint_every_n_steps=-1: must be 0 \(off\)"):
        load_config(overrides=["trainer.checkpoint_every_n_steps=-1"])
    for kept in ("0", "-2"):
        with pytest.raises(ConfigError, match=rf"trainer: keep_epoch_checkpoints={kept}: must be positive"):
            load_config(overrides=[f"trainer.keep_epoch_checkpoints={kept}"])
    with pytest.raises(ConfigError, match=r"command line: trainer.sync_batchnorm: Value 'sometimes'"):
        load_config(overrides=["trainer.sync_batchnorm=sometimes"])
    with pytest.raises(ConfigError, match=r"command line: trainer.collapse_treshold: Key 'collapse_treshold' not in"):
        load_config(overrides=["trainer.collapse_treshold=0.1"])


def test_a_mandatory_key_left_unset_is_named_with_the_override_that_sets_it():
    with pytest.raises(ConfigError, match=r"command line: data: path is not set and has no default: give it in a "
                                          r"config file or as data\.path=VALUE$"):
        load_config(overrides=["data.name=cifar10"])


def test_a_run_stored_by_an_earlier_version_under_siamese_stays_readable_and_reusable(tmp_path):
    import re

    from augbench.config import to_yaml
    from augbench.train.config import config_changes, load_stored_config

    moco_v2, _ = load_config(shipped_config("methods/moco_v2.yaml"))
    hai, _ = load_config(shipped_config("methods/hai_simsiam.yaml"))
    stored = {}
    for name, config in (("moco_v2", moco_v2), ("hai", hai)):
        # config.yaml as earlier versions wrote it: every two-branch method was `siamese`.
        text = re.sub(r"^(  |    )name: (moco_v2|simsiam)$", r"\1name: siamese", to_yaml(config), flags=re.M)
        assert "name: siamese" in text
        stored[name] = _write(tmp_path / f"{name}.yaml", text)

    previous, renamed = load_stored_config(stored["moco_v2"])
    assert renamed == ["method.name"] and previous.method.name == "two_branch"
    assert {**vars(previous.method), "name": "moco_v2"} == vars(moco_v2.method)
    assert config_changes(stored["moco_v2"], moco_v2) == []  # the quickstart and benchmarks reuse the run
    byol, _ = load_config(shipped_config("methods/byol.yaml"))
    assert {"method.negatives", "method.symmetric"} <= set(config_changes(stored["moco_v2"], byol))
    assert load_stored_config(stored["hai"])[0].method.base_method.name == "two_branch"
    assert config_changes(stored["hai"], hai) == []
    with pytest.raises(ConfigError, match=r"method.name='siamese' is unknown"):
        load_config(stored["moco_v2"])  # a user's config, unlike a stored run, names the method anew


@dataclass
class _Circle:
    shape: str = "circle"
    radius: float = 1.0


@dataclass
class _Square:
    shape: str = "square"
    side: float = 1.0


@dataclass
class _Drawing:
    pen: str = "thin"
    figure: Any = field(default_factory=lambda: {"shape": "circle"})


def _figure_type(shape: str) -> type:
    if shape not in ("circle", "square"):
        raise KeyError("known shapes: ['circle', 'square']")
    return {"circle": _Circle, "square": _Square}[shape]


def _implied_shape(section) -> str | None:
    if section.get("corners") is not None:
        raise ValueError("figure.corners is gone: set figure.shape=square")
    return "square" if "side" in section else None


def _drawing(*sources: dict, default=None):
    spec = Polymorphic(_figure_type, key="shape", implied=_implied_shape, default=default)
    return compose(_Drawing, [Source(f"file{i}", OmegaConf.create(s)) for i, s in enumerate(sources)],
                   {"figure": spec}, moved={"radius": "figure.radius"})[0]


def test_a_section_can_be_polymorphic_on_another_key_implied_by_its_settings_or_defaulted_by_a_function():
    assert _drawing({"figure": {"shape": "square", "side": 2.0}}).figure == _Square(side=2.0)
    assert _drawing({"figure": {"side": 3.0}}).figure == _Square(side=3.0)  # implied by `side`
    assert _drawing({"figure": {"radius": 3.0}}).figure == _Circle(radius=3.0)  # the schema's default kind
    assert _drawing({"pen": "wide"}, default=lambda kinds: "square").figure == _Square()
    # A later source that switches the kind replaces the section; one that names none adds to the kind before it.
    assert _drawing({"figure": {"radius": 3.0}}, {"figure": {"side": 2.0}}).figure == _Square(side=2.0)
    assert _drawing({"figure": {"side": 2.0}}, {"figure": {"side": 4.0}}).figure == _Square(side=4.0)
    with pytest.raises(ConfigError, match=r"file0: figure.shape='hexagon' is unknown; known shapes"):
        _drawing({"figure": {"shape": "hexagon"}})
    with pytest.raises(ConfigError, match=r"^file0: figure.corners is gone: set figure.shape=square$"):
        _drawing({"figure": {"corners": 4}})
    with pytest.raises(ConfigError, match=r"^file1: radius: moved to figure.radius$"):
        _drawing({"pen": "wide"}, {"radius": 2.0})


@dataclass
class _StagewiseConfig:
    """A method config train/ has never heard of, declaring what HAI declares (augbench.methods.base)."""

    name: str = "stagewise"

    def runs_backbone_by_stage(self) -> str:
        return "method.name=stagewise"

    def missing_features(self) -> str:
        return "stagewise never computes"


def test_the_trainer_checks_what_a_method_config_declares_not_its_type(monkeypatch):
    monkeypatch.setitem(METHODS, "stagewise", (_StagewiseConfig, Method))

    def pretrain_config(**sections):
        data = dataset_config_type("shapes_world")()
        return PretrainConfig(data=data, method=_StagewiseConfig(), augment=TwoViewConfig(), **sections)

    with pytest.raises(ValueError, match=r"compiles the backbone's forward, which method\.name=stagewise never calls"):
        pretrain_config(trainer=TrainerConfig(compile_model=True))
    with pytest.raises(ValueError, match="reads the encoder's features, which stagewise never computes"):
        pretrain_config(monitor=MonitorConfig(label="shape", online_linear=True))
    assert pretrain_config().method.name == "stagewise"  # declared, but nothing asked for either
