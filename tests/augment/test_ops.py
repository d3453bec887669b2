import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from augbench.augment.ops import (
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    RandomResizedCrop,
    Rotate,
    Rotate90,
    Solarize,
)

ALL_OPS = [
    RandomResizedCrop(24, scale=(0.2, 1.0)),
    HorizontalFlip(p=0.5),
    ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
    Grayscale(p=0.5),
    GaussianBlur(p=0.5),
    Solarize(p=0.5),
    Rotate90(p=0.7),
    Rotate(degrees=(-45, 45), p=0.7),
]


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: op.name)
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_replaying_recorded_params_reproduces_the_images(op, seed, float_images):
    params = op.sample(len(float_images), torch.Generator().manual_seed(seed))
    first = op.apply(float_images, params)
    again = op.apply(float_images.clone(), {k: v.clone() for k, v in params.items()})
    assert torch.equal(first, again)
    assert params["applied"].shape == (len(float_images),) and params["applied"].dtype == torch.bool


@pytest.mark.parametrize("op", ALL_OPS[1:], ids=lambda op: op.name)
def test_images_not_selected_by_p_are_unchanged(op, float_images):
    params = op.sample(len(float_images), torch.Generator().manual_seed(3))
    out = op.apply(float_images, params)
    skipped = ~params["applied"]
    assert skipped.any() and params["applied"].any()
    assert torch.allclose(out[skipped], float_images[skipped], atol=1e-6)
    assert not torch.allclose(out[~skipped], float_images[~skipped], atol=1e-3)


def test_sampling_is_a_function_of_the_generator_seed():
    op = ColorJitter()
    a = op.sample(8, torch.Generator().manual_seed(1))
    b = op.sample(8, torch.Generator().manual_seed(1))
    c = op.sample(8, torch.Generator().manual_seed(2))
    assert torch.equal(a["factors"], b["factors"]) and not torch.equal(a["factors"], c["factors"])


def test_crop_boxes_lie_inside_the_image_with_area_and_ratio_in_range():
    op = RandomResizedCrop(32, scale=(0.2, 0.6), ratio=(3 / 4, 4 / 3))
    box = op.sample(4096, torch.Generator().manual_seed(0))["box"]
    width, height = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    assert (box >= 0).all() and (box <= 1 + 1e-6).all()
    assert ((width * height >= 0.2 - 1e-5) & (width * height <= 0.6 + 1e-5)).all()
    assert ((width / height >= 3 / 4 - 1e-4) & (width / height <= 4 / 3 + 1e-4)).all()


@pytest.mark.parametrize(("ratio", "size"), [((2.0, 3.0), (1.0, 0.5)), ((0.25, 0.5), (0.5, 1.0))])
def test_when_no_attempt_fits_the_crop_is_torchvisions_centred_fallback_within_the_ratio(ratio, size):
    # torchvision.transforms.RandomResizedCrop.get_params: the largest centred box whose aspect ratio is in range.
    box = RandomResizedCrop(32, scale=(0.95, 1.0), ratio=ratio).sample(64, torch.Generator().manual_seed(0))["box"]
    width, height = size
    expected = torch.tensor([(1 - width) / 2, (1 - height) / 2, (1 + width) / 2, (1 + height) / 2])
    assert torch.allclose(box, expected.expand_as(box))


def test_a_crop_of_a_non_square_image_is_refused_naming_its_shape():
    op = RandomResizedCrop(16)
    with pytest.raises(ValueError, match="needs square images, got 32×64"):
        op.apply(torch.rand(2, 3, 32, 64), op.sample(2, torch.Generator()))


def test_crop_of_the_whole_image_at_the_same_size_is_the_image(float_images):
    op = RandomResizedCrop(32)
    params = {"box": torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(len(float_images), 1),
              "applied": torch.ones(len(float_images), dtype=torch.bool)}
    assert torch.allclose(op.apply(float_images, params), float_images, atol=1e-5)


