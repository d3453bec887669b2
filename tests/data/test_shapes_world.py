import colorsys
import itertools
import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from augbench.data import dataset_config_type
from augbench.data.shapes import SHAPES, shape_templates
from augbench.data.shapes_world import BACKGROUND_KINDS, TEXTURES, ShapesWorldConfig, load_shapes_world
from augbench.errors import ConfigError


def _single(**factors) -> ShapesWorldConfig:
    """One object an image, in the world whose labels these tests read off the pixels."""
    return ShapesWorldConfig(**{"world": "photo_backgrounds", "train_size": 200, "val_size": 8, "test_size": 8,
                                **factors})


def test_same_config_and_split_give_identical_images_and_labels(tiny_shapes):
    again = load_shapes_world(ShapesWorldConfig(train_size=64, val_size=16, test_size=16), "train")
    assert torch.equal(again.images, tiny_shapes.images)
    for name, values in tiny_shapes.labels.items():
        assert torch.equal(again.labels[name], values), name


def test_splits_and_seeds_give_different_images():
    config = ShapesWorldConfig(train_size=32, val_size=32, test_size=32)
    train, val = load_shapes_world(config, "train"), load_shapes_world(config, "val")
    other_seed = load_shapes_world(ShapesWorldConfig(seed=1, train_size=32), "train")
    assert not torch.equal(train.images, val.images)
    assert not torch.equal(train.images, other_seed.images)


def test_images_and_labels_have_the_documented_types_and_ranges(tiny_shapes):
    assert tiny_shapes.images.dtype == torch.uint8 and tiny_shapes.images.shape == (64, 3, 32, 32)
    labels = tiny_shapes.labels
    assert labels["shape"].max() < 12 and labels["hue_bin"].max() < 12 and labels["orientation_bin"].max() < 8
    assert ((labels["hue"] >= 0) & (labels["hue"] < 1)).all()
    assert ((labels["orientation"] >= 0) & (labels["orientation"] < 360)).all()
    assert torch.equal(labels["hue_bin"], (labels["hue"] * 12).floor().long())
    assert torch.equal(labels["orientation_bin"], (labels["orientation"] / 45).floor().long())
    assert labels["mask"].shape == (64, 32, 32)
    assert tiny_shapes.classes["shape"][0] == "triangle"


def test_any_image_size_renders():
    dataset = load_shapes_world(ShapesWorldConfig(image_size=72, train_size=4), "train")
    assert dataset.images.shape == (4, 3, 72, 72) and dataset.labels["mask"].shape == (4, 72, 72)


def test_mask_area_grows_with_scale():
    areas = []
    for scale in (0.3, 0.5, 0.7, 0.9):
        dataset = load_shapes_world(_single(scale=[scale, scale]), "train")
        areas.append((dataset.labels["mask"] > 0).float().sum(dim=(1, 2)).mean().item())
    assert all(a < b for a, b in itertools.pairwise(areas)), areas
    # Area scales with the square of the diameter, up to the shapes' mix.
    assert 0.7 < areas[3] / areas[1] / (0.9 / 0.5) ** 2 < 1.3


def test_hue_label_matches_the_rendered_object_pixels():
    dataset = load_shapes_world(_single(textures=["flat"], backgrounds=["flat"], scale=[0.8, 0.9]), "train")
    errors = []
    for image, mask, hue in zip(dataset.images, dataset.labels["mask"], dataset.labels["hue"]):
        inner = mask > 0
        inner[1:-1, 1:-1] &= inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2] & inner[1:-1, 2:]  # skip edges
        rgb = image[:, inner].float().mean(dim=1) / 255
        rendered = colorsys.rgb_to_hsv(*rgb.tolist())[0]
        errors.append(min(abs(rendered - hue.item()), 1 - abs(rendered - hue.item())))
    assert np.median(errors) < 0.01 and max(errors) < 0.03


def test_position_label_is_the_mask_centroid():
    dataset = load_shapes_world(_single(scale=[0.5, 0.8]), "train")
    size = dataset.image_size
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    mask = (dataset.labels["mask"] > 0).float()
    centroid = torch.stack([(mask * xs).sum((1, 2)), (mask * ys).sum((1, 2))], dim=1) / mask.sum((1, 2))[:, None]
    error = (centroid / size - dataset.labels["position"]).abs()
    assert error.max() < 1.5 / size


