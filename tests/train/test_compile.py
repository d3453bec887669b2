"""trainer.compile_model: which modules it compiles, that every backbone pass goes through them, and a compiled run."""

import re

import pytest
import torch

from augbench.augment.kinds import build_views
from augbench.augment.views import to_float
from augbench.config import ConfigError, shipped_config
from augbench.methods import build_method
from augbench.models.backbones import build_backbone
from augbench.train.config import load_config
from augbench.train.module import compile_backbones
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES

# The momentum copies each preset makes of its backbone, by attribute path.
TARGETS = {"moco_v2": ["target_backbone"], "byol": ["target_backbone"], "simclr": [], "simsiam": [],
           "swav": [], "looc": ["target_trunk.backbone"]}


def _method_and_views(preset: str, tiny_shapes):
    config, _ = load_config(shipped_config(f"methods/{preset}.yaml"), TINY_OVERRIDES)
    method = build_method(config.method, build_backbone(config.model), config.augment)
    method.set_steps_per_epoch(1)
    recipe = build_views(config.augment, tiny_shapes.image_size, config.method)
    views = recipe(to_float(tiny_shapes.images[:16]), torch.Generator().manual_seed(0))
    return method, views


def _backbone_passes(method, views, compiled) -> tuple[dict, list[str]]:
    """Calls of each compiled forward in one training step, and the backbone layers run outside them.

    The compiled forwards are replaced by stand-ins that count their calls
    (compiling for real is the slow test's job); a hook on every layer of a
    backbone catches any run outside them, as a method reading the stages
    directly does.
    """
    calls, inside, outside = {id(module): 0 for module in compiled}, [], []
    for module in compiled:
        def counted(*args, module=module, **kwargs):
            calls[id(module)] += 1
            inside.append(module)
            try:
                return module._call_impl(*args, **kwargs)
            finally:
                inside.pop()
        module._compiled_call_impl = counted
        for name, layer in module.named_modules():
            layer.register_forward_pre_hook(lambda layer, args, name=name: None if inside else outside.append(name))
    method(views)["loss"].backward()
    return calls, outside


@pytest.mark.parametrize("preset", TARGETS)
def test_the_backbone_and_its_momentum_copies_are_compiled_and_every_backbone_pass_runs_through_them(
        preset, tiny_shapes):
    method, views = _method_and_views(preset, tiny_shapes)
    expected = [method.backbone, *(method.get_submodule(path) for path in TARGETS[preset])]
    compiled = compile_backbones(method)
    assert [id(module) for module in compiled] == [id(module) for module in expected]
    calls, outside = _backbone_passes(method, views, compiled)
    assert all(calls.values()), calls
    assert not outside


def test_hai_runs_its_backbone_outside_the_compiled_forward(tiny_shapes):
    method, views = _method_and_views("hai_moco_v2", tiny_shapes)
    _, outside = _backbone_passes(method, views, compile_backbones(method))
    assert "conv1" in outside and "layer1" in outside


@pytest.mark.parametrize("preset, setting", [("hai_moco_v2", "method.name=hai"),
                                             ("looc++", "method.representation=looc++")])
def test_methods_that_run_the_backbone_stage_by_stage_refuse_compile_model(preset, setting):
    message = f"command line: trainer.compile_model=true compiles the backbone's forward, which {setting} never calls"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(shipped_config(f"methods/{preset}.yaml"), ["trainer.compile_model=true"])


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_run_does_and_writes_the_same_checkpoint_keys(tmp_path):
    states = {}
    for compiled in (False, True):
        config, _ = load_config(shipped_config("methods/moco_v2.yaml"), [
            *TINY_OVERRIDES, f"output_dir={tmp_path}", f"name=compiled_{compiled}", "method.queue_size=32",
            f"trainer.compile_model={str(compiled).lower()}"])
        run = pretrain(config)
        states[compiled] = torch.load(run.directory / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert states[True].keys() == states[False].keys()
    online = [key for key in states[False] if key.startswith("method.backbone.") and key.endswith("weight")]
    target = [key.replace("method.backbone.", "method.target_backbone.") for key in online]

    def flat(state, keys):
        return torch.cat([state[key].flatten() for key in keys])

    # After two steps the momentum copy is still within a few % of the initial weights, so online - target is how
    # far training moved them; the compiled run may differ from the eager one only by float rounding.
    moved = (flat(states[False], online) - flat(states[False], target)).norm()
    assert moved > 0
    assert (flat(states[True], online) - flat(states[False], online)).norm() < 0.01 * moved
