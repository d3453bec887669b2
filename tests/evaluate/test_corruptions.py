import pytest
import torch

from augbench.data.shapes_world import ShapesWorldConfig, load_shapes_world
from augbench.evaluate.corruptions import CORRUPTIONS, corrupt


@pytest.fixture(scope="module")
def images():
    return load_shapes_world(ShapesWorldConfig(train_size=24), "train").images.float() / 255


def test_the_fifteen_imagenet_c_corruptions_are_there():
    assert len(CORRUPTIONS) == 15
    assert {"gaussian_noise", "glass_blur", "snow", "frost", "fog", "elastic_transform", "jpeg_compression"} <= set(
        CORRUPTIONS)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_severity_5_changes_images_more_than_severity_1_and_stays_in_range(images, name):
    changes = []
    for severity in (1, 5):
        corrupted = corrupt(images, name, severity, torch.Generator().manual_seed(0))
        assert corrupted.shape == images.shape and corrupted.dtype == images.dtype
        assert corrupted.min() >= 0 and corrupted.max() <= 1
        changes.append((corrupted - images).abs().mean().item())
    assert changes[1] > changes[0] > 0, changes


@pytest.mark.parametrize("name", ["gaussian_noise", "frost", "glass_blur"])
def test_the_same_generator_seed_gives_the_same_corruption(images, name):
    first = corrupt(images, name, 3, torch.Generator().manual_seed(4))
    second = corrupt(images, name, 3, torch.Generator().manual_seed(4))
    other = corrupt(images, name, 3, torch.Generator().manual_seed(5))
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_contrast_follows_its_formula(images):
    mean = images.mean((1, 2, 3), keepdim=True)
    assert torch.allclose(corrupt(images, "contrast", 5, torch.Generator()), (images - mean) * 0.15 + mean)


def test_bad_names_and_severities_are_reported(images):
    with pytest.raises(ValueError, match="corruption 'rain' is unknown"):
        corrupt(images, "rain", 1, torch.Generator())
    with pytest.raises(ValueError, match="severity=6"):
        corrupt(images, "fog", 6, torch.Generator())