def test_crop_of_a_quadrant_matches_torchvision_resized_crop(float_images):
    op = RandomResizedCrop(16)
    params = {"box": torch.tensor([[0.5, 0.0, 1.0, 0.5]]).repeat(len(float_images), 1),
              "applied": torch.ones(len(float_images), dtype=torch.bool)}
    expected = float_images[:, :, :16, 16:]
    assert torch.allclose(op.apply(float_images, params), expected, atol=1e-5)


def test_color_jitter_matches_torchvision_per_image(float_images):
    op = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)
    params = op.sample(len(float_images), torch.Generator().manual_seed(5))
    out = op.apply(float_images, params)
    reference = [
        TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue,
    ]
    for image, factors, order, result in zip(float_images, params["factors"], params["order"], out):
        expected = image
        for index in order.tolist():
            expected = reference[index](expected, factors[index].item())
        assert torch.allclose(result, expected, atol=2e-3), (factors, order)


def test_color_jitter_records_identity_factors_when_not_applied():
    params = ColorJitter(p=0.5).sample(256, torch.Generator().manual_seed(0))
    skipped = params["factors"][~params["applied"]]
    assert torch.equal(skipped, torch.tensor([1.0, 1.0, 1.0, 0.0]).expand_as(skipped))
    assert torch.equal(params["order"].sort(dim=1).values, torch.arange(4).expand(256, 4))


def test_grayscale_makes_equal_channels_with_torchvision_weights(float_images):
    params = {"applied": torch.ones(len(float_images), dtype=torch.bool)}
    out = Grayscale().apply(float_images, params)
    expected = TF.rgb_to_grayscale(float_images, num_output_channels=3)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert torch.allclose(out, expected, atol=1e-3)


def test_solarize_inverts_pixels_above_the_threshold():
    images = torch.tensor([0.1, 0.49, 0.5, 0.9]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = Solarize(threshold=0.5).apply(images, {"applied": torch.tensor([True])})
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.1, 0.49, 0.5, 0.1]))


def test_blur_strength_follows_sigma(float_images):
    op = GaussianBlur(p=1.0)
    def blurred(sigma):
        n = len(float_images)
        params = {"sigma": torch.full((n,), sigma), "applied": torch.ones(n, dtype=torch.bool)}
        return op.apply(float_images, params)
    def roughness(images):
        return (images[..., 1:] - images[..., :-1]).abs().mean()
    assert roughness(blurred(2.0)) < roughness(blurred(0.5)) < roughness(float_images)


def test_four_quarter_turns_are_the_identity_and_one_matches_rot90(float_images):
    op = Rotate90()
    ones = {"quarter_turns": torch.ones(len(float_images), dtype=torch.long),
            "applied": torch.ones(len(float_images), dtype=torch.bool)}
    once = op.apply(float_images, ones)
    assert torch.equal(once, torch.rot90(float_images, 1, dims=(-2, -1)))
    out = float_images
    for _ in range(4):
        out = op.apply(out, ones)
    assert torch.equal(out, float_images)


def test_free_rotation_by_90_degrees_agrees_with_a_quarter_turn():
    images = torch.rand(2, 3, 9, 9)
    out = Rotate().apply(images, {"angle": torch.full((2,), 90.0), "applied": torch.ones(2, dtype=torch.bool)})
    expected = torch.rot90(images, 1, dims=(-2, -1))
    assert torch.allclose(out[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4)


def test_flip_flips_exactly_the_applied_images(float_images):
    params = HorizontalFlip(p=0.5).sample(len(float_images), torch.Generator().manual_seed(1))
    out = HorizontalFlip().apply(float_images, params)
    for image, result, applied in zip(float_images, out, params["applied"]):
        assert torch.equal(result, image.flip(-1) if applied else image)
    assert math.isclose(params["applied"].float().mean().item(), 0.5, abs_tol=0.4)
