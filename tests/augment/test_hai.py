import pytest
import torch

from augbench.augment.hai import DEFAULT_ASSIGNMENT, augmentation_vector, hai_ops, hai_views, vector_width
from augbench.augment.ops import ColorJitter
from augbench.augment.views import Pipeline

STAGES = (1, 2, 3, 4)
# Each op's recorded parameters when it changed nothing; crop's "no change" is the whole image.
IDENTITY = {
    "crop": {"box": torch.tensor([0.0, 0.0, 1.0, 1.0])},
    "color_jitter": {"factors": torch.tensor([1.0, 1.0, 1.0, 0.0]), "applied": torch.tensor(False)},
    "grayscale": {"applied": torch.tensor(False)},
    "blur": {"sigma": torch.tensor(0.0), "applied": torch.tensor(False)},
    "flip": {"applied": torch.tensor(False)},
    "rotate90": {"quarter_turns": torch.tensor(0), "applied": torch.tensor(False)},
}


def _is_identity(op_name: str, params: dict) -> bool:
    return all(torch.equal(params[key], value.expand_as(params[key])) for key, value in IDENTITY[op_name].items())


@pytest.fixture(scope="module")
def stage_views():
    images = torch.rand(64, 3, 40, 40)  # over 32 px, where blur applies
    assignment = {**DEFAULT_ASSIGNMENT, "rotate90": 3}
    views = hai_views(40, assignment, STAGES)(images, torch.Generator().manual_seed(1))
    return images, assignment, views


def test_a_shallow_pair_differs_only_in_the_augmentations_assigned_to_it(stage_views):
    images, assignment, views = stage_views
    first, second = views[0], views[1]  # the pair of stage 1: crop and colour jitter only
    for name in ("grayscale", "blur", "flip", "rotate90"):
        assert _is_identity(name, first.params[name]) and _is_identity(name, second.params[name]), name
    assert not torch.equal(first.params["crop"]["box"], second.params["crop"]["box"])
    assert not torch.equal(first.params["color_jitter"]["factors"], second.params["color_jitter"]["factors"])
    # Replaying only the assigned ops gives the view exactly: the left-out ops changed no pixel.
    crop_and_colour = Pipeline([op for op in hai_ops(40) if assignment[op.name] == 1])
    assert torch.allclose(crop_and_colour.apply(images, first.params), first.images, atol=1e-6)


@pytest.mark.parametrize("stage_index", range(4))
def test_each_stage_applies_exactly_the_augmentations_assigned_to_it_or_shallower(stage_views, stage_index):
    _, assignment, views = stage_views
    stage = STAGES[stage_index]
    for view in views[2 * stage_index : 2 * stage_index + 2]:
        for name, stage_of_op in assignment.items():
            applied = not _is_identity(name, view.params[name])
            # 64 images, p ≥ 0.2: an assigned op leaves all of them unchanged with probability < 1e-6.
            assert applied == (stage_of_op <= stage), (stage, name)


def test_uniform_assignment_gives_every_stage_the_full_pipeline():
    uniform = dict.fromkeys(["crop", "color_jitter", "grayscale", "blur", "flip"], 1)
    views = hai_views(40, uniform, STAGES)(torch.rand(64, 3, 40, 40), torch.Generator().manual_seed(2))
    for view in views:
        assert view.params["grayscale"]["applied"].any() and view.params["flip"]["applied"].any()
        assert view.params["blur"]["applied"].any() and not view.params["rotate90"]["applied"].any()


@pytest.mark.parametrize(("size", "blurred"), [(32, False), (33, True)])
def test_blur_is_left_out_at_32_px_and_below_as_in_the_official_code(size, blurred):
    views = hai_views(size, DEFAULT_ASSIGNMENT, STAGES)(torch.rand(64, 3, 40, 40), torch.Generator().manual_seed(3))
    assert any(view.params["blur"]["applied"].any() for view in views) == blurred


def test_the_views_come_in_pairs_per_stage_and_keep_the_crop_size():
    recipe = hai_views(24, DEFAULT_ASSIGNMENT, (2, 4))
    views = recipe(torch.rand(4, 3, 32, 32), torch.Generator().manual_seed(0))
    assert len(views) == 4 and all(view.images.shape == (4, 3, 24, 24) for view in views)
    assert recipe.pipelines[0] is recipe.pipelines[1] and recipe.pipelines[1] is not recipe.pipelines[2]


def test_the_augmentation_vector_of_known_parameters():
    params = {
        "color_jitter": {"factors": torch.tensor([[1.2, 0.7, 1.1, -0.05], [1.0, 1.0, 1.0, 0.0]])},
        "crop": {"box": torch.tensor([[0.1, 0.2, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0]])},
        "flip": {"applied": torch.tensor([True, False])},
        "blur": {"sigma": torch.tensor([0.0, 1.5]), "applied": torch.tensor([False, True])},
        "rotate90": {"quarter_turns": torch.tensor([3, 0])},
    }
    names = ["color_jitter", "crop", "flip", "blur", "rotate90"]
    expected = torch.tensor(
        [
            [1.2, 0.7, 1.1, -0.05, 0.1, 0.2, 0.6, 0.9, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.5, 1.0, 0.0, 0.0, 0.0],
        ]
    )
    vector = augmentation_vector(params, names)
    assert vector.shape == (2, vector_width(names)) == (2, 14)
    assert torch.allclose(vector, expected)


def test_colour_vector_is_the_identity_where_jitter_was_not_applied():
    params = {"color_jitter": ColorJitter(p=0.5).sample(200, torch.Generator().manual_seed(0))}
    vector = augmentation_vector(params, ["color_jitter"])
    skipped = ~params["color_jitter"]["applied"]
    assert 0 < skipped.sum() < 200
    assert torch.equal(vector[skipped], torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(int(skipped.sum()), 4))
    assert (vector[~skipped, :3] != 1).all()


def test_a_vector_of_an_op_the_view_did_not_record_is_refused():
    with pytest.raises(ValueError, match=r"no parameters of \['blur'\]; it has \['flip'\]"):
        augmentation_vector({"flip": {"applied": torch.tensor([True])}}, ["blur"])
