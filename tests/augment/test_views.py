import pytest
import torch

from augbench.augment.ops import (
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    RandomResizedCrop,
    Rotate90,
    Solarize,
)
from augbench.augment.views import Pipeline


def _one_by_one(ops, images, params):
    for op in ops:
        images = op.apply(images, params[op.name])
    return images


@pytest.mark.parametrize("crop_size", [32, 20], ids=["enlarging", "shrinking"])
def test_a_flip_folded_into_the_crop_gives_the_images_of_the_ops_applied_one_by_one(crop_size):
    images = torch.rand(24, 3, 32, 32)
    ops = [RandomResizedCrop(crop_size, scale=(0.2, 1.0)), ColorJitter(p=0.8), Grayscale(p=0.3),
           GaussianBlur(p=0.5), Solarize(p=0.3), HorizontalFlip(p=0.5)]
    pipeline = Pipeline(ops)
    params = pipeline.sample(len(images), torch.Generator().manual_seed(0))
    assert params["flip"]["applied"].any() and not params["flip"]["applied"].all()
    assert torch.allclose(pipeline.apply(images, params), _one_by_one(ops, images, params), atol=1e-5)


def test_a_flip_after_an_op_that_does_not_commute_with_it_stays_where_it_is():
    images = torch.rand(24, 3, 16, 16)
    ops = [RandomResizedCrop(16, scale=(0.2, 1.0)), Rotate90(p=1.0), HorizontalFlip(p=0.5)]
    pipeline = Pipeline(ops)
    params = pipeline.sample(len(images), torch.Generator().manual_seed(1))
    assert torch.equal(pipeline.apply(images, params), _one_by_one(ops, images, params))
