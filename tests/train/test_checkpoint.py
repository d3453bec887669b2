"""Checkpoints never run code, survive a full disk, and bad training states stop or warn with their step named."""

import csv
import errno
import json
import os
import signal

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from augbench.config import shipped_config
from augbench.errors import CheckpointError, DivergedError
from augbench.models.io import load_encoder
from augbench.train.checkpoint import AtomicCheckpointIO, restore_rng_state, rng_state, safe_load
from augbench.train.config import load_config, read_status
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES


class RunsCodeWhenUnpickled:
    """What a malicious checkpoint holds: unpickling it calls exec, which writes `target`."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return exec, (f"open({self.target!r}, 'w').write('code ran')",)


def _config(tmp_path, name: str, *extra: str):
    overrides = [*TINY_OVERRIDES, f"output_dir={tmp_path}", f"name={name}", "method.queue_size=32", *extra]
    return load_config(shipped_config("methods/moco_v2.yaml"), overrides)[0]


class AtStep(Callback):
    """Calls `action(pl_module)` once `step` optimiser steps are done (before that step's checkpoint)."""

    def __init__(self, step: int, action):
        self.step, self.action = step, action

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.action(pl_module)


@pytest.mark.parametrize("suffix", [".ckpt", ".pth"])
def test_a_pickle_that_runs_code_is_refused_before_it_runs(tmp_path, suffix):
    target = tmp_path / "written_by_the_checkpoint.txt"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    malicious = tmp_path / "run" / "checkpoints" / f"last{suffix}"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": RunsCodeWhenUnpickled(target)}, malicious)
    refused = rf"{malicious}: refused to load as a weights-only checkpoint: it asks for .*GLOBAL exec"
    with pytest.raises(CheckpointError, match=refused):
        safe_load(malicious)
    with pytest.raises(CheckpointError, match=rf"{malicious}: refused"):
        load_encoder(malicious)  # refused before the missing config.yaml is even noticed
    with pytest.raises(CheckpointError, match=rf"{malicious}: refused"):
        AtomicCheckpointIO().load_checkpoint(malicious)  # the path `trainer.fit(ckpt_path=...)` takes
    assert not target.exists()
    torch.load(malicious, weights_only=False)  # the file really is live: an unsafe load runs it
    assert target.read_text() == "code ran"


def test_a_pickle_calling_a_shell_command_is_refused_naming_the_global_not_torch_s_advice(tmp_path):
    from tests.bad_inputs.inputs import malicious_checkpoint

    witness = tmp_path / "witness"
    malicious = malicious_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", witness)
    with pytest.raises(CheckpointError) as refused:
        safe_load(malicious)
    message = str(refused.value)
    assert message.startswith(f"{malicious}: refused to load as a weights-only checkpoint: it asks for GLOBAL "
                              "posix.system, which is neither a tensor nor plain data")
    assert "\n" not in message and "Re-running" not in message and "will likely succeed" not in message
    assert not witness.exists()


# torch's weights-only refusals as releases worded them: the reason after "WeightsUnpickler error:" (2.6), or on a
# line of its own after the advice (2.14), always beside the advice to re-run with weights_only=False.
_ADVICE = ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument in "
           "`torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set to `False` will "
           "likely succeed, but it can result in arbitrary code execution. Do it only if you got the file from a "
           "trusted source.")
_DOCS = "Check the documentation of torch.load to learn more about types accepted by default with weights_only."


@pytest.mark.parametrize(("text", "reason"), [
    (f"{_ADVICE}\n\n\nTrying to load unsupported GLOBAL posix.system whose module posix is blocked.\n\n{_DOCS}",
     "it asks for GLOBAL posix.system,"),
    (f"{_ADVICE}\n(2) Alternatively...\n\tWeightsUnpickler error: Unsupported global: GLOBAL builtins.exec was not an "
     f"allowed global by default. Please use `torch.serialization.add_safe_globals([exec])`.\n\n{_DOCS}",
     "it asks for GLOBAL builtins.exec,"),
    (f"{_ADVICE}\nPlease file an issue: WeightsUnpickler error: \n\nUnsupported operand 149\n\n{_DOCS}",
     "it holds something other than tensors and plain data (Unsupported operand 149)"),
    (f"{_ADVICE}\n\nSomething torch will say one day.\n\n{_DOCS}",
     "UnpicklingError: Something torch will say one day."),
])
def test_the_reason_is_found_in_any_torch_wording_and_the_advice_left_out(text, reason):
    import pickle

    from augbench.errors import weights_only_reason

    found = weights_only_reason(pickle.UnpicklingError(text))
    assert found.startswith(reason) and "Re-running" not in found and "weights_only" not in found


def test_truncated_and_missing_checkpoints_name_the_path(tmp_path):
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.arange(1000.0)}}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=rf"{truncated}: refused to load"):
        safe_load(truncated)
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'absent.ckpt'}: checkpoint not found"):
        safe_load(tmp_path / "absent.ckpt")
    assert torch.equal(safe_load(whole)["state_dict"]["w"], torch.arange(1000.0))