def _vertical_skew(mask: torch.Tensor, angle: torch.Tensor) -> float:
    """Third moment of the mask's pixels along the object's own up axis, after undoing `angle` (degrees)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    x, y = xs.float() - xs.float().mean(), -(ys.float() - ys.float().mean())  # y up
    theta = torch.deg2rad(angle)
    upright_y = -x * torch.sin(theta) + y * torch.cos(theta)
    return (upright_y**3).mean().item() / upright_y.pow(2).mean().item() ** 1.5


def test_orientation_label_matches_the_rendered_rotation():
    # An arrow is lopsided along its axis: undoing each object's labelled rotation must give the upright
    # arrow's skew every time, and undoing the opposite rotation must not.
    config = _single(shapes=["arrow"], scale=[0.9, 0.9])
    upright = load_shapes_world(ShapesWorldConfig(**{**config.__dict__, "orientation": [0.0, 0.0]}), "train")
    reference = _vertical_skew(upright.labels["mask"][0], torch.tensor(0.0))
    dataset = load_shapes_world(config, "train")
    masks, angles = dataset.labels["mask"][:40], dataset.labels["orientation"][:40]
    skews = [_vertical_skew(m, a) for m, a in zip(masks, angles)]
    assert all(abs(s - reference) < 0.15 for s in skews), (reference, skews)
    flipped = [_vertical_skew(m, a + 180) for m, a in zip(masks, angles)]
    assert all(abs(s - reference) > 0.5 for s in flipped)


def test_count_label_is_the_number_of_drawn_instances():
    dataset = load_shapes_world(_single(objects=[1, 4], scale=[0.7, 0.9], image_size=64), "train")
    drawn = torch.tensor([torch.unique(m[m > 0]).numel() for m in dataset.labels["mask"]])
    assert torch.equal(drawn, dataset.labels["count"])
    assert set(dataset.labels["count"].tolist()) == {1, 2, 3, 4}


def test_templates_are_centred_and_unit_radius():
    templates = shape_templates(tuple(SHAPES), 128)
    coords = (torch.arange(128) + 0.5) / 128 * 2.2 - 1.1
    ys, xs = torch.meshgrid(-coords, coords, indexing="ij")
    for name, template in zip(SHAPES, templates[:, 0]):
        mass = template.sum()
        assert abs((template * xs).sum() / mass) < 0.03 and abs((template * ys).sum() / mass) < 0.03, name
        radius = torch.sqrt(xs**2 + ys**2)[template > 0.5].max()
        assert 0.95 < radius <= 1.02, name


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"shapes": ["triangle", "hexagon"]}, "shapes: unknown ['hexagon']"),
        ({"textures": []}, "textures is empty"),
        ({"scale": [0.9, 0.2]}, "scale=[0.9, 0.2]"),
        ({"objects": [0, 3]}, "objects=[0, 3]"),
    ],
)
def test_bad_settings_name_the_key(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ShapesWorldConfig(**settings)


def test_unknown_dataset_name_is_reported_with_the_known_ones(tmp_path):
    from augbench.train.config import load_config

    with pytest.raises(ConfigError, match=r"data.name='cifar11' is unknown; known datasets"):
        load_config(overrides=["data.name=cifar11"])


def test_a_named_world_sets_only_the_keys_left_unset():
    config = ShapesWorldConfig(world="photo_backgrounds", scale=[0.5, 0.6])
    resolved = config.resolved()
    assert resolved.scale == [0.5, 0.6] and resolved.textures == list(TEXTURES) and resolved.flat_greys == []
    assert config.textures is None  # left to the world, so merging another world over it takes that world's


def test_merging_another_world_over_a_config_takes_that_worlds_settings():
    config_type = dataset_config_type("shapes_world")
    objects = OmegaConf.to_object(OmegaConf.structured(config_type))
    photos = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(objects), {"world": "photo_backgrounds"}))
    assert photos.resolved().backgrounds == list(BACKGROUND_KINDS) and objects.resolved().backgrounds == ["flat"]


def test_an_unknown_world_names_the_known_ones():
    with pytest.raises(ValueError, match=r"world='cartoon': unknown; known: \['objects', 'photo_backgrounds'\]"):
        ShapesWorldConfig(world="cartoon")


def test_the_objects_world_shows_copies_of_one_shape_in_one_pose_each_in_a_colour_of_the_palette():
    config = ShapesWorldConfig(world="objects", train_size=64)
    dataset = load_shapes_world(config, "train")
    settings, labels = config.resolved(), dataset.labels
    instances = [torch.unique(m[m > 0]).tolist() for m in labels["mask"]]
    assert all(ids == [1, 2, 3, 4] for ids in instances)
    centres = (torch.arange(settings.hue_palette) + 0.5) / settings.hue_palette
    assert torch.isclose(labels["hue"][:, None], centres[None].float(), atol=1e-6).any(1).all()
    greys = torch.tensor(settings.flat_greys) * 255
    for image, mask, background in zip(dataset.images.float(), labels["mask"], labels["background"]):
        # The background pixels are the labelled grey; the objects are coloured, each its own palette hue.
        assert (image[:, mask == 0].median(dim=1).values - greys[background]).abs().max() <= 1
        hues = {round(colorsys.rgb_to_hsv(*(image[:, mask == k].mean(1) / 255).tolist())[0] * 12 - 0.5)
                for k in range(1, 5) if (mask == k).sum() >= 6}
        assert all(0 <= h < 12 for h in hues)
    distinct = [len({round(colorsys.rgb_to_hsv(*(i[:, m == k].mean(1) / 255).tolist())[0] * 12 - 0.5) % 12
                     for k in range(1, 5) if (m == k).sum() >= 6}) for i, m in zip(dataset.images.float(),
                                                                          labels["mask"])]
    assert np.mean(distinct) > 2.5  # four draws from twelve hues: mostly distinct
    assert dataset.classes["background"] == ["grey 0.30", "grey 0.50", "grey 0.70"]
