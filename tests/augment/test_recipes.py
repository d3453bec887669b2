import torch

from augbench.augment.recipes import RECIPES, TwoViewConfig
from augbench.augment.views import View


def test_every_recipe_makes_two_views_of_the_crop_size_with_recorded_params(float_images):
    for name, make in RECIPES.items():
        views = make(24)(float_images, torch.Generator().manual_seed(0))
        assert len(views) == 2, name
        for view in views:
            assert isinstance(view, View) and view.images.shape == (16, 3, 24, 24), name
            assert "crop" in view.params and "color_jitter" in view.params, name


def test_views_replay_from_their_params(float_images):
    recipe = TwoViewConfig(recipe="byol").build(32)
    views = recipe(float_images, torch.Generator().manual_seed(4))
    for pipeline, view in zip(recipe.pipelines, views):
        assert torch.equal(pipeline.apply(float_images, view.params), view.images)


def test_byol_views_are_asymmetric_in_blur_and_solarize():
    images = torch.rand(2048, 3, 8, 8)
    first, second = RECIPES["byol"](8)(images, torch.Generator().manual_seed(0))
    assert first.params["blur"]["applied"].all()
    assert 0.05 < second.params["blur"]["applied"].float().mean() < 0.15
    assert not first.params["solarize"]["applied"].any()
    assert 0.15 < second.params["solarize"]["applied"].float().mean() < 0.25


def test_small_image_variants_drop_blur():
    for name in ("moco_v2_32", "byol_32", "simclr_32"):
        views = RECIPES[name](8)(torch.rand(4, 3, 8, 8), torch.Generator().manual_seed(0))
        assert all("blur" not in view.params for view in views), name


def test_moco_views_draw_independent_params_from_one_pipeline(float_images):
    first, second = RECIPES["moco_v2"](32)(float_images, torch.Generator().manual_seed(0))
    assert not torch.equal(first.params["crop"]["box"], second.params["crop"]["box"])
