"""The labels added for the end-task battery, and the pin that keeps every existing config's images unchanged."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from augbench.data.shapes import SHAPES
from augbench.data.shapes_world import HELD_OUT_PHOTOS, ShapesWorldConfig, load_shapes_world

# A pin of what every existing config renders, taken from the code before the new labels existed: 8×8 average-pooled
# thumbnails of the images and masks, and the factor labels. Thumbnails rather than a hash of the pixels, because the
# float rounding of grid_sample and interpolate differs between CPUs (AMD EPYC vs Intel Xeon) and flips a few pixels
# by one grey level; a changed shape, pose, colour, texture or background moves a thumbnail far beyond the tolerance.
PINNED = Path(__file__).with_name("pinned_shapes_world.npz")
# The world of those versions is `photo_backgrounds` by name: it must keep rendering them.
OLD_WORLD = {"world": "photo_backgrounds"}
CASES = {
    ("default", "train"): dict(**OLD_WORLD, train_size=64, val_size=16, test_size=16),
    ("default", "test"): dict(**OLD_WORLD, train_size=64, val_size=16, test_size=16),
    ("count64", "train"): dict(**OLD_WORLD, image_size=64, objects=[1, 4], train_size=32, val_size=8, test_size=8),
    ("heldout_photos", "test"): dict(**OLD_WORLD, backgrounds=["photo"], photos=list(HELD_OUT_PHOTOS), train_size=32,
                                     val_size=8, test_size=24),
    ("extra_shapes", "train"): dict(**OLD_WORLD, shapes=list(SHAPES)[12:], image_size=48, seed=3, train_size=40),
}
FACTOR_LABELS = ("shape", "hue", "orientation", "scale", "position", "texture", "background", "count")
GREY_LEVELS_TOLERANCE = 1.0


def _pinned_summary(case: str, split: str) -> dict[str, np.ndarray]:
    dataset = load_shapes_world(ShapesWorldConfig(**CASES[case, split]), split)
    pool = dataset.image_size // 8
    summary = {
        "images": F.avg_pool2d(dataset.images.float(), pool).numpy(),
        "mask": F.avg_pool2d(dataset.labels["mask"].float()[:, None], pool).numpy() * 255,
    }
    return summary | {name: dataset.labels[name].numpy() for name in FACTOR_LABELS}


@pytest.mark.parametrize(("case", "split"), sorted(CASES))
def test_existing_configs_render_the_same_images_as_before(case, split):
    pinned = np.load(PINNED)
    summary = _pinned_summary(case, split)
    for name, value in summary.items():
        expected = pinned[f"{case}/{split}/{name}"]
        assert value.shape == expected.shape, name
        if name in ("images", "mask"):
            assert np.abs(value - expected).max() <= GREY_LEVELS_TOLERANCE, name
        else:
            np.testing.assert_allclose(value, expected, rtol=1e-6, err_msg=name)


def write_pinned_summaries() -> None:
    """Re-pin, only after checking that a change of the rendered images is intended."""
    np.savez_compressed(PINNED, **{f"{case}/{split}/{name}": value for case, split in sorted(CASES)
                                   for name, value in _pinned_summary(case, split).items()})


@pytest.fixture(scope="module")
def single():
    return load_shapes_world(ShapesWorldConfig(train_size=48, scale=[0.5, 0.8]), "train")


def test_box_encloses_the_mask_and_matches_its_extent(single):
    size = single.image_size
    for mask, box in zip(single.labels["mask"], single.labels["box"]):
        ys, xs = torch.nonzero(mask == 1, as_tuple=True)
        expected = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float() / size
        assert torch.allclose(box, expected)
    centre = (single.labels["box"][:, :2] + single.labels["box"][:, 2:]) / 2
    assert (centre - single.labels["position"]).abs().max() < 0.25  # the box surrounds the object's centroid


def test_semantic_and_foreground_maps_agree_with_mask_and_shape(single):
    mask, shape = single.labels["mask"], single.labels["shape"]
    assert torch.equal(single.labels["foreground"].bool(), mask > 0)
    semantic = single.labels["semantic"].long()
    assert torch.equal(semantic[mask == 0], torch.zeros_like(semantic[mask == 0]))
    assert torch.equal(semantic, (mask > 0).long() * (shape[:, None, None] + 1))


def test_edges_lie_on_the_mask_boundary_and_distance_is_zero_there(single):
    edges, distance, mask = single.labels["edges"].bool(), single.labels["distance"], single.labels["mask"]
    # An interior pixel (all 3x3 neighbours in the same instance) is never an edge.
    padded = torch.nn.functional.pad(mask.float()[:, None], (1, 1, 1, 1), mode="replicate")
    windows = padded.unfold(2, 3, 1).unfold(3, 3, 1)[:, 0]  # (N, H, W, 3, 3)
    uniform = (windows == mask.float()[..., None, None]).all(-1).all(-1)
    assert torch.equal(edges, ~uniform)
    assert (distance[edges] == 0).all() and (distance[~edges] > 0).all()
    # Brute-force distance of a few pixels of the first image.
    ys, xs = torch.nonzero(edges[0], as_tuple=True)
    for y, x in [(0, 0), (5, 17), (31, 31)]:
        nearest = torch.sqrt((ys - y).float() ** 2 + (xs - x).float() ** 2).min() / single.image_size
        assert abs(distance[0, y, x].item() - nearest.item()) < 1e-6


def test_variants_squash_the_object_and_leave_other_factors_alone():
    base = dict(train_size=64, shapes=["cross"], textures=["flat"], scale=[0.8, 0.8], orientation=[0.0, 0.0])
    plain = load_shapes_world(ShapesWorldConfig(**base), "train")
    varied = load_shapes_world(ShapesWorldConfig(**base, variants=3, variant_squash=0.4), "train")
    assert set(varied.labels["variant"].tolist()) == {0, 1, 2}
    assert torch.equal(varied.labels["shape_variant"], varied.labels["shape"] * 3 + varied.labels["variant"])
    for name in ("hue", "orientation", "position", "background"):
        assert torch.equal(plain.labels[name], varied.labels[name])
    width = (varied.labels["box"][:, 2] - varied.labels["box"][:, 0]).numpy()
    means = [width[varied.labels["variant"].numpy() == v].mean() for v in range(3)]
    assert means[0] > means[1] > means[2]  # upright objects: squashing the template's x narrows the box
    assert np.isclose(means[2] / means[0], 0.6, atol=0.08)
    unvaried = varied.labels["variant"] == 0
    assert torch.equal(varied.images[unvaried], plain.images[unvaried])


if __name__ == "__main__":
    write_pinned_summaries()
