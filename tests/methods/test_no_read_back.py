"""A training step reads nothing back from the device once the first step is done: on the meta device, which
holds shapes but no values, reading a value (`.item()`, `.tolist()`, `nonzero`, `unique`, `bool(tensor)`)
raises, so every step that runs there would leave a GPU's queue of kernels undisturbed. The first step may read
a counter once (methods/host_counters.py); the views' parameters are drawn on the host, as in training."""

import pytest
import torch

from augbench.augment.kinds import build_views
from augbench.config import shipped_config
from augbench.methods import build_method
from augbench.models.backbones import build_backbone
from augbench.train.config import load_config
from tests.train.test_pretrain import EVERY_PRESET

QUEUED = {"moco_v2", "moco_v2_looc_aug", "looc", "looc++"}


def _step(method, make_views, images: torch.Tensor) -> torch.Tensor:
    views = make_views(images, torch.Generator().manual_seed(0))
    targets = torch.zeros(len(images), dtype=torch.long, device=images.device)
    out = method(views, targets) if method.label else method(views)
    out["loss"].backward()
    method.update_target(0.5)
    return out["loss"]


@pytest.mark.parametrize("preset", EVERY_PRESET)
def test_after_the_first_step_a_step_reads_nothing_back_from_the_device(preset):
    overrides = ["model.width=0.125", *(["method.queue_size=32"] if preset in QUEUED else [])]
    config, _ = load_config(shipped_config(f"methods/{preset}.yaml"), overrides)
    method = build_method(config.method, build_backbone(config.model), config.augment)
    method.set_steps_per_epoch(10)
    if method.label:
        method.set_num_classes(12)
    make_views = build_views(config.augment, 32, config.method)
    assert torch.isfinite(_step(method, make_views, torch.rand(8, 3, 32, 32)))
    method = method.to("meta")
    loss = _step(method, make_views, torch.empty(8, 3, 32, 32, device="meta"))
    assert loss.device.type == "meta" and loss.shape == ()
