"""Encoders from elsewhere: a torchvision ResNet-18 saved under each codebase's key naming loads back exactly."""

import re
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from augbench.cli import main
from augbench.errors import CheckpointError, ConfigError
from augbench.models.backbones import BackboneConfig, ResNetBackbone, TimmBackbone, build_backbone
from augbench.models.external import is_external, load_external
from augbench.models.io import load_encoder

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _randomise_batch_norm(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so a BN tensor loaded into the wrong place shows."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(1)
    return _randomise_batch_norm(torchvision.models.resnet18(weights=None), seed=1)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """torchvision's own forward pass without the classifier, on ImageNet-normalised images."""
    with torch.no_grad():
        head, model.fc = model.fc, nn.Identity()
        try:
            return model((images - MEAN) / STD)
        finally:
            model.fc = head


def _other(model_state: dict, seed: int) -> dict:
    """Same keys and shapes, other values: a momentum branch that must not be the one loaded."""
    generator = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=generator) if v.is_floating_point() else v.clone())
            for k, v in model_state.items()}


def _assert_loads_as(spec, reference: torch.Tensor, images, format_name: str, architecture: str = "resnet18"):
    loaded = load_external(spec)
    assert isinstance(loaded.encoder, ResNetBackbone) and not loaded.encoder.training
    assert loaded.config.name == architecture
    assert loaded.report.format.startswith(format_name), loaded.report.format
    assert not loaded.report.missing and not loaded.report.mismatched and not loaded.report.unexpected
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(images), reference, rtol=1e-5, atol=1e-5)
    return loaded


def test_torchvision_state_dict(tmp_path, resnet18, images):
    torch.save(resnet18.state_dict(), tmp_path / "resnet18.pth")
    loaded = _assert_loads_as(tmp_path / "resnet18.pth", _features(resnet18, images), images, "torchvision")
    assert loaded.report.dropped_heads == ["fc.weight", "fc.bias"] and loaded.report.loaded == 120
    assert loaded.config.cifar_stem is False and loaded.config.width == 1.0


def test_moco_v2_checkpoint_loads_encoder_q_and_its_arch(tmp_path, resnet18, images):
    query = {f"module.encoder_q.{k}": v for k, v in resnet18.state_dict().items() if not k.startswith("fc.")}
    key = {f"module.encoder_k.{k}": v for k, v in _other(resnet18.state_dict(), 2).items() if not k.startswith("fc.")}
    heads = {f"module.encoder_{b}.fc.{i}.{p}": torch.randn(*(512, 512) if p == "weight" else (512,))
             for b in "qk" for i in (0, 2) for p in ("weight", "bias")}
    checkpoint = {"epoch": 200, "arch": "resnet18", "optimizer": {"state": {}, "param_groups": []},
                  "state_dict": {**query, **key, **heads, "module.queue": torch.randn(128, 64),
                                 "module.queue_ptr": torch.zeros(1, dtype=torch.long)}}
    file = tmp_path / "moco_v2_200ep_pretrain.pth.tar"
    torch.save(checkpoint, file)
    loaded = _assert_loads_as(file, _features(resnet18, images), images, "MoCo v1/v2")
    assert len(loaded.report.dropped_heads) == 4  # encoder_q's two-layer MLP
    assert "module.encoder_k.conv1.weight" in loaded.report.ignored and "module.queue" in loaded.report.ignored


def test_moco_v3_base_encoder(tmp_path, resnet18, images):
    state = {f"module.base_encoder.{k}": v for k, v in resnet18.state_dict().items()}
    state |= {f"module.momentum_encoder.{k}": v for k, v in _other(resnet18.state_dict(), 3).items()}
    torch.save({"state_dict": state, "arch": "resnet18"}, tmp_path / "r-18-300ep.pth.tar")
    _assert_loads_as(tmp_path / "r-18-300ep.pth.tar", _features(resnet18, images), images, "MoCo v3")


def test_swav_module_prefix_drops_projection_head_and_prototypes(tmp_path, resnet18, images):
    state = {f"module.{k}": v for k, v in resnet18.state_dict().items() if not k.startswith("fc.")}
    state |= {"module.projection_head.0.weight": torch.randn(2048, 512), "module.projection_head.0.bias":
              torch.randn(2048), "module.prototypes.weight": torch.randn(3000, 128)}
    torch.save(state, tmp_path / "swav_800ep_pretrain.pth.tar")  # the hub file: a bare state dict
    loaded = _assert_loads_as(tmp_path / "swav_800ep_pretrain.pth.tar", _features(resnet18, images), images, "SwAV")
    assert sorted(loaded.report.dropped_heads) == ["module.projection_head.0.bias", "module.projection_head.0.weight",
                                                   "module.prototypes.weight"]