def test_a_full_disk_during_a_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def disk_full(obj, file):
        file.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=rf"{path}: could not write the checkpoint \(No space left on device\)"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    previous = io.load_checkpoint(path)
    assert previous["global_step"] == 1 and torch.equal(previous["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no partial file left behind


def test_a_run_whose_disk_fills_fails_and_its_last_checkpoint_still_resumes(tmp_path, monkeypatch):
    config = _config(tmp_path, "disk_full", "trainer.max_steps=3", "trainer.checkpoint_every_n_steps=1")

    def fill_the_disk(module):
        def disk_full(obj, file):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(torch, "save", disk_full)

    with pytest.raises(CheckpointError, match="No space left on device"):
        pretrain(config, callbacks=[AtStep(2, fill_the_disk)])
    monkeypatch.undo()
    assert read_status(config.run_dir)["state"] == "failed"
    last = config.run_dir / "checkpoints" / "last.ckpt"
    assert safe_load(last)["global_step"] == 1
    assert not list(config.run_dir.rglob("*.partial"))
    resumed = pretrain(config)
    assert read_status(resumed.directory)["state"] == "finished" and read_status(resumed.directory)["steps"] == 3


class SignalsWhilePickled:
    """Sends this process `signum` while torch.save pickles it: a preemption arriving in the middle of a write."""

    def __init__(self, signum: int):
        self.signum = signum

    def __reduce__(self):
        os.kill(os.getpid(), self.signum)
        return int, (7,)


class RequeuedError(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="SLURM's preemption signal is POSIX's SIGUSR2")
def test_a_preemption_signal_during_a_checkpoint_write_is_handled_once_the_file_is_whole(tmp_path):
    handled = []

    def requeue(signum, frame):  # as submitit's: it leaves the process to requeue the job
        handled.append((signum, (tmp_path / "last.ckpt").is_file()))
        raise RequeuedError

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(RequeuedError):
            AtomicCheckpointIO().save_checkpoint({"step": SignalsWhilePickled(signal.SIGUSR2)}, tmp_path / "last.ckpt")
        assert signal.getsignal(signal.SIGUSR2) is requeue
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert handled == [(signal.SIGUSR2, True)]  # after the write, not inside it
    assert torch.load(tmp_path / "last.ckpt", weights_only=False) == {"step": 7}  # whole (our own pickle)


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    import random

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.save(state, tmp_path / "rng.pt")
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng_state(safe_load(tmp_path / "rng.pt"))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_each_rank_restores_only_its_own_cuda_generator(monkeypatch):
    """Two GPUs, one per rank, emulated at torch.cuda's state functions (no GPU here): rank 0 saves, rank 1
    resumes. Rank 1's device gets the state rank 0's device had reached, and no other generator is touched."""
    generators = {0: torch.tensor([10], dtype=torch.uint8), 1: torch.tensor([0], dtype=torch.uint8)}
    current = {"device": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": generators[current["device"]].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device="cuda": generators.__setitem__(current["device"], state.clone()))
    saved = rng_state()
    generators[0] = torch.tensor([11], dtype=torch.uint8)  # rank 0 draws on after the save
    current["device"] = 1
    restore_rng_state(saved)
    assert generators == {0: torch.tensor([11], dtype=torch.uint8), 1: torch.tensor([10], dtype=torch.uint8)}


def test_a_nan_loss_stops_the_run_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    config = _config(tmp_path, "diverged", "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2")

    def poison(module):  # as a diverging run would: a weight becomes NaN, so the next loss is NaN
        with torch.no_grad():
            module.method.backbone.conv1.weight[0, 0, 0, 0] = float("nan")

    last = config.run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(DivergedError, match=rf"loss is nan at step 3; training stopped \(last good checkpoint: {last}"):
        pretrain(config, callbacks=[AtStep(3, poison)])
    status = read_status(config.run_dir)
    assert status["state"] == "failed" and "at step 3" in status["error"] and str(last) in status["error"]
    checkpoint = safe_load(last)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert not (config.run_dir / "encoder.safetensors").exists()


def test_representation_collapse_warns_once_and_is_logged(tmp_path):
    config = _config(tmp_path, "collapsed", "trainer.max_steps=2")

    class CollapseTheProjector(Callback):
        def on_train_start(self, trainer, pl_module):  # every image then maps to the same (zero) embedding
            last = [m for m in pl_module.method.projector.modules() if isinstance(m, nn.Linear)][-1]
            with torch.no_grad():
                last.weight.zero_()
                if last.bias is not None:
                    last.bias.zero_()

    with pytest.warns(RuntimeWarning, match=r"representation collapse at step 0: embedding_std=0 is below "
                                            r"trainer.collapse_threshold=0.01") as warned:
        pretrain(config, callbacks=[CollapseTheProjector()])
    assert sum("representation collapse" in str(w.message) for w in warned) == 1
    with open(config.run_dir / "logs" / "csv" / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/collapsed")]
    assert rows and float(rows[0]["train/collapsed"]) == 1.0


def test_a_healthy_run_does_not_warn_of_collapse(tmp_path, recwarn):
    run = pretrain(_config(tmp_path, "healthy"))
    assert not [w for w in recwarn if "representation collapse" in str(w.message)]
    assert json.loads((run.directory / "status.json").read_text())["state"] == "finished"
