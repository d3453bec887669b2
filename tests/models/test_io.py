"""Exported backbones load, strictly, into torchvision's and timm's ResNets and compute the same features."""

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from augbench.cli import main
from augbench.errors import CheckpointError
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.io import export_backbone, save_encoder


def _saved_encoder(tmp_path, **settings) -> tuple[nn.Module, BackboneConfig, object]:
    config = BackboneConfig(**settings)
    torch.manual_seed(0)
    encoder = build_backbone(config)
    with torch.no_grad():  # non-trivial BN statistics, so a mix-up of buffers would show
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = save_encoder(encoder.eval(), config, tmp_path / "encoder.safetensors")
    return encoder, config, path


def _normalised(images: torch.Tensor, config: BackboneConfig) -> torch.Tensor:
    mean, std = torch.tensor(config.mean).view(1, 3, 1, 1), torch.tensor(config.std).view(1, 3, 1, 1)
    return (images - mean) / std


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("format", ["torchvision", "timm"])
def test_an_exported_resnet_loads_strictly_and_gives_the_same_features(tmp_path, name, format):
    encoder, config, path = _saved_encoder(tmp_path, name=name, cifar_stem=False)
    output, exported_config = export_backbone(path, format, tmp_path / f"{name}.pth")
    assert exported_config == config
    state = torch.load(output, weights_only=True)
    if format == "torchvision":
        model = getattr(torchvision.models, name)(weights=None)
        model.fc = nn.Identity()
    else:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    model.load_state_dict(state, strict=True)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(_normalised(images, config)), encoder(images), atol=1e-5)


def test_a_safetensors_export_carries_the_input_normalisation(tmp_path):
    _, config, path = _saved_encoder(tmp_path, name="resnet18", cifar_stem=False)
    output, _ = export_backbone(path, "timm", tmp_path / "backbone.safetensors")
    state = load_file(output)
    timm.create_model("resnet18", pretrained=False, num_classes=0).load_state_dict(state, strict=True)
    from safetensors import safe_open

    with safe_open(output, framework="pt") as file:
        metadata = file.metadata()
    assert metadata["format"] == "timm" and metadata["mean"] == str(list(config.mean))


@pytest.mark.parametrize(("settings", "reason"), [
    ({"cifar_stem": True}, r"the CIFAR stem \(a 3x3 stride-1 conv1 and no max-pool\)"),
    ({"cifar_stem": False, "width": 0.5}, r"width 0.5 \(stage widths \[32, 64, 128, 256\]\)"),
])
def test_a_resnet_without_a_counterpart_is_refused_saying_why(tmp_path, settings, reason):
    _, _, path = _saved_encoder(tmp_path, name="resnet18", **settings)
    with pytest.raises(CheckpointError, match=rf"{path}: this resnet18 has {reason}; torchvision's resnet18 has a 7x7"):
        export_backbone(path, "torchvision", tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_the_export_command_writes_the_file_or_prints_the_reason(tmp_path, capsys):
    _, _, path = _saved_encoder(tmp_path, name="resnet18", cifar_stem=False)
    output = tmp_path / "exported" / "resnet18.pth"
    assert main(["export", str(path), "--format", "torchvision", "--output", str(output)]) == 0
    assert "mean=[0.485, 0.456, 0.406]" in " ".join(capsys.readouterr().out.split())
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()
    model.load_state_dict(torch.load(output, weights_only=True), strict=True)
    (tmp_path / "cifar").mkdir()
    _, _, cifar = _saved_encoder(tmp_path / "cifar", name="resnet18", cifar_stem=True)
    assert main(["export", str(cifar), "--format", "timm", "--output", str(tmp_path / "c.pth")]) == 2
    assert "CIFAR stem" in capsys.readouterr().out