def test_solo_learn_byol_lightning_checkpoint_with_cifar_stem(tmp_path, images):
    torch.manual_seed(4)
    source = _randomise_batch_norm(build_backbone(BackboneConfig("resnet18", cifar_stem=True)), seed=4)
    backbone = source.state_dict()
    state = {f"backbone.{k}": v for k, v in backbone.items()}
    state |= {f"momentum_backbone.{k}": v for k, v in _other(backbone, 5).items()}
    state |= {"projector.0.weight": torch.randn(4096, 512), "predictor.0.weight": torch.randn(4096, 256),
              "classifier.weight": torch.randn(10, 512), "classifier.bias": torch.randn(10)}
    checkpoint = {"epoch": 999, "global_step": 1, "pytorch-lightning_version": "2.0.0", "state_dict": state}
    torch.save(checkpoint, tmp_path / "byol-cifar10-abc123-ep=999.ckpt")
    with torch.no_grad():
        reference = source(images)
    loaded = _assert_loads_as(tmp_path / "byol-cifar10-abc123-ep=999.ckpt", reference, images, "solo-learn")
    assert loaded.config.cifar_stem is True  # inferred from the 3×3 first convolution
    assert {"projector.0.weight", "classifier.weight"} <= set(loaded.report.ignored)


def test_lightly_export_of_a_sequential_backbone(tmp_path, resnet18, images):
    from lightly.models.modules import BYOLProjectionHead  # lightly: an independent writer of its own format

    class LightlyBYOL(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(*list(resnet18.children())[:-1])
            self.projection_head = BYOLProjectionHead(512, 1024, 256)

    torch.save(LightlyBYOL().state_dict(), tmp_path / "lightly_byol.pth")
    loaded = _assert_loads_as(tmp_path / "lightly_byol.pth", _features(resnet18, images), images, "solo-learn")
    assert any(k.startswith("projection_head.") for k in loaded.report.ignored)


def test_timm_and_torchvision_by_name_with_local_weights(tmp_path, resnet18, images):
    torch.save(resnet18.state_dict(), tmp_path / "resnet18.pth")
    reference = _features(resnet18, images)
    timm_model = load_external(f"timm:resnet18@{tmp_path / 'resnet18.pth'}")
    assert isinstance(timm_model.encoder, TimmBackbone) and timm_model.config.name == "timm:resnet18"
    with torch.no_grad():  # timm's ResNet-18 is torchvision's architecture under the same parameter names
        torch.testing.assert_close(timm_model.encoder(images), reference, rtol=1e-5, atol=1e-5)
    _assert_loads_as(f"torchvision:resnet18@{tmp_path / 'resnet18.pth'}", reference, images, "torchvision")


def test_non_resnet_torchvision_model_keeps_all_but_its_last_classifier_layer(tmp_path, images):
    torch.manual_seed(6)
    source = torchvision.models.mobilenet_v3_small(weights=None).eval()
    save_file(source.state_dict(), tmp_path / "mobilenet.safetensors")  # plain safetensors: no augbench metadata
    loaded = load_external(f"torchvision:mobilenet_v3_small@{tmp_path / 'mobilenet.safetensors'}")
    assert sorted(loaded.report.dropped_heads) == ["classifier.3.bias", "classifier.3.weight"]
    source.classifier[3] = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(images), source((images - MEAN) / STD), rtol=1e-5, atol=1e-5)


def test_names_without_weights_build_random_encoders():
    timm_encoder, _ = load_encoder("timm:resnet18")
    torchvision_encoder, config = load_encoder("torchvision:resnet50")
    assert isinstance(timm_encoder, TimmBackbone) and timm_encoder.out_dim == 512
    assert isinstance(torchvision_encoder, ResNetBackbone) and config.name == "resnet50" and not config.cifar_stem
    with torch.no_grad():
        assert torchvision_encoder(torch.rand(1, 3, 32, 32)).shape == (1, 2048)


