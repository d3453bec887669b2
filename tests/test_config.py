from dataclasses import dataclass

import pytest

from augbench.config import shipped_config
from augbench.data.shapes_world import ShapesWorldConfig
from augbench.errors import ConfigError
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
    path = _write(tmp_path / "bad.yaml", "method:\n  name: siamese\n  temprature: 0.1\n")
    with pytest.raises(ConfigError, match=rf"{path}: method.temprature: Key 'temprature' not in 'SiameseConfig'"):
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
    with pytest.raises(ConfigError, match=rf"{path}: method.name='dino' is unknown; known methods: \[.*'siamese'.*\]"):
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


def test_every_shipped_method_preset_loads_and_siamese_presets_share_their_keys():
    import yaml

    keys = None
    for path in sorted(shipped_config("methods").glob("*.yaml")):
        config, _ = load_config(path)
        if config.method.name != "siamese":
            continue
        method_keys = sorted(yaml.safe_load(path.read_text())["method"])
        keys = keys or method_keys
        assert method_keys == keys, path  # a comparison of two methods is a diff of two files


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


@dataclass
class _StagewiseConfig:
    """A method config train/ has never heard of, declaring what HAI declares (augbench.methods.base)."""

    name: str = "stagewise"

    def runs_backbone_by_stage(self) -> str:
        return "method.name=stagewise"

    def missing_features(self) -> str:
        return "stagewise never computes"


def test_the_trainer_checks_what_a_method_config_declares_not_its_type():
    def pretrain_config(**sections):
        return PretrainConfig(data=ShapesWorldConfig(), method=_StagewiseConfig(), **sections)

    with pytest.raises(ValueError, match=r"compiles the backbone's forward, which method\.name=stagewise never calls"):
        pretrain_config(trainer=TrainerConfig(compile_model=True))
    with pytest.raises(ValueError, match="reads the encoder's features, which stagewise never computes"):
        pretrain_config(monitor=MonitorConfig(label="shape", online_linear=True))
    assert pretrain_config().method.name == "stagewise"  # declared, but nothing asked for either
