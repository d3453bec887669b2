import pytest
import torch

from augbench.augment.background import BackgroundAugmentation
from augbench.augment.recipes import TwoViewConfig
from augbench.data.shapes_world import ShapesWorldConfig, load_shapes_world
from augbench.train.config import load_config
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES


@pytest.fixture(scope="module")
def scenes() -> torch.Tensor:
    """Shapes World on photo backgrounds, (B, 4, H, W): colour in [0, 1] and the foreground mask."""
    data = load_shapes_world(ShapesWorldConfig(world="photo_backgrounds", backgrounds=["photo"], train_size=16),
                             "train")
    return torch.cat([data.images.float() / 255, data.labels["foreground"][:, None].float()], dim=1)


def test_remove_puts_each_object_on_a_flat_grey_and_leaves_the_object_alone(scenes):
    op = BackgroundAugmentation("remove", p=0.5)
    params = op.sample(len(scenes), torch.Generator().manual_seed(0))
    out = op.apply(scenes, params)
    colour, foreground = scenes[:, :3], scenes[:, 3:].bool().expand(-1, 3, -1, -1)
    assert out.shape == colour.shape and torch.equal(out[foreground], colour[foreground])
    assert 0 < params["applied"].sum() < len(scenes)
    for i in range(len(scenes)):
        background = out[i][~foreground[i]]
        if params["applied"][i]:
            assert torch.allclose(background, params["grey"][i].expand_as(background))
        else:
            assert torch.equal(background, colour[i][~foreground[i]])


def test_swap_takes_another_images_background_with_its_object_painted_out(scenes):
    op = BackgroundAugmentation("swap", p=1.0)
    params = op.sample(len(scenes), torch.Generator().manual_seed(1))
    out = op.apply(scenes, params)
    assert (params["source"] != torch.arange(len(scenes))).all()
    colour, foreground = scenes[:, :3], scenes[:, 3:].bool()
    for i, source in enumerate(params["source"].tolist()):
        mine, theirs = foreground[i, 0], foreground[source, 0]
        both_background = ~mine & ~theirs
        assert torch.equal(out[i][:, both_background], colour[source][:, both_background])
        mean = colour[source][:, ~theirs].mean(1)  # where the source had its object: its mean background colour
        assert torch.allclose(out[i][:, ~mine & theirs], mean[:, None].expand(-1, int((~mine & theirs).sum())),
                              atol=1e-5)
        assert torch.equal(out[i][:, mine], colour[i][:, mine])


def test_a_recipe_with_the_background_op_replaces_each_views_background_on_its_own(scenes):
    recipe = TwoViewConfig(recipe="moco_v2_32", background="remove", background_p=1.0).build(32)
    assert recipe.needs_foreground and recipe.pipelines[0] is recipe.pipelines[1]
    first, second = recipe(scenes, torch.Generator().manual_seed(2))
    assert first.images.shape == (16, 3, 32, 32)
    assert not torch.equal(first.params["background"]["grey"], second.params["background"]["grey"])
    for pipeline, view in zip(recipe.pipelines, (first, second)):
        assert torch.equal(pipeline.apply(scenes, view.params), view.images)  # replayable from its params


@pytest.mark.parametrize(("overrides", "message"), [
    (["augment.background=blur"], r"background='blur': expected one of \['none', 'remove', 'swap'\]"),
    (["augment.background_p=1.5"], r"background_p=1.5: a probability"),
    (["data.name=digits", "augment.background=swap"], r"augment.background='swap' .* digits has none"),
])
def test_bad_background_settings_are_refused_at_config_load(overrides, message, tmp_path):
    from augbench.config import ConfigError, shipped_config

    with pytest.raises(ConfigError, match=message):
        load_config([shipped_config("methods/moco_v2.yaml")], [f"output_dir={tmp_path}", *overrides])


def test_pretraining_with_background_swap_runs_to_a_finished_run(tmp_path):
    from augbench.config import shipped_config

    config, _ = load_config([shipped_config("methods/moco_v2.yaml")],
                            [*TINY_OVERRIDES, f"output_dir={tmp_path}", "name=swap", "method.queue_size=32",
                             "augment.background=swap"])
    run = pretrain(config)
    assert run.encoder is not None and (tmp_path / "swap" / "encoder.safetensors").is_file()
