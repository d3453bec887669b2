"""The fast paths of augbench.augment.ops agree with the reference maths they replace."""

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.ops import roi_align

from augbench.augment.ops import ColorJitter, RandomResizedCrop, shift_hue


def test_enlarging_crops_sample_as_roi_align_does():
    images = torch.rand(32, 3, 20, 20)
    op = RandomResizedCrop(20, scale=(0.08, 1.0))
    params = op.sample(32, torch.Generator().manual_seed(0))
    rois = torch.cat([torch.arange(32.0)[:, None], params["box"] * 20], dim=1)
    expected = roi_align(images, rois, output_size=20, aligned=True)
    assert torch.allclose(op.apply(images, params), expected, atol=1e-4)


def test_crops_to_a_larger_size_than_the_input_sample_as_roi_align_does():
    images = torch.rand(8, 3, 12, 12)
    op = RandomResizedCrop(30, scale=(0.2, 1.0))
    params = op.sample(8, torch.Generator().manual_seed(1))
    rois = torch.cat([torch.arange(8.0)[:, None], params["box"] * 12], dim=1)
    expected = roi_align(images, rois, output_size=30, aligned=True)
    assert torch.allclose(op.apply(images, params), expected, atol=1e-4)


def test_hue_shift_matches_torchvision_including_grey_pixels_and_ties():
    images = torch.rand(12, 3, 9, 9)
    images[:3] = images[:3, :1]  # grey: hue undefined, must come back unchanged
    images[3:6] = (images[3:6] * 3).round() / 3  # many pixels where two channels tie for the maximum
    turns = torch.linspace(-0.5, 0.5, 12)
    expected = torch.stack([TF.adjust_hue(image, turn.item()) for image, turn in zip(images, turns)])
    assert torch.allclose(shift_hue(images, turns), expected, atol=1e-5)


def test_jitter_on_channels_last_images_equals_jitter_on_contiguous_ones():
    images = torch.rand(16, 3, 10, 10)
    op = ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
    params = op.sample(16, torch.Generator().manual_seed(2))
    channels_last = images.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(op.apply(channels_last, params), op.apply(images, params), atol=1e-6)


def test_hue_shift_written_over_its_input_equals_the_one_written_elsewhere():
    images = torch.rand(6, 3, 9, 9)
    turns = torch.linspace(-0.4, 0.4, 6)
    overwritten = images.clone()
    shift_hue(overwritten, turns, out=overwritten)
    assert torch.equal(overwritten, shift_hue(images, turns))
