"""Two DDP processes (gloo, CPU) train exactly as one process does on the same global batch.

Each process runs the method and optimiser under torch's DistributedDataParallel,
the same wrapper Lightning's `strategy=ddp` puts around the module. The views of
the global batch are made once with one generator and split over the ranks, so
both runs see identical images.

BatchNorm normalises with the statistics of the batch it sees, so a rank's
half-batch differs from the whole batch. On GPU `trainer.sync_batchnorm=true`
(SyncBatchNorm) makes them global; torch's SyncBatchNorm refuses CPU tensors, so
here every BatchNorm layer is put in eval mode (a per-sample affine map with
fixed statistics) in both runs, which makes each sample's forward independent
of its batch-mates while every cross-sample path under test (queue keys, batch
negatives, gradient averaging, EMA target) stays in place.
"""

import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from augbench.augment.kinds import build_views
from augbench.augment.views import View
from augbench.config import shipped_config
from augbench.methods import build_method
from augbench.models.backbones import build_backbone
from augbench.optim import build_optimizer
from augbench.train.config import load_config, read_status
from tests.conftest import REPO, TINY_OVERRIDES

# Shipped configs; the study's MoCo v2+ (fair step 06) enqueues one view's keys per step, drawn at random: every
# rank must draw the same view.
PRESETS = ("methods/moco_v2", "methods/simclr", "methods/byol", "fair/06_symmetric_loss")
GLOBAL_BATCH, STEPS, WORLD = 16, 3, 2
# Weights may differ by 1e-5, or by 0.1 % of the largest change training made: BYOL's LARS steps amplify a change in
# summation order (two ranks' gradients averaged) to 1.5e-5 on some images, against updates of 0.1. A rank that saw
# the wrong images or gradients that were not averaged move the weights by the size of the updates themselves.
TOLERANCE, RELATIVE_TOLERANCE = 1e-5, 1e-3


def _build(preset: str):
    """The preset's tiny config and its method, seeded: every run, and the initial state, start from these weights."""
    config, _ = load_config(shipped_config(f"{preset}.yaml"), [*TINY_OVERRIDES, "method.queue_size=64"])
    torch.manual_seed(0)
    return config, build_method(config.method, build_backbone(config.model), config.augment)


def _train(preset: str, rank: int, world: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    """STEPS optimiser steps on this rank's share of the global batch; the global losses and the final state."""
    config, method = _build(preset)
    for module in method.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
    model = DistributedDataParallel(method) if world > 1 else method
    optimizer = build_optimizer(method, config.optim, GLOBAL_BATCH)
    recipe = build_views(config.augment, 32, config.method)
    images = torch.rand(GLOBAL_BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    losses = []
    for step in range(STEPS):
        views = recipe(images, torch.Generator().manual_seed(step))
        loss = model([View(view.images[share], {}) for view in views])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.update_target(step / STEPS)
        global_loss = loss.detach().clone()
        if world > 1:
            dist.all_reduce(global_loss)
        losses.append(global_loss.item() / world)
    return losses, {k: v.detach().clone() for k, v in method.state_dict().items()}


def _saved(output, preset: str, rank: int) -> str:
    return f"{output}.{preset.replace('/', '.')}.{rank}"


def _worker(rank: int, init_file: str, output: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        for preset in PRESETS:  # one process start for all presets: starting torch is most of the cost
            torch.save(_train(preset, rank, WORLD), _saved(output, preset, rank))
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path / "out")), nprocs=WORLD, join=True)
    # One thread, as each rank has: with two, the kernels round differently, and over BYOL's three LARS steps that
    # alone moved a weight by 3.5e-5 on some images.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = {preset: _train(preset, rank=0, world=1) for preset in PRESETS}
    finally:
        torch.set_num_threads(threads)
    worst = {}
    for preset in PRESETS:
        single_losses, single_state = single[preset]
        ranks = [torch.load(_saved(tmp_path / "out", preset, rank), weights_only=True) for rank in range(WORLD)]
        (losses, state), (_, other_state) = ranks
        for key in state:  # DDP keeps the ranks in step: online weights, EMA target and queue alike
            assert torch.equal(state[key], other_state[key]), f"{preset}: ranks differ at {key}"
        if "queue.keys" in state:  # every rank's keys were enqueued
            assert int(state["queue.pointer"]) == STEPS * GLOBAL_BATCH % len(state["queue.keys"])
        assert torch.allclose(torch.tensor(losses), torch.tensor(single_losses), rtol=0, atol=TOLERANCE), preset
        differences = {key: (state[key].double() - single_state[key].double()).abs().max().item()
                       for key in state if state[key].is_floating_point()}
        worst[preset] = max(differences.values())
        initial = _build(preset)[1].state_dict()
        largest_update = max((single_state[key] - initial[key]).abs().max().item() for key in differences)
        allowed = max(TOLERANCE, RELATIVE_TOLERANCE * largest_update)
        assert worst[preset] <= allowed, f"{preset}: {max(differences, key=differences.get)} differs by {worst}"
    print(f"largest weight difference, 2 processes vs 1: {worst}")


@pytest.mark.slow
def test_lightning_ddp_on_two_cpu_processes_trains_with_the_global_batch(tmp_path):
    """The command-line path: Lightning launches 2 gloo processes; the queue takes both ranks' keys each step; the
    online classifier, part of the module DDP wraps, trains beside the method."""
    overrides = [*TINY_OVERRIDES, f"output_dir={tmp_path}", "name=ddp", "method.queue_size=64",
                 "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=3",
                 "monitor.label=shape", "monitor.online_linear=true"]
    process = subprocess.run([sys.executable, "-m", "augbench.cli", "pretrain", "configs/methods/moco_v2.yaml",
                              *overrides], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-2000:]
    assert process.stdout.count("finished: encoder at") == 1  # one report, not one per process
    assert read_status(tmp_path / "ddp")["state"] == "finished"
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert int(checkpoint["state_dict"]["method.queue.filled"]) == 3 * GLOBAL_BATCH  # 2 ranks × 8 keys a step
    assert checkpoint["state_dict"]["online_classifier.weight"].shape[0] == 12  # Shapes World's shapes
