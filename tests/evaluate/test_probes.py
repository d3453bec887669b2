import pytest
import torch
from torch import nn

from augbench.augment.ops import Rotate90
from augbench.data.shapes_world import ShapesWorldConfig, load_shapes_world
from augbench.evaluate.probes import ProbeConfig, sensitivity_table


class Pixels(nn.Module):
    """Pooled pixels: sensitive to everything, so each parameter should be readable from [f(x), f(t(x))]."""

    def forward(self, images):
        return nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)


class FlipInvariant(Pixels):
    def forward(self, images):
        return super().forward(images) + super().forward(images.flip(-1))


@pytest.fixture(scope="module")
def images():
    return load_shapes_world(ShapesWorldConfig(world="photo_backgrounds", image_size=16, train_size=300),
                             "train").images


def test_an_encoder_built_to_ignore_flips_is_invariant_to_them_and_only_them(images):
    config = ProbeConfig(augmentations=["flip", "grayscale"], images=300)
    invariant = sensitivity_table(FlipInvariant(), images, config, seed=0).set_index("augmentation")
    sensitive = sensitivity_table(Pixels(), images, config, seed=0).set_index("augmentation")
    assert invariant.loc["flip", "cosine"] == pytest.approx(1.0, abs=1e-6)
    assert invariant.loc["flip", "predictability"] < 75  # chance is 50 %: nothing to read
    assert sensitive.loc["flip", "cosine"] < 0.999 and sensitive.loc["flip", "predictability"] > 90
    assert invariant.loc["grayscale", "predictability"] > 90  # still sees colour removal
    assert set(invariant.predictability_metric) == {"top1"} and set(invariant.stage) == {"output"}


class Blind(nn.Module):
    """The same features for every image: perfectly invariant, nothing to read."""

    def forward(self, images):
        return torch.ones(len(images), 8)


def test_continuous_parameters_are_scored_by_r2_readable_from_pixels_and_not_from_a_blind_encoder(images):
    config = ProbeConfig(augmentations=["color_jitter", "crop", "blur"], images=300)
    pixels = sensitivity_table(Pixels(), images, config).set_index("augmentation")
    blind = sensitivity_table(Blind(), images, config).set_index("augmentation")
    assert set(pixels.predictability_metric) == {"r2"}
    assert ((blind.cosine - 1).abs() < 1e-6).all() and (blind.predictability.abs() < 0.05).all()
    assert (pixels.predictability > blind.predictability + 0.1).all(), pixels.predictability


def test_stages_of_a_resnet_are_probed_separately(images):
    from augbench.models.backbones import BackboneConfig, build_backbone

    table = sensitivity_table(build_backbone(BackboneConfig(width=0.125)), images,
                              ProbeConfig(augmentations=["rotate90"], images=100))
    assert list(table.stage) == ["layer1", "layer2", "layer3", "layer4"]
    assert ((table.cosine > -1) & (table.cosine <= 1)).all()


def test_unknown_augmentation_is_named():
    with pytest.raises(ValueError, match=r"augmentations: unknown \['cutout'\]"):
        ProbeConfig(augmentations=["cutout"])


def test_the_rotation_cosine_averages_over_turned_images_only(images):
    table = sensitivity_table(Pixels(), images, ProbeConfig(augmentations=["rotate90"], images=300), seed=3)
    params = Rotate90(p=1.0).sample(300, torch.Generator().manual_seed(3))
    turned = params["quarter_turns"] != 0
    assert 0 < (~turned).sum() < 300
    float_images = images[:300].float() / 255
    rotated = Rotate90(p=1.0).apply(float_images, params)
    cosines = nn.functional.cosine_similarity(Pixels()(float_images), Pixels()(rotated), dim=1)
    assert table.cosine.item() == pytest.approx(cosines[turned].mean().item(), abs=1e-5)
    assert table.cosine.item() < cosines.mean().item()  # the unturned copies' cosines of 1 are left out
