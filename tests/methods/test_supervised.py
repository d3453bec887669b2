import numpy as np
import pytest
import torch

from augbench.augment.views import View
from augbench.config import shipped_config
from augbench.errors import ConfigError
from augbench.methods import build_method
from augbench.methods.supervised import SupervisedMethod
from augbench.models.backbones import build_backbone
from augbench.models.io import load_encoder
from augbench.train.config import load_config, read_status
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES


def _method(*overrides: str, classes: int = 5):
    config, _ = load_config(shipped_config("methods/supervised.yaml"), ["model.width=0.125", *overrides])
    method = build_method(config.method, build_backbone(config.model))
    method.set_num_classes(classes)
    return method


def _log_softmax_ce(logits: np.ndarray, targets: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(targets)), targets].mean())


@pytest.mark.parametrize("views", ["both", "first"])
def test_the_loss_is_the_cross_entropy_of_the_linear_head_over_the_views_it_uses(views):
    method = _method(f"method.trained_views={views}").eval()  # eval: BN statistics are the same in both passes
    assert isinstance(method, SupervisedMethod) and method.label == "shape"
    images = [torch.rand(6, 3, 16, 16).requires_grad_() for _ in range(2)]
    targets = torch.tensor([0, 1, 2, 3, 4, 1])
    out = method([View(image, {}) for image in images], targets)
    used = images if views == "both" else images[:1]
    with torch.no_grad():
        logits = torch.cat([method.classifier(method.backbone(image)) for image in used]).double().numpy()
    expected = _log_softmax_ce(logits, targets.repeat(len(used)).numpy())
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    out["loss"].backward()
    assert [image.grad is not None for image in images] == [True, views == "both"]
    assert out["features"].shape == (6, method.backbone.out_dim) and not out["features"].requires_grad


def test_unlabelled_images_take_no_part_in_the_loss():
    method = _method().eval()
    views = [View(torch.rand(4, 3, 16, 16), {}) for _ in range(2)]
    labelled = method(views, torch.tensor([0, 1, -1, -1]))["loss"]
    with torch.no_grad():
        logits = torch.cat([method.classifier(method.backbone(views[i].images[:2])) for i in range(2)])
    assert labelled.item() == pytest.approx(_log_softmax_ce(logits.double().numpy(), np.array([0, 1, 0, 1])),
                                            rel=1e-5)


def test_a_few_steps_on_one_batch_fit_its_labels():
    torch.manual_seed(0)
    method = _method(classes=3)
    views = [View(torch.rand(12, 3, 16, 16), {}) for _ in range(2)]
    targets = torch.arange(12) % 3
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    first = None
    for _ in range(30):
        out = method(views, targets)
        first = first if first is not None else out["loss"].item()
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    assert out["loss"].item() < first / 4 and out["accuracy"].item() == 100.0


def test_two_steps_of_the_preset_train_a_classifier_over_every_shape_and_save_the_encoder(tmp_path):
    config, _ = load_config(shipped_config("methods/supervised.yaml"),
                            [*TINY_OVERRIDES, f"output_dir={tmp_path}", "name=supervised"])
    run = pretrain(config)
    status = read_status(run.directory)
    assert status["state"] == "finished" and status["steps"] == 2
    assert "train/accuracy" in status["metrics"]
    weights = torch.load(run.directory / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert weights["method.classifier.weight"].shape[0] == 12  # Shapes World's 12 shapes
    encoder, _ = load_encoder(run.directory)
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(encoder(images), run.encoder(images), atol=1e-6)


def test_a_label_the_data_lacks_or_that_is_not_a_class_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"method\.label='colour' is not a label of shapes_world"):
        load_config(shipped_config("methods/supervised.yaml"), ["method.label=colour"])
    with pytest.raises(ConfigError, match=r"views='all': expected one of"):
        load_config(shipped_config("methods/supervised.yaml"), ["method.trained_views=all"])
    config, _ = load_config(shipped_config("methods/supervised.yaml"),
                            [*TINY_OVERRIDES, f"output_dir={tmp_path}", "method.label=scale"])
    with pytest.raises(ConfigError, match=r"method\.label='scale' is not a class label of shapes_world"):
        pretrain(config)
