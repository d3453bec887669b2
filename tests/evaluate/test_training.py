"""NormRescale, the 'Critical Factors' study's fine-tuning option: the encoder's directions at a reference's norms."""

import pytest
import torch
import torch.nn.functional as F
import yaml

from augbench.data import ImageDataset
from augbench.errors import ConfigError
from augbench.evaluate.suite import load_suite
from augbench.evaluate.training import FinetuneConfig, finetune_classifier, norm_rescale
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.io import save_encoder
from augbench.optim import OptimConfig

CONFIG = BackboneConfig(width=0.125)


def _trained_like(seed: int, scale: float):
    """A backbone whose every tensor is random at its own scale, as after pretraining."""
    torch.manual_seed(seed)
    backbone = build_backbone(CONFIG)
    with torch.no_grad():
        for tensor in backbone.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * scale * torch.rand(()))
    return backbone


def test_each_tensor_takes_the_reference_norm_and_keeps_its_direction():
    encoder, reference = _trained_like(0, scale=5.0), _trained_like(1, scale=0.1)
    before = {key: tensor.clone() for key, tensor in encoder.state_dict().items()}
    with torch.no_grad():
        encoder.layer1[0].bn1.bias.zero_()  # a tensor with no direction to scale
        before["layer1.0.bn1.bias"].zero_()
    norm_rescale(encoder, reference, "reference")
    theirs = reference.state_dict()
    rescaled = 0
    for key, tensor in encoder.state_dict().items():
        if not tensor.is_floating_point() or not before[key].any():
            assert torch.equal(tensor, before[key]), key  # step counters and zero tensors stay as they were
            continue
        assert tensor.norm() == pytest.approx(theirs[key].norm().item(), rel=1e-5), key
        assert F.cosine_similarity(tensor.flatten(), before[key].flatten(), dim=0) == pytest.approx(1.0, abs=1e-5)
        rescaled += 1
    assert rescaled > 40  # convolutions, BatchNorm weights, biases and running statistics


def test_a_reference_of_another_architecture_is_refused_naming_the_setting():
    wider = build_backbone(BackboneConfig(width=0.25))
    with pytest.raises(ConfigError, match=r"finetune.norm_rescale='wide.safetensors': .* same architecture"):
        norm_rescale(build_backbone(CONFIG), wider, "wide.safetensors")


def test_finetuning_starts_from_the_rescaled_copy_of_the_encoder(tmp_path):
    encoder, reference = _trained_like(0, scale=5.0), _trained_like(1, scale=0.1)
    path = save_encoder(reference, CONFIG, tmp_path / "reference.safetensors")
    before = {key: tensor.clone() for key, tensor in encoder.state_dict().items()}
    # A negligible learning rate leaves the weights where NormRescale put them.
    config = FinetuneConfig(epochs=1, batch_size=8, norm_rescale=str(path),
                            optimizer=OptimConfig(name="sgd", lr=1e-12, weight_decay=0.0, warmup_epochs=0))
    images, labels = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8), torch.arange(16) % 2
    data = ImageDataset("noise", "train", images, {"class": labels})
    model = finetune_classifier(encoder, (data, labels), 2, config, seed=0, device="cpu")
    weight = model[0].conv1.weight.detach()
    assert weight.norm().item() == pytest.approx(reference.conv1.weight.norm().item(), rel=1e-5)
    assert F.cosine_similarity(weight.flatten(), before["conv1.weight"].flatten(), dim=0).item() == pytest.approx(1.0)
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())  # the caller's encoder


def _suite_with_reference(tmp_path, reference: str):
    task = {"name": "t", "dataset": {"name": "shapes_world", "image_size": 16}, "label": "shape",
            "protocols": ["finetune"], "protocol_settings": {"finetune": {"norm_rescale": reference}}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(task))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "s", "tasks": ["t.yaml"]}))
    return suite


@pytest.mark.parametrize("reference", ["nowhere", "resnet18@nowhere.pth"])
def test_a_missing_reference_is_refused_when_the_suite_loads(tmp_path, reference):
    with pytest.raises(ConfigError, match=rf"t.yaml: finetune.norm_rescale=.*{reference}: no such file or run"):
        load_suite(_suite_with_reference(tmp_path, str(tmp_path / reference)))
    _, tasks = load_suite(_suite_with_reference(tmp_path, "torchvision:resnet18"))  # a named model has no file
    assert tasks[0].protocol_settings["finetune"]["norm_rescale"] == "torchvision:resnet18"
