"""`trainer.check_every_n_steps`: the NaN and collapse checks read back from the device every N steps still name
the step where the problem first appeared, and no checkpoint is written after a NaN."""

import math

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from augbench.errors import ConfigError, DivergedError
from augbench.train.checkpoint import safe_load
from augbench.train.config import load_config, read_status
from augbench.train.module import online_linear_loss
from augbench.train.pretrain import pretrain
from augbench.train.step_checks import StepChecks, resolve_check_interval
from tests.train.test_checkpoint import AtStep, _config


def poison(module):  # as a diverging run would: a weight becomes NaN, so every later loss is NaN
    with torch.no_grad():
        module.method.backbone.conv1.weight[0, 0, 0, 0] = float("nan")


class LastStep(Callback):
    """The last step whose training_step ran: where the run was stopped."""

    step = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step


def test_the_first_non_finite_loss_and_the_first_collapse_are_the_ones_reported():
    checks = StepChecks(collapse_threshold=0.01)
    for step, (loss, std) in enumerate([(1.0, 0.2), (2.0, 0.005), (math.inf, 0.001), (math.nan, 0.2)]):
        checks.record(step, torch.tensor(loss), torch.tensor(std))
    with pytest.raises(DivergedError, match=r"loss is inf at step 2; training stopped"):
        checks.read()
    healthy = StepChecks(collapse_threshold=0.01)
    logged = [healthy.record(step, torch.tensor(1.0), torch.tensor(std)) for step, std in enumerate([0.2, 0.005, 0.0])]
    assert [float(flag) for flag in logged] == [0.0, 1.0, 1.0]
    with pytest.warns(RuntimeWarning, match=r"representation collapse at step 1: embedding_std=0.005 is below"):
        healthy.read()
    healthy.read()  # warned once: a second read is silent (pytest's filter turns a warning here into a failure)


def test_the_interval_defaults_to_every_step_on_a_cpu_and_is_checked():
    assert resolve_check_interval(None, torch.device("cpu")) == 1
    assert resolve_check_interval(None, torch.device("cuda", 0)) > 1
    assert resolve_check_interval(7, torch.device("cpu")) == 7
    with pytest.raises(ConfigError, match=r"check_every_n_steps=0: must be positive"):
        load_config(overrides=["trainer.check_every_n_steps=0"])


def test_a_nan_read_back_steps_later_names_the_step_where_it_appeared(tmp_path):
    # 256 images: 16 steps an epoch, so no epoch checkpoint comes between the NaN and the check.
    config = _config(tmp_path, "late-check", "data.train_size=256", "trainer.max_steps=12",
                     "trainer.checkpoint_every_n_steps=0", "trainer.check_every_n_steps=4")
    last_step = LastStep()
    with pytest.raises(DivergedError, match=r"loss is nan at step 1; training stopped \(no checkpoint"):
        pretrain(config, callbacks=[AtStep(1, poison), last_step])
    assert last_step.step == 3  # read back on the interval's step, two steps after the NaN
    assert "at step 1" in read_status(config.run_dir)["error"]


def test_no_checkpoint_is_written_between_a_nan_and_its_check(tmp_path):
    config = _config(tmp_path, "checkpoint-guard", "data.train_size=256", "trainer.max_steps=12",
                     "trainer.checkpoint_every_n_steps=2", "trainer.check_every_n_steps=10")
    last = config.run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(DivergedError, match=rf"loss is nan at step 3; training stopped \(last good checkpoint: {last}"):
        pretrain(config, callbacks=[AtStep(3, poison)])
    checkpoint = safe_load(last)
    assert checkpoint["global_step"] == 2  # step 4's checkpoint, with NaN weights, was refused
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert sorted(path.name for path in last.parent.iterdir()) == ["last.ckpt", "step=2.ckpt"]


def test_a_nan_in_the_last_steps_stops_the_run_at_its_end(tmp_path):
    config = _config(tmp_path, "nan-at-end", "data.train_size=256", "trainer.max_steps=5",
                     "trainer.checkpoint_every_n_steps=0", "trainer.check_every_n_steps=100")
    with pytest.raises(DivergedError, match=r"loss is nan at step 4"):
        pretrain(config, callbacks=[AtStep(4, poison)])
    assert not (config.run_dir / "encoder.safetensors").exists()


def test_collapse_read_back_every_three_steps_warns_once_naming_its_first_step(tmp_path):
    config = _config(tmp_path, "collapsed", "trainer.max_steps=4", "trainer.check_every_n_steps=3",
                     "trainer.progress_bar=true")

    class CollapseTheProjector(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 1:  # from step 1 on every image maps to the same (zero) embedding
                last = [m for m in pl_module.method.projector.modules() if isinstance(m, torch.nn.Linear)][-1]
                with torch.no_grad():
                    last.weight.zero_()
                    if last.bias is not None:
                        last.bias.zero_()

    with pytest.warns(RuntimeWarning, match=r"representation collapse at step 1: embedding_std=0 is below") as warned:
        run = pretrain(config, callbacks=[CollapseTheProjector()])
    assert sum("representation collapse" in str(w.message) for w in warned) == 1
    metrics = pd.read_csv(run.directory / "logs" / "csv" / "metrics.csv")
    assert metrics["train/collapsed"].dropna().tolist()[:2] == [0.0, 1.0]
    # Images/s is measured over the first check window (steps 0-2) and logged from then on.
    rates = metrics["train/images_per_s"].dropna()
    assert len(rates) == 1 and rates.iloc[0] > 0


def test_the_online_linear_loss_masks_unlabelled_images_without_reading_a_count_back():
    logits = torch.randn(6, 4, requires_grad=True)
    targets = torch.tensor([2, -1, 0, 3, -1, 1])
    loss, logs = online_linear_loss(logits, targets)
    labelled = targets >= 0
    expected = torch.nn.functional.cross_entropy(logits[labelled], targets[labelled])
    assert torch.allclose(loss, expected) and torch.allclose(logs["loss"], expected.detach())
    expected_accuracy = (logits[labelled].argmax(dim=1) == targets[labelled]).float().mean() * 100
    assert torch.allclose(logs["acc"].float(), expected_accuracy)

    unlabelled = torch.full((6,), -1)
    loss, logs = online_linear_loss(logits, unlabelled)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and not logits.grad.any()
    assert math.isnan(logs["loss"].item()) and math.isnan(logs["acc"].item())
