"""`data.on_device`: batches gathered from the split held on the training device are the DataLoader's, image for
image, through resume and sharding, so a run trains the same weights either way."""

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from augbench.config import shipped_config
from augbench.errors import ConfigError
from augbench.train.config import load_config
from augbench.train.device_data import DeviceBatches, resolve_on_device
from augbench.train.pretrain import pretrain
from augbench.train.sampler import ResumableBatchSampler
from tests.conftest import TINY_OVERRIDES
from tests.train.test_resume import RESUME_OVERRIDES, StopAtStep, _assert_identical, _final_state


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield  # Lightning's deterministic=True switches torch's global flag on and leaves it on
    torch.use_deterministic_algorithms(False)


def _loader_batches(dataset, sampler) -> list[dict]:
    return list(DataLoader(dataset, batch_sampler=sampler))


@pytest.mark.parametrize(("next_batch", "rank"), [(0, 0), (3, 1)])
def test_device_batches_are_the_dataloaders_from_any_position_on_any_rank(tiny_shapes, next_batch, rank):
    samplers = [ResumableBatchSampler(len(tiny_shapes), 16, seed=5, rank=rank, world_size=2) for _ in range(2)]
    for sampler in samplers:
        sampler.next_batch = next_batch
    device_batches = DeviceBatches(tiny_shapes, samplers[0], torch.device("cpu"))
    assert len(device_batches) == len(samplers[1]) == 4
    for _ in range(2):  # to the end of the position's epoch, then the whole next epoch in its own order
        ours, theirs = list(device_batches), _loader_batches(tiny_shapes, samplers[1])
        assert len(ours) == len(theirs) > 0
        for mine, reference in zip(ours, theirs, strict=True):
            assert mine["image"].dtype == torch.uint8 and torch.equal(mine["image"], reference["image"])
            assert mine["labels"].keys() == reference["labels"].keys()
            for name, values in reference["labels"].items():
                assert mine["labels"][name].dtype == values.dtype and torch.equal(mine["labels"][name], values)
    assert samplers[0].next_batch == samplers[1].next_batch == 8


def test_auto_keeps_the_dataloader_on_a_cpu_and_true_refuses_a_lazy_split(tiny_shapes):
    cpu = torch.device("cpu")
    assert resolve_on_device("auto", tiny_shapes, cpu) is False
    assert resolve_on_device(True, tiny_shapes, cpu) is True
    assert resolve_on_device(False, tiny_shapes, cpu) is False

    class LazySplit:  # what resolve_on_device sees of a LazyImageDataset: not an ImageDataset
        name, split = "cifar10", "train"

    assert resolve_on_device("auto", LazySplit(), cpu) is False
    with pytest.raises(ConfigError, match=r"data.on_device=true: cifar10/train is read lazily \(data.lazy=true\)"):
        resolve_on_device(True, LazySplit(), cpu)


@pytest.mark.parametrize("value", ["sometimes", "1", "'true'"])
def test_a_bad_on_device_value_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"data.on_device=.*expected auto, true or false"):
        load_config(shipped_config("methods/moco_v2.yaml"), [f"data.on_device={value}"])


class FirstBatch(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            self.images = batch["image"].clone()
            self.views = [view.images.clone() for view in batch["views"]]


def _config(tmp_path, name: str, on_device: bool):
    overrides = [*RESUME_OVERRIDES, f"output_dir={tmp_path}", f"name={name}",
                 f"data.on_device={str(on_device).lower()}"]
    return load_config(shipped_config("methods/moco_v2.yaml"), overrides)[0]


def test_a_run_on_device_trains_as_the_dataloader_run_and_resumes_bit_exactly(tmp_path):
    first = {key: FirstBatch() for key in ("loader", "device")}
    reference = pretrain(_config(tmp_path, "loader", on_device=False), callbacks=[first["loader"]])
    on_device = pretrain(_config(tmp_path, "device", on_device=True), callbacks=[first["device"]])
    assert torch.equal(first["device"].images, first["loader"].images)
    for ours, theirs in zip(first["device"].views, first["loader"].views, strict=True):
        assert torch.equal(ours, theirs)
    losses = [pd.read_csv(run.directory / "logs" / "csv" / "metrics.csv")["train/loss"].dropna().to_numpy()
              for run in (on_device, reference)]
    assert len(losses[0]) == 8 and (losses[0] == losses[1]).all()
    _assert_identical(_final_state(on_device.directory), _final_state(reference.directory))

    # Stopped mid-epoch 1 and resumed: the device path restarts from the checkpoint's position as the sampler does.
    config = _config(tmp_path, "device-resumed", on_device=True)
    with pytest.raises(RuntimeError, match="stopped at step 7"):
        pretrain(config, callbacks=[StopAtStep(7, kill=False)])
    resumed = pretrain(config)
    _assert_identical(_final_state(resumed.directory), _final_state(reference.directory))


def test_tiny_overrides_run_on_device_with_the_online_classifier(tmp_path):
    # The online classifier reads a label from the batch: the labels come from the device copy too.
    config, _ = load_config(shipped_config("methods/moco_v2.yaml"), [
        *TINY_OVERRIDES, f"output_dir={tmp_path}", "name=online", "method.queue_size=32", "data.on_device=true",
        "monitor.label=shape", "monitor.knn=false", "monitor.online_linear=true"])
    run = pretrain(config)
    metrics = pd.read_csv(run.directory / "logs" / "csv" / "metrics.csv")
    accuracy = metrics["train/online_linear_acc"].dropna()
    assert len(accuracy) == 2 and ((accuracy >= 0) & (accuracy <= 100)).all()
