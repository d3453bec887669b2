"""On a CUDA GPU (skipped without one; benchmarks/gpu_check.sh runs these): the GPU path (split held on the device,
fused optimiser, checks read back every 25 steps) trains the CPU path's weights in fp32, and every method preset
trains there."""

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from augbench.config import shipped_config
from augbench.train.config import load_config, read_status
from augbench.train.device_data import DeviceBatches
from augbench.train.pretrain import pretrain
from augbench.train.step_checks import ACCELERATOR_CHECK_INTERVAL
from tests.conftest import TINY_OVERRIDES
from tests.train.test_pretrain import EVERY_PRESET

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")]


@pytest.fixture
def strict_fp32():
    # TF32 rounds fp32 convolutions' and products' inputs to 10 bits: fp32 is what the comparison is about.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class GpuPath(Callback):
    """Records what the GPU run trained with."""

    def on_train_start(self, trainer, pl_module):
        self.device_batches = isinstance(trainer.train_dataloader, DeviceBatches)
        self.fused = trainer.optimizers[0].defaults.get("fused")
        self.check_interval = pl_module.check_every_n_steps


def test_a_gpu_run_ends_with_the_cpu_runs_weights_in_fp32(tmp_path, strict_fp32):
    runs, path = {}, GpuPath()
    for accelerator in ("cpu", "gpu"):
        config, _ = load_config(shipped_config("methods/moco_v2.yaml"), [
            *TINY_OVERRIDES, f"output_dir={tmp_path}", f"name={accelerator}", "method.queue_size=32",
            "trainer.max_steps=4", "trainer.max_epochs=2", "trainer.precision=32-true",
            f"trainer.accelerator={accelerator}"])
        runs[accelerator] = pretrain(config, callbacks=[path] if accelerator == "gpu" else [])
    assert path.device_batches and path.fused is True and path.check_interval == ACCELERATOR_CHECK_INTERVAL
    weights = {name: load_file(run.directory / "encoder.safetensors") for name, run in runs.items()}
    assert weights["cpu"].keys() == weights["gpu"].keys()
    for key, cpu in weights["cpu"].items():
        assert torch.allclose(weights["gpu"][key], cpu, rtol=1e-3, atol=1e-4), key
    losses = [pd.read_csv(run.directory / "logs" / "csv" / "metrics.csv")["train/loss"].dropna().to_numpy()
              for run in runs.values()]
    assert len(losses[0]) == 4 and abs(losses[0] - losses[1]).max() < 1e-3


@pytest.mark.parametrize("preset", EVERY_PRESET)
def test_every_method_preset_trains_ten_steps_on_the_gpu(preset, tmp_path):
    config, _ = load_config([shipped_config(f"methods/{preset}.yaml"), shipped_config("quickstart.yaml")], [
        *TINY_OVERRIDES, f"output_dir={tmp_path}", f"name={preset}", "trainer.max_steps=10", "trainer.max_epochs=3",
        "trainer.accelerator=gpu", "trainer.precision=bf16-mixed"])
    run = pretrain(config)
    status = read_status(run.directory)
    assert status["state"] == "finished" and status["steps"] == 10
    assert torch.isfinite(torch.tensor(status["metrics"]["train/loss"]))
