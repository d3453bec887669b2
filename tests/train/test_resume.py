"""A run stopped at any step and resumed from its last checkpoint ends bit-identical to one never stopped."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from augbench.config import shipped_config
from augbench.train.config import load_config, read_status
from augbench.train.pretrain import pretrain
from augbench.train.sampler import ResumableBatchSampler
from tests.conftest import REPO, TINY_OVERRIDES

# 64 images in global batches of 16: 4 steps an epoch, so 8 steps cross an epoch boundary.
RESUME_OVERRIDES = [
    *TINY_OVERRIDES,
    "method.queue_size=48",
    "trainer.max_epochs=100",
    "trainer.max_steps=8",
    "trainer.checkpoint_every_n_steps=3",
    "trainer.deterministic=true",
]


class StopAtStep(Callback):
    """Ends the process (SIGKILL) or raises once `step` optimiser steps are done, before that step's checkpoint."""

    def __init__(self, step: int, kill: bool):
        self.step, self.kill = step, kill

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"stopped at step {self.step}")


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield  # Lightning's deterministic=True switches torch's global flag on and leaves it on
    torch.use_deterministic_algorithms(False)


def _overrides(preset: str, tmp_path, name: str) -> list[str]:
    return [*RESUME_OVERRIDES, f"output_dir={tmp_path}", f"name={name}"]


def _config(preset: str, tmp_path, name: str):
    return load_config(shipped_config(f"{preset}.yaml"), _overrides(preset, tmp_path, name))[0]


def _final_state(run_dir) -> dict[str, torch.Tensor]:
    """Every tensor a resume must reproduce: model, target, queue, optimiser state, torch's global generator."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    state = dict(checkpoint["state_dict"]) | {"rng_state.torch": checkpoint["rng_state"]["torch"]}
    for group, values in checkpoint["optimizer_states"][0]["state"].items():
        state.update({f"optimizer.{group}.{key}": value for key, value in values.items()})
    state.update({f"encoder.{k}": v for k, v in load_file(run_dir / "encoder.safetensors").items()})
    return state


def _assert_identical(resumed: dict, reference: dict) -> None:
    assert resumed.keys() == reference.keys()
    different = [key for key in reference if not torch.equal(resumed[key], reference[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_the_sampler_resumes_mid_epoch_and_shards_global_batches():
    whole = ResumableBatchSampler(40, 8, seed=3)
    first_epoch = list(whole)
    seen = [index for batch in first_epoch for index in batch]
    assert len(first_epoch) == 5 and sorted(seen) == list(range(40)) != seen  # every image once, shuffled
    resumed = ResumableBatchSampler(40, 8, seed=3)
    resumed.next_batch = 2
    assert list(resumed) == first_epoch[2:]
    assert list(resumed) == list(whole) != first_epoch  # both continue with epoch 1, in a new order
    ranks = [ResumableBatchSampler(40, 8, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        assert a + b == first_epoch[step]


# The study's MoCo v2+ (fair step 06) draws the view it enqueues from the global generator the checkpoint carries.
@pytest.mark.parametrize("preset", ["methods/moco_v2", "fair/06_symmetric_loss"])
def test_a_run_stopped_mid_epoch_resumes_to_identical_weights(preset, tmp_path):
    reference = pretrain(_config(preset, tmp_path, "reference"))
    config = _config(preset, tmp_path, "stopped")
    with pytest.raises(RuntimeError, match="stopped at step 7"):
        pretrain(config, callbacks=[StopAtStep(7, kill=False)])
    assert read_status(config.run_dir)["state"] == "failed"
    stopped_at = torch.load(config.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert stopped_at["global_step"] == 6 and stopped_at["_TrainData"] == {"next_batch": 6}  # 2 into epoch 1
    assert {"python", "numpy", "torch"} <= stopped_at["rng_state"].keys()
    torch.manual_seed(12345)  # a resumed process starts from other global RNG states
    resumed = pretrain(config)
    assert read_status(resumed.directory)["resumed_from"].endswith("last.ckpt")
    _assert_identical(_final_state(resumed.directory), _final_state(reference.directory))


def test_a_run_keeps_its_newest_epoch_checkpoints_and_goes_on_deleting_older_ones_after_a_resume(tmp_path):
    # 4 steps an epoch, 3 epochs; stopped at step 10, after epochs 0 and 1, and resumed from step 9's checkpoint.
    three_epochs = ["trainer.max_steps=12"]
    reference = pretrain(load_config(shipped_config("methods/moco_v2.yaml"), [
        *_overrides("methods/moco_v2", tmp_path, "reference"), *three_epochs, "trainer.keep_epoch_checkpoints=-1"])[0])
    config = load_config(shipped_config("methods/moco_v2.yaml"), [
        *_overrides("methods/moco_v2", tmp_path, "stopped"), *three_epochs, "trainer.keep_epoch_checkpoints=2"])[0]
    with pytest.raises(RuntimeError, match="stopped at step 10"):
        pretrain(config, callbacks=[StopAtStep(10, kill=False)])
    checkpoints = config.run_dir / "checkpoints"
    assert sorted(path.name for path in checkpoints.glob("epoch=*")) == ["epoch=0.ckpt", "epoch=1.ckpt"]
    resumed = pretrain(config)
    assert sorted(path.name for path in checkpoints.glob("*.ckpt")) == [
        "epoch=1.ckpt", "epoch=2.ckpt", "last.ckpt", "step=12.ckpt"]
    assert sorted(path.name for path in (reference.directory / "checkpoints").glob("epoch=*")) == [
        "epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 12
    _assert_identical(_final_state(resumed.directory), _final_state(reference.directory))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["methods/moco_v2", "methods/byol"])
def test_a_run_killed_with_sigkill_at_several_steps_resumes_bit_exactly(preset, tmp_path):
    reference = pretrain(_config(preset, tmp_path, "reference"))
    name = "killed"
    # Killed before the first checkpoint; then after the epoch-end checkpoint of step 4; then after step 6's.
    for kill_step in (2, 5, 7):
        script = (
            "import sys; from augbench.config import shipped_config; "
            "from augbench.train.config import load_config; from augbench.train.pretrain import pretrain; "
            "from tests.train.test_resume import StopAtStep; "
            f"config, _ = load_config(shipped_config('{preset}.yaml'), sys.argv[1:]); "
            f"pretrain(config, callbacks=[StopAtStep({kill_step}, kill=True)])"
        )
        process = subprocess.run([sys.executable, "-c", script, *_overrides(preset, tmp_path, name)], cwd=REPO,
                                 capture_output=True, text=True, timeout=300)
        assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
        assert read_status(tmp_path / name)["state"] == "running"  # as a preempted job leaves it
    resumed = pretrain(_config(preset, tmp_path, name))
    _assert_identical(_final_state(resumed.directory), _final_state(reference.directory))
