import pytest
import torch

from augbench.augment.views import View
from augbench.config import shipped_config
from augbench.errors import ConfigError
from augbench.methods import build_method
from augbench.methods.barlow_twins import BarlowTwinsConfig, BarlowTwinsMethod
from augbench.methods.losses import cross_correlation
from augbench.models.backbones import build_backbone
from augbench.train.config import load_config, read_status
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES


def _method(*overrides: str):
    config, _ = load_config(shipped_config("methods/barlow_twins.yaml"),
                            ["model.width=0.125", "method.projector.hidden_dim=64", "method.projector.out_dim=32",
                             *overrides])
    return build_method(config.method, build_backbone(config.model)), config


def test_the_loss_is_the_cross_correlation_of_one_networks_embeddings_of_both_views_with_gradients_through_both():
    method, config = _method()
    assert isinstance(method, BarlowTwinsMethod)
    views = [View(torch.rand(16, 3, 16, 16).requires_grad_(), {}) for _ in range(2)]
    out = method(views)
    with torch.no_grad():  # train mode: the projector's BN uses the same batch statistics again
        z = [method.projector(method.backbone(view.images)) for view in views]
    assert torch.allclose(out["loss"], cross_correlation(z[0], z[1], config.method.off_diagonal_weight), rtol=1e-5)
    out["loss"].backward()
    assert all(view.images.grad is not None and view.images.grad.abs().sum() > 0 for view in views)
    assert not hasattr(method, "target_backbone") and isinstance(method.predictor, torch.nn.Identity)


def test_the_defaults_are_the_official_code_and_the_preset_states_its_small_scale():
    official = BarlowTwinsConfig()
    # facebookresearch/barlowtwins main.py: --lambd 0.0051, --projector 8192-8192-8192, BN + ReLU on hidden layers.
    assert official.off_diagonal_weight == 0.0051
    specs = official.projector.specs()
    assert [spec.width for spec in specs] == [8192, 8192, 8192]
    assert [(spec.bn, spec.activation) for spec in specs] == [(True, "relu"), (True, "relu"), (False, None)]
    preset, _ = load_config(shipped_config("methods/barlow_twins.yaml"))
    assert preset.method.projector.num_layers == 3 and preset.method.off_diagonal_weight == 0.0051
    assert preset.model.zero_init_residual and preset.augment.recipe == "byol_32"
    assert (preset.optim.name, preset.optim.lr, preset.optim.bn_bias_lr) == ("lars", 0.2, 0.0048)


def test_a_negative_off_diagonal_weight_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"barlow_twins\.yaml.*method: off_diagonal_weight=-1.0: λ must not be"):
        _method("method.off_diagonal_weight=-1.0")


def test_two_pretraining_steps_of_the_preset_write_a_finished_run(tmp_path):
    config, _ = load_config(shipped_config("methods/barlow_twins.yaml"),
                            [*TINY_OVERRIDES, f"output_dir={tmp_path}", "method.projector.hidden_dim=128",
                             "method.projector.out_dim=128"])
    run = pretrain(config)
    assert read_status(run.directory)["state"] == "finished" and read_status(run.directory)["steps"] == 2
