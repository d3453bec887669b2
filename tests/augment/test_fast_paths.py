"""The fast paths of augbench.augment.ops agree with the reference maths they replace."""

import os
import subprocess
import sys

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.ops import roi_align

from augbench.augment.ops import (
    _HUE_ROTATION_COMPILED,
    ColorJitter,
    RandomResizedCrop,
    _rotate_hue,
    compiled_hue_rotation,
    shift_hue,
)


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


def test_compiled_hue_rotation_agrees_with_eager_ops_and_torchvision_whatever_the_threads_and_rows():
    images = torch.rand(10, 3, 64, 64)  # large enough to take the compiled path
    images[0] = images[0, :1]  # grey
    turns = torch.linspace(-0.5, 0.5, 10)
    compiled = shift_hue(images, turns)
    assert torch.allclose(compiled, _rotate_hue(images, turns), atol=1e-6, rtol=0)
    expected = torch.stack([TF.adjust_hue(image, turn.item()) for image, turn in zip(images, turns)])
    assert torch.allclose(compiled, expected, atol=1e-5)
    # A view must not depend on how many threads made it, nor on which rows shared its call (a DDP rank's batch).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert torch.equal(shift_hue(images, turns), compiled)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.cat([shift_hue(images[:3], turns[:3]), shift_hue(images[3:], turns[3:])]), compiled)
    written_over = images.clone()
    shift_hue(written_over, turns, out=written_over)
    assert torch.equal(written_over, compiled)


def test_switching_the_compiled_hue_rotation_off_gives_the_eager_ops_inside_the_block_alone():
    images, turns = torch.rand(4, 3, 64, 64), torch.linspace(-0.4, 0.4, 4)
    with compiled_hue_rotation(False):
        assert torch.equal(shift_hue(images, turns), _rotate_hue(images, turns))
        with compiled_hue_rotation(True):
            assert _HUE_ROTATION_COMPILED.get()
        assert not _HUE_ROTATION_COMPILED.get()
    assert _HUE_ROTATION_COMPILED.get()


def test_without_a_cpp_compiler_the_hue_rotation_warns_and_falls_back_to_eager_ops(tmp_path):
    script = """
import warnings, torch
from augbench.augment.ops import _rotate_hue, shift_hue
images, turns = torch.rand(4, 3, 64, 64), torch.linspace(-0.4, 0.4, 4)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = shift_hue(images, turns)
    second = shift_hue(images, turns)
messages = [str(warning.message) for warning in caught if "hue rotation" in str(warning.message)]
assert len(messages) == 1, messages
assert "compile_augmentation" in messages[0], messages[0]
assert torch.equal(first, _rotate_hue(images, turns)) and torch.equal(second, first)
"""
    # A fresh inductor cache, so that nothing compiled earlier on this machine stands in for the missing compiler.
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
