import pytest
import torch

from augbench.augment.looc import (
    ATOMIC_AUGMENTATIONS,
    LEAVE_ONE_OUT_RECIPES,
    LOOC_AUG_PAIR_RECIPES,
    LeaveOneOutConfig,
    LeaveOneOutRecipe,
)
from augbench.augment.recipes import TwoViewConfig
from augbench.augment.texture import Texture

AUGMENTATIONS = ["color", "rotation", "texture"]
BASE_OPS = ("crop", "flip")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_key_i_shares_exactly_augmentation_is_params_with_the_query():
    images = torch.rand(64, 3, 16, 16)
    recipe = LeaveOneOutConfig(recipe="looc_32", augmentations=AUGMENTATIONS).build(16)
    views = recipe(images, torch.Generator().manual_seed(0))
    assert len(views) == len(AUGMENTATIONS) + 2
    query, keys = views[0], views[1:]
    op_names = {name: [op.name for op in ATOMIC_AUGMENTATIONS[name]()] for name in AUGMENTATIONS}
    assert op_names["color"] == ["color_jitter", "grayscale"]
    for key_index, key in enumerate(keys):
        shared = AUGMENTATIONS[key_index - 1] if key_index else None
        for name, ops in op_names.items():
            agrees = [_same(query.params[op], key.params[op]) for op in ops]
            assert all(agrees) if name == shared else not any(agrees), (key_index, name)
        for op in BASE_OPS:  # crop and flip, which have no space of their own, are always drawn afresh
            assert not _same(query.params[op], key.params[op]), (key_index, op)


def test_every_view_replays_from_its_recorded_params():
    images = torch.rand(8, 3, 16, 16)
    recipe = LEAVE_ONE_OUT_RECIPES["looc"](16, AUGMENTATIONS)
    views = recipe(images, torch.Generator().manual_seed(1))
    for view in views:
        assert torch.equal(recipe.pipelines[0].apply(images, view.params), view.images)
        assert view.images.shape == (8, 3, 16, 16) and "blur" in view.params


def test_a_key_sharing_the_rotation_has_the_querys_quarter_turns_and_nothing_else_of_it():
    images = torch.rand(32, 3, 8, 8)
    recipe = LeaveOneOutRecipe("looc_32", 8, ["rotation"], blur=False)
    query, k0, k1 = recipe(images, torch.Generator().manual_seed(2))
    assert torch.equal(query.params["rotate90"]["quarter_turns"], k1.params["rotate90"]["quarter_turns"])
    assert not torch.equal(query.params["rotate90"]["quarter_turns"], k0.params["rotate90"]["quarter_turns"])
    assert set(query.params["rotate90"]["quarter_turns"].tolist()) == {0, 1, 2, 3}  # 0° kept on purpose


def _upright_quarter_turns(views: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """For views that are exact turns of (possibly mirrored) images: how many quarter turns their content's top made."""
    turns = torch.full((len(images),), -1)
    for mirrored in (images, images.flip(-1)):
        for quarter_turns in range(4):
            matches = (torch.rot90(mirrored, quarter_turns, dims=(-2, -1)) - views).abs().amax(dim=(1, 2, 3)) < 1e-5
            turns[matches] = quarter_turns
    assert (turns >= 0).all()
    return turns


def test_a_key_sharing_the_rotation_shows_the_querys_content_turned_the_same_way_whatever_the_flips():
    # A flip applied after the turn would mirror 90° into 270° whenever the two views' flips differ.
    images = torch.rand(400, 3, 8, 8)
    recipe = LeaveOneOutRecipe("looc_32", 8, ["rotation"], blur=False)
    crop, flip = recipe.pipelines[0].ops[:2]
    crop.scale, crop.ratio = (1.0, 1.0), (1.0, 1.0)  # whole-image crops: every view is an exact turn and mirror
    query, k0, k1 = recipe(images, torch.Generator().manual_seed(5))
    assert (query.params[flip.name]["applied"] != k1.params[flip.name]["applied"]).any()
    query_turns = _upright_quarter_turns(query.images, images)
    assert torch.equal(_upright_quarter_turns(k1.images, images), query_turns)
    assert (_upright_quarter_turns(k0.images, images) != query_turns).float().mean() > 0.5


def test_the_baseline_pair_draws_the_same_ops_independently():
    images = torch.rand(16, 3, 16, 16)
    recipe = LOOC_AUG_PAIR_RECIPES["looc_aug_pair_32"](16, AUGMENTATIONS)
    first, second = recipe(images, torch.Generator().manual_seed(3))
    expected = {"crop", "color_jitter", "grayscale", "rotate90", "texture", "flip"}
    assert set(first.params) == set(second.params) == expected
    assert not any(_same(first.params[op], second.params[op]) for op in expected - {"flip", "grayscale"})


def test_texture_blend_changes_only_applied_images_and_keeps_their_range_and_brightness():
    images = torch.rand(64, 3, 16, 16) * 0.5 + 0.25
    texture = Texture(strength=(0.3, 0.6), p=0.5)
    params = texture.sample(64, torch.Generator().manual_seed(4))
    out = texture.apply(images, params)
    applied = params["applied"]
    assert 0 < applied.sum() < 64
    assert torch.equal(out[~applied], images[~applied])
    assert ((out[applied] - images[applied]).abs().mean(dim=(1, 2, 3)) > 0.02).all()
    assert out.min() >= 0 and out.max() <= 1
    # The factor 1 + s(2P − 1) averages about 1: brightness moves little compared with the texture's contrast.
    assert (out[applied].mean() - images[applied].mean()).abs() < 0.05
    assert (params["strength"][~applied] == 0).all()


@pytest.mark.parametrize(
    ("config", "settings", "message"),
    [
        (LeaveOneOutConfig, {"augmentations": []}, r"augmentations=\[\]: recipe 'looc_32' needs at least one"),
        (LeaveOneOutConfig, {"recipe": "looc", "augmentations": ["color", "shear"]}, r"\['shear'\] unknown"),
        (LeaveOneOutConfig, {"augmentations": ["color", "color"]}, "each augmentation may appear once"),
        (LeaveOneOutConfig, {"recipe": "moco_v2_32"}, r"recipe='moco_v2_32' makes no leave-one-out views"),
        (TwoViewConfig, {"recipe": "looc_aug_pair_32"}, r"augmentations=\[\]: recipe 'looc_aug_pair_32' needs"),
        (TwoViewConfig, {"recipe": "moco_v2_32", "augmentations": ["color"]}, "only the recipes"),
        (TwoViewConfig, {"recipe": "looc_32", "augmentations": ["color"]}, "makes leave-one-out views, not two"),
    ],
)
def test_views_configs_reject_bad_augmentation_lists(config, settings, message):
    with pytest.raises(ValueError, match=message):
        config(**settings)
