import pytest
import torch

from augbench.augment.multicrop import multicrop


def test_multicrop_makes_large_then_small_crops_at_their_scales():
    recipe = multicrop(num_crops=(2, 4), crop_sizes=(32, 16), min_scale=(0.14, 0.05), max_scale=(1.0, 0.14))
    views = recipe(torch.rand(32, 3, 32, 32), torch.Generator().manual_seed(0))
    assert [view.images.shape[-1] for view in views] == [32, 32, 16, 16, 16, 16]
    for view, (low, high) in zip(views, [(0.14, 1.0)] * 2 + [(0.05, 0.14)] * 4):
        box = view.params["crop"]["box"]
        area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
        assert ((area >= low - 1e-6) & (area <= high + 1e-6)).all()
    # Crops of the same group are independent draws.
    assert not torch.equal(views[2].params["crop"]["box"], views[3].params["crop"]["box"])
    assert "blur" not in views[0].params


def test_multicrop_blur_and_colour_strength():
    recipe = multicrop(num_crops=(1, 1), crop_sizes=(32, 16), min_scale=(0.5, 0.1), max_scale=(1.0, 0.2),
                       color_strength=1.0, blur=True)
    jitter = recipe.pipelines[0].ops[2]
    assert (jitter.brightness, jitter.hue) == pytest.approx((0.8, 0.2))
    assert recipe(torch.rand(2, 3, 32, 32), torch.Generator())[1].params["blur"]["sigma"].shape == (2,)


def test_multicrop_needs_one_setting_per_group():
    with pytest.raises(ValueError, match="one entry per crop group"):
        multicrop(num_crops=(2, 4), crop_sizes=(32,), min_scale=(0.14, 0.05), max_scale=(1.0, 0.14))
