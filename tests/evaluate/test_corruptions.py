import itertools

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from augbench.data.shapes_world import ShapesWorldConfig, load_shapes_world
from augbench.evaluate.corruptions import CORRUPTIONS, _imagemagick_motion_blur, corrupt


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


def test_contrast_pulls_each_channel_toward_its_own_mean_and_keeps_the_colour(images):
    mean = images.mean((2, 3), keepdim=True)
    corrupted = corrupt(images, "contrast", 5, torch.Generator())
    assert torch.allclose(corrupted, (images - mean) * 0.15 + mean)
    assert torch.allclose(corrupted.mean((2, 3)), images.mean((2, 3)), atol=1e-6)


def _impulse_response(name: str, severity: int, size: int = 32) -> np.ndarray:
    impulse = torch.zeros(1, 3, size, size)
    impulse[..., size // 2, size // 2] = 1
    return corrupt(impulse, name, severity, torch.Generator().manual_seed(0))[0, 0].numpy()


@pytest.mark.parametrize(("severity", "radius", "alias_sigma"),
                         [(1, 0.3, 0.4), (2, 0.4, 0.5), (3, 0.5, 0.6), (4, 1, 0.2), (5, 1.5, 0.1)])
def test_defocus_blur_is_cifar_10_cs_disk(severity, radius, alias_sigma):
    # make_cifar_c.py's `disk`: a hard disk on a 17 × 17 grid, normalised, then cv2.GaussianBlur with a 3 × 3 kernel.
    ticks = np.arange(-8, 9)
    disk = (ticks[:, None] ** 2 + ticks[None, :] ** 2 <= radius**2).astype(float)
    gaussian = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_sigma**2))
    gaussian /= gaussian.sum()
    expected = convolve2d(disk / disk.sum(), np.outer(gaussian, gaussian), mode="same")
    response = _impulse_response("defocus_blur", severity)[16 - 8 : 16 + 9, 16 - 8 : 16 + 9]
    np.testing.assert_allclose(response[::-1, ::-1], expected, atol=1e-6)


def test_motion_blur_is_imagemagicks_one_sided_gaussian_along_the_angle():
    impulse = torch.zeros(1, 1, 33, 33)
    impulse[..., 16, 16] = 1
    streak = _imagemagick_motion_blur(impulse, radius=6, sigma=2, degrees=torch.tensor([0.0]))[0, 0]
    # Output p sums w_i · image(p + (i, 0)): the impulse reaches the 13 pixels at and left of it, weighted as w_i.
    taps = np.arange(13)
    weights = np.exp(-(taps**2) / 8)
    np.testing.assert_allclose(streak[16, 16 - taps].numpy(), weights / weights.sum(), atol=1e-6)
    assert streak.sum() == pytest.approx(1) and streak[16, 16 - taps].sum() == pytest.approx(1)
    falling = _imagemagick_motion_blur(impulse, radius=6, sigma=2, degrees=torch.tensor([-90.0]))[0, 0]
    assert torch.allclose(falling, streak.T.flip(0))  # −90°: the same streak, vertical


def test_snow_falls_in_near_vertical_streaks():
    grey = torch.full((16, 3, 64, 64), 0.3)
    layer = corrupt(grey, "snow", 5, torch.Generator().manual_seed(0)) - grey
    across, along = layer.diff(dim=-1).abs().mean(), layer.diff(dim=-2).abs().mean()
    assert across > 2 * along


@pytest.mark.parametrize("name", ["defocus_blur", "motion_blur", "zoom_blur"])
def test_each_blur_severity_blurs_at_least_as_much_as_the_one_below(images, name):
    changes = [(corrupt(images, name, severity, torch.Generator().manual_seed(0)) - images).abs().mean().item()
               for severity in range(1, 6)]
    # Severities 3 and 4 of CIFAR-10-C's motion blur differ only in a kernel radius the Gaussian has died out by.
    assert all(later >= earlier * 0.99 for earlier, later in itertools.pairwise(changes)), changes
    assert changes[0] < changes[2] < changes[4], changes


def test_bad_names_and_severities_are_reported(images):
    with pytest.raises(ValueError, match="corruption 'rain' is unknown"):
        corrupt(images, "rain", 1, torch.Generator())
    with pytest.raises(ValueError, match="severity=6"):
        corrupt(images, "fog", 6, torch.Generator())