def test_load_encoder_routes_other_codebases_and_keeps_augbench_files(tmp_path, resnet18, images):
    torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in resnet18.state_dict().items()}},
               tmp_path / "moco.pth.tar")
    encoder, config = load_encoder(tmp_path / "moco.pth.tar")  # no "arch": ResNet-18 inferred from the keys
    assert config.name == "resnet18"
    with torch.no_grad():
        torch.testing.assert_close(encoder(images), _features(resnet18, images), rtol=1e-5, atol=1e-5)
    from augbench.models.io import save_encoder

    save_encoder(build_backbone(BackboneConfig("resnet18")), BackboneConfig("resnet18"), tmp_path / "own.safetensors")
    assert not is_external(tmp_path / "own.safetensors") and not is_external(tmp_path)
    assert is_external(tmp_path / "moco.pth.tar") and is_external("timm:resnet18")


def test_missing_and_mismatched_weights_are_reported_and_refused(tmp_path, resnet18):
    state = {k: v for k, v in resnet18.state_dict().items() if not k.startswith("layer4.1.")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"partial.pth: loaded \d+ tensors .*missing: 10 \(layer4.1.conv1.weight"):
        load_external(f"resnet18@{tmp_path / 'partial.pth'}")
    lenient = load_external(f"resnet18@{tmp_path / 'partial.pth'}", strict=False)
    assert len(lenient.report.missing) == 10
    torch.save(resnet18.state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatch: .*layer1.0.conv1.weight: \(64, 64, 3, 3\) vs "
                                              r"\(64, 64, 1, 1\)"):
        load_external(f"resnet50@{tmp_path / 'resnet18.pth'}")


def test_unexpected_keys_warn_but_load(tmp_path, resnet18):
    torch.save(resnet18.state_dict() | {"extra_branch.weight": torch.ones(3)}, tmp_path / "extra.pth")
    with pytest.warns(UserWarning, match=r"unexpected: 1 \(extra_branch.weight\)"):
        loaded = load_external(tmp_path / "extra.pth")
    assert loaded.report.unexpected == ["extra_branch.weight"]


def test_no_matching_key_names_the_file(tmp_path):
    torch.save({"state_dict": {"encoder.blocks.0.attn.qkv.weight": torch.randn(6, 2)}}, tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(tmp_path / 'vit.pth'))}: cannot tell the architecture"):
        load_external(tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(tmp_path / 'vit.pth'))}: no weights match resnet18: "
                                              r"the file has keys like encoder.blocks.0.attn.qkv.weight"):
        load_external(f"resnet18@{tmp_path / 'vit.pth'}")


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "written_by_pickle"

    class WritesAFile:
        def __reduce__(self):
            return (open, (str(target), "w"))

    torch.save({"state_dict": {}, "payload": WritesAFile()}, tmp_path / "hostile.pth")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(tmp_path / 'hostile.pth'))}: refused or unreadable"):
        load_external(tmp_path / "hostile.pth")
    assert not target.exists()


def test_bad_names_and_paths(tmp_path):
    with pytest.raises(ConfigError, match=r"timm:not_a_model"):
        load_external("timm:not_a_model")
    with pytest.raises(ConfigError, match=r"torchvision:not_a_model: neither an augbench ResNet"):
        load_external("torchvision:not_a_model")
    with pytest.raises(FileNotFoundError, match=r"absent.pth: checkpoint not found"):
        load_external(f"resnet18@{tmp_path / 'absent.pth'}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not is_external(tmp_path / "absent.safetensors")  # left to augbench's own "not found" error


def test_cli_evaluates_a_moco_checkpoint_on_an_on_disk_dataset(tmp_path, resnet18, capsys):
    rng = np.random.default_rng(0)
    for label in range(2):
        for index in range(12):
            folder = tmp_path / "data" / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 100, (20, 20, 3)) + 150 * label  # class 1 is brighter
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index}.png")
    (tmp_path / "task.yaml").write_text(f"name: brightness\ndataset: {{name: imagefolder, path: {tmp_path / 'data'}, "
                                        "image_size: 16, val_fraction: 0.25, test_fraction: 0.25}\nlabel: class\n"
                                        "protocols: [knn]\n")
    (tmp_path / "suite.yaml").write_text("name: tiny\ntasks: [task.yaml]\n")
    state = {f"module.encoder_q.{k}": v for k, v in resnet18.state_dict().items()}
    torch.save({"arch": "resnet18", "state_dict": state}, tmp_path / "moco_v2.pth.tar")
    code = main(["evaluate", str(tmp_path / "moco_v2.pth.tar"), "--suite", str(tmp_path / "suite.yaml"),
                 "--output", str(tmp_path / "results.csv"), "--device", "cpu"])
    assert code == 0
    assert "loaded 120 tensors into resnet18 as MoCo v1/v2" in " ".join(capsys.readouterr().out.split())
    results = (tmp_path / "results.csv").read_text()
    assert "brightness" in results and "knn" in results
