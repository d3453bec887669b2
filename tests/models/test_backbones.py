import pytest
import torch
import torchvision

from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.heads import MLP, LayerSpec, PredictorConfig, ProjectorConfig


def test_width_multiplier_scales_every_stage():
    backbone = build_backbone(BackboneConfig(name="resnet18", width=0.25))
    assert backbone.stage_dims == [16, 32, 64, 128] and backbone.out_dim == 128
    assert backbone.layer3[0].conv1.out_channels == 64
    wide = build_backbone(BackboneConfig(name="resnet50", width=0.5, cifar_stem=False))
    assert wide.out_dim == 1024


def test_cifar_stem_keeps_resolution_and_imagenet_stem_divides_by_four():
    images = torch.rand(2, 3, 32, 32)
    cifar = build_backbone(BackboneConfig(width=0.125, cifar_stem=True)).eval()
    imagenet = build_backbone(BackboneConfig(width=0.125, cifar_stem=False)).eval()
    assert cifar.forward_stages(images)[0].shape[-1] == 32
    assert imagenet.forward_stages(images)[0].shape[-1] == 8
    assert cifar(images).shape == (2, 8 * 8)


def test_full_width_imagenet_resnet50_is_interchangeable_with_torchvision():
    ours = build_backbone(BackboneConfig(name="resnet50", cifar_stem=False))
    reference = torchvision.models.resnet50()
    reference_state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert set(ours.state_dict()) == set(reference_state)
    ours.load_state_dict(reference_state)
    reference.fc = torch.nn.Identity()
    images = torch.rand(2, 3, 64, 64)
    normalised = (images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(ours.eval()(images), reference.eval()(normalised), atol=1e-5)


def test_any_torchvision_model_by_name_gives_pooled_features():
    backbone = build_backbone(BackboneConfig(name="mobilenet_v3_small", cifar_stem=False)).eval()
    assert backbone(torch.rand(2, 3, 64, 64)).shape == (2, backbone.out_dim)
    assert backbone.out_dim == 1024


def test_any_timm_model_by_name_gives_pooled_features_with_its_own_normalisation():
    backbone = build_backbone(BackboneConfig(name="timm:test_resnet", cifar_stem=False)).eval()
    assert backbone(torch.rand(2, 3, 32, 32)).shape == (2, backbone.out_dim)
    assert backbone.out_dim == backbone.model.num_features
    assert backbone.mean == tuple(backbone.model.pretrained_cfg["mean"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "resnet7"}, "name='resnet7' is unknown; accepted: resnet18, resnet34"),
        ({"name": "timm:no_such_net", "cifar_stem": False}, "name='timm:no_such_net': timm has no model"),
        ({"name": "timm:test_resnet"}, "width and cifar_stem apply to augbench's ResNets"),
        ({"name": "mobilenet_v3_small", "width": 0.5}, "width and cifar_stem apply to augbench's ResNets"),
    ],
)
def test_bad_backbone_configs_name_the_key(settings, message):
    with pytest.raises(ValueError, match=message):  # with the config, before anything is built
        BackboneConfig(**settings)


def test_mlp_follows_its_layer_specs():
    mlp = MLP(8, [LayerSpec(16, bn=True, activation="relu"), LayerSpec(4)])
    kinds = [type(m).__name__ for m in mlp]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert mlp[0].bias is None and mlp[3].bias is not None and mlp.out_dim == 4


def test_projector_and_predictor_presets():
    byol = MLP(512, ProjectorConfig(num_layers=2, hidden_dim=4096, out_dim=256, bn=True).specs())
    assert [type(m).__name__ for m in byol] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    moco = MLP(512, ProjectorConfig(num_layers=2, hidden_dim=2048, out_dim=128, bn=False).specs())
    assert [type(m).__name__ for m in moco] == ["Linear", "ReLU", "Linear"]
    simsiam = MLP(512, ProjectorConfig(num_layers=3, hidden_dim=2048, out_dim=2048, bn=True, last_bn=True).specs())
    assert isinstance(simsiam[-1], torch.nn.BatchNorm1d) and not simsiam[-1].affine and len(simsiam) == 8
    predictor = MLP(256, PredictorConfig(enabled=True, hidden_dim=64).specs(256))
    assert predictor.out_dim == 256 and predictor[0].out_features == 64
