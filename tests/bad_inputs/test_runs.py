"""Runs under signals, full or read-only disks, a second process, and kills mid-write (docs/failures.md, "Runs").

Every fault here is real: SIGTERM is sent to a training process, a full disk
is a tmpfs filled to the brim (or /dev/full, which answers every write with
ENOSPC), a read-only place is a directory the kernel refuses to write
(/sys, or a read-only bind mount), a lock is held by another process.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from augbench.analysis.store import ResultsStore
from augbench.cli import main
from augbench.config import shipped_config
from augbench.errors import PreemptedError
from augbench.files import RunLock, StorageError, write_atomic
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.io import save_encoder
from augbench.train.checkpoint import AtomicCheckpointIO, CheckpointError, safe_load
from augbench.train.config import ACCELERATORS, PRECISIONS, load_config, read_status
from augbench.train.pretrain import pretrain
from augbench.train.run_dir import newest_checkpoint
from tests.conftest import REPO, TINY_OVERRIDES
from tests.test_benchmark import TASK, TINY_PRETRAIN

MOCO = str(shipped_config("methods/moco_v2.yaml"))
# 64 images in batches of 16: 4 steps an epoch; a step checkpoint after every step.
RUN = [*TINY_OVERRIDES, "method.queue_size=48", "trainer.checkpoint_every_n_steps=1", "trainer.deterministic=true"]
# A run long enough to be stopped part-way from outside.
LONG = [*RUN, "trainer.max_steps=2000", "trainer.max_epochs=1000"]
UNWRITABLE = Path("/sys/augbench-unwritable")  # sysfs: even root cannot create a file there


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield  # Lightning's deterministic=True switches torch's global flag on and leaves it on
    torch.use_deterministic_algorithms(False)


def _config(tmp_path, name, *overrides):
    return load_config(MOCO, [*RUN, f"output_dir={tmp_path}", f"name={name}", *overrides])[0]


def _encoder_tensors(run_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "encoder.safetensors")


def _cli(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "augbench.cli", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(condition: typing.Callable[[], bool], process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the process ended (status {process.returncode}) before the awaited point:\n"
                        f"{process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the process")
        time.sleep(0.05)


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# The bad inputs of this file that the command line refuses at once, and the message each must produce.
# (argv, the message's regex); {tmp} is the test's tmp_path, {file} a regular file in it, {run} a run directory.
REFUSED = [
    (["pretrain", "{tmp}/missing.yaml"], r"{tmp}/missing.yaml: config file not found"),
    (["pretrain", MOCO, "trainer.precision=fp8"],
     r"trainer: precision='fp8' is not a precision Lightning knows; accepted: auto, 32-true, bf16-mixed"),
    (["pretrain", MOCO, "model.name=resnet999"],
     r"model: name='resnet999' is unknown; accepted: resnet18, resnet34, resnet50, resnet101"),
    (["pretrain", MOCO, "trainer.accelerator=quantum"],
     r"trainer: accelerator='quantum' is not an accelerator Lightning knows; accepted: auto, cpu, gpu"),
    pytest.param(["pretrain", MOCO, "trainer.accelerator=gpu"],
                 r"trainer.accelerator=gpu: this machine has no CUDA GPU that torch can use; accepted here: auto, cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    pytest.param(["evaluate", "{run}", "--device", "cuda"],
                 r"--device cuda: this machine has no CUDA GPU that torch can use; accepted here: cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    (["evaluate", "{run}", "--device", "cuda:99"], r"--device cuda:99: this machine has (no CUDA GPU|\d+ CUDA)"),
    (["pretrain", MOCO, f"output_dir={UNWRITABLE}"], rf"{UNWRITABLE}/pretrain: cannot write here \(.+\); choose "
     "another output_dir"),
    (["pretrain", MOCO, "output_dir={file}/runs"], r"{file}/runs/pretrain: {file} is a file, not a directory"),
    (["data", "shapes_world", "--output", f"{UNWRITABLE}/grid.png", "train_size=16"],
     rf"{UNWRITABLE}: cannot write here \(.+\); choose another --output"),
    (["export", "{run}", "--format", "torchvision", "--output", f"{UNWRITABLE}/backbone.pth"],
     rf"{UNWRITABLE}: cannot write here \(.+\); choose another --output"),
    (["evaluate", "{run}", "--output", f"{UNWRITABLE}/results.csv"],
     rf"{UNWRITABLE}: cannot write here \(.+\); choose another --output"),
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory holding an exportable encoder (ResNet-18, ImageNet stem, width 1)."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    config = BackboneConfig(cifar_stem=False)
    save_encoder(build_backbone(config), config, run / "encoder.safetensors")
    return run


@pytest.mark.parametrize(("argv", "message"), REFUSED)
def test_each_bad_input_is_one_line_naming_it_with_exit_2(argv, message, tmp_path, tiny_run, capsys):
    file = tmp_path / "a_file"
    file.write_text("")
    fill = {"{tmp}": str(tmp_path), "{file}": str(file), "{run}": str(tiny_run)}
    for key, value in fill.items():
        argv = [word.replace(key, value) for word in argv]
        message = message.replace(key, value)
    assert main(argv) == 2
    out = capsys.readouterr().out
    lines = _error_lines(out)
    assert len(lines) == 1 and "Traceback" not in out, out
    assert __import__("re").search(message, lines[0]), lines[0]


def test_the_accepted_precisions_and_accelerators_are_lightnings():
    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry

    groups = typing.get_args(_PRECISION_INPUT)
    lightning_precisions = {str(value) for group in groups for value in typing.get_args(group)}
    assert set(PRECISIONS) == lightning_precisions | {"auto"}
    assert set(ACCELERATORS) == set(AcceleratorRegistry.available_accelerators()) | {"auto", "gpu"}


def test_a_config_error_answers_without_importing_lightning(tmp_path):
    script = (
        "import sys; from augbench.cli import main; "
        f"codes = [main(['pretrain', '{tmp_path}/missing.yaml']), "
        f"main(['pretrain', '{MOCO}', 'trainer.precision=fp8']), "
        f"main(['pretrain', '{MOCO}', 'model.name=resnet999', '--print-config']), "
        f"main(['benchmark', '{tmp_path}/missing_benchmark.yaml'])]; "
        "print('exit', codes, 'lightning imported:', any(m.split('.')[0] == 'lightning' for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert "missing.yaml: config file not found" in result.stdout, result.stdout + result.stderr
    assert "exit [2, 2, 2, 2] lightning imported: False" in result.stdout, result.stdout + result.stderr
    # The command itself: exit 2 and the one line.
    result = subprocess.run([sys.executable, "-m", "augbench.cli", "pretrain", str(tmp_path / "missing.yaml")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and _error_lines(result.stdout) == [
        f"error: {tmp_path}/missing.yaml: config file not found"], result.stdout + result.stderr


# --- SIGTERM -------------------------------------------------------------------------------------------------


class SigtermAt(Callback):
    """Sends this process a real SIGTERM once `step` optimiser steps are done (Lightning's handler catches it)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_exits_143_marks_the_run_preempted_and_it_resumes(tmp_path):
    process = _cli("pretrain", MOCO, *LONG, f"output_dir={tmp_path}", "name=preempted")
    checkpoints = tmp_path / "preempted" / "checkpoints"
    _wait_for(lambda: any(checkpoints.glob("step=*.ckpt")), process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 143, output[-3000:]
    assert "Traceback" not in output
    status = read_status(tmp_path / "preempted")
    assert status["state"] == "preempted", status
    assert _error_lines(output) == [f"error: {tmp_path / 'preempted'}: stopped by SIGTERM at step {status['step']}; "
                                    f"its checkpoint is {checkpoints / 'last.ckpt'}, and the same command resumes it"]
    last = safe_load(checkpoints / "last.ckpt")
    assert last["global_step"] == status["step"] >= 1  # saved at the step the signal ended, not an earlier one
    assert newest_checkpoint(checkpoints) == checkpoints / "last.ckpt"


def test_a_run_stopped_by_sigterm_resumes_bit_exactly_and_quietly(tmp_path, recwarn):
    """In-process: SIGTERM after step 2 of a 4-step epoch; the resumed run equals one never stopped."""
    reference = pretrain(_config(tmp_path, "reference", "trainer.max_steps=4"))
    config = _config(tmp_path, "stopped", "trainer.max_steps=4")
    with pytest.raises(PreemptedError, match="stopped by SIGTERM at step 2"):
        pretrain(config, callbacks=[SigtermAt(2)])
    assert read_status(config.run_dir)["state"] == "preempted"
    assert safe_load(config.run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2
    recwarn.clear()
    resumed = pretrain(config)
    assert read_status(resumed.directory)["resumed_from"].endswith("last.ckpt")
    ours, theirs = _encoder_tensors(resumed.directory), _encoder_tensors(reference.directory)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # Resuming mid-epoch is exact (ResumableBatchSampler); Lightning's warning that it is not stays out.
    assert not [w for w in recwarn if "dataloader is not resumable" in str(w.message)]


@pytest.mark.slow
def test_sigterm_stops_a_benchmark_with_143_and_hands_its_cell_back(tmp_path):
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(TASK))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"name": "tiny", "tasks": ["task.yaml"], "knn": {"k": 5}}))
    long_run = {**TINY_PRETRAIN, "trainer": {**TINY_PRETRAIN["trainer"], "max_steps": 2000, "max_epochs": 1000,
                                             "checkpoint_every_n_steps": 1}}
    benchmark = {"name": "tiny", "output_dir": str(tmp_path / "bench"), "methods": {"moco_v2": {}},
                 "datasets": {"flat": {"name": "shapes_world", "train_size": 64, "val_size": 16, "test_size": 16}},
                 "seeds": [0], "suites": ["tiny.yaml"], "pretrain": long_run, "reference_task": "shape",
                 "random_baseline": False}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(benchmark))
    process = _cli("benchmark", str(tmp_path / "bench.yaml"))
    run_dir = tmp_path / "bench" / "runs" / "moco_v2__flat__seed0"
    _wait_for(lambda: any((run_dir / "checkpoints").glob("step=*.ckpt")), process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 143, output[-3000:]
    assert read_status(run_dir)["state"] == "preempted"
    with ResultsStore(tmp_path / "bench" / "results.sqlite") as store:
        cells = store.table("cells")
    assert cells["state"].tolist() == ["pending"] and cells["owner"].isna().all()  # not failed: the next run takes it


# --- Full disk ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs: a disk that really fills."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip("mounting a tmpfs needs root; test_a_full_disk_writing_the_encoder covers ENOSPC without it")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk: Path, leave: int) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as file:
        file.write(b"\0" * (shutil.disk_usage(disk).free - leave))
    return filler


class FillDiskAt(Callback):
    """Fills the disk once `step` steps are done, before that step's checkpoint is written."""

    def __init__(self, step: int, disk: Path, leave: int):
        self.step, self.disk, self.leave = step, disk, leave

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            _fill(self.disk, self.leave)


def test_a_checkpoint_write_that_fills_the_disk_names_the_path_and_the_real_error(small_disk):
    """torch's writer fails part-way ("enforce fail ... unexpected pos"); the OS's ENOSPC is what is reported."""
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "w": torch.ones(100_000)}, small_disk / "last.ckpt")
    _fill(small_disk, leave=64 * 1024)
    with pytest.raises(CheckpointError) as raised:
        io.save_checkpoint({"global_step": 2, "w": torch.ones(700_000)}, small_disk / "step=2.ckpt")
    assert str(raised.value) == (f"{small_disk / 'step=2.ckpt'}: could not write the checkpoint (No space left on "
                                 "device); the previous checkpoint at this path, if any, is unchanged")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "last.ckpt"]
    assert io.load_checkpoint(small_disk / "last.ckpt")["global_step"] == 1


@pytest.mark.slow
def test_a_disk_that_fills_during_a_run_names_the_path_and_the_real_error(small_disk):
    config = _config(small_disk, "full", "trainer.max_steps=3")
    checkpoints = config.run_dir / "checkpoints"
    # Room for the first writes of the checkpoint, not for all of it: torch's writer fails part-way.
    with pytest.raises(CheckpointError) as raised:
        pretrain(config, callbacks=[FillDiskAt(2, small_disk, leave=64 * 1024)])
    assert str(raised.value).startswith(f"{checkpoints / 'step=2.ckpt'}: could not write the checkpoint "
                                        "(No space left on device)")
    status = read_status(config.run_dir)
    assert status["state"] == "failed" and "No space left on device" in status["error"], status
    assert "enforce fail" not in status["error"]
    assert safe_load(checkpoints / "last.ckpt")["global_step"] == 1  # the previous checkpoint is whole
    assert not list(config.run_dir.rglob("*.partial"))
    (small_disk / "filler").unlink()
    assert read_status(pretrain(config).directory)["steps"] == 3


def test_a_full_disk_writing_the_encoder_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "encoder_full"
    run_dir.mkdir()
    # /dev/full answers every write with ENOSPC: the encoder's partial file is written there.
    (run_dir / "encoder.safetensors.partial").symlink_to("/dev/full")
    argv = ["pretrain", MOCO, *RUN, f"output_dir={tmp_path}", "name=encoder_full"]
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert _error_lines(out) == [f"error: {run_dir / 'encoder.safetensors'}: could not write the encoder (No space "
                                 "left on device); an earlier file at this path, if any, is unchanged"], out
    assert read_status(run_dir)["state"] == "failed" and not (run_dir / "encoder.safetensors").exists()
    assert main(argv) == 0  # the symlink went with the failed write; the run resumes at its end and writes it
    assert (run_dir / "encoder.safetensors").is_file()


def test_write_atomic_reports_the_os_error_not_the_writers(tmp_path):
    (tmp_path / "x.ckpt.partial").symlink_to("/dev/full")
    with pytest.raises(OSError) as raised:
        write_atomic(lambda file: torch.save({"w": torch.ones(300_000)}, file), tmp_path / "x.ckpt")
    assert raised.value.errno == errno.ENOSPC and not (tmp_path / "x.ckpt").exists()


# --- Read-only output ---------------------------------------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory on a read-only bind mount (root ignores permission bits, not a read-only mount)."""
    source, target = tmp_path / "source", tmp_path / "read_only"
    source.mkdir()
    target.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(target)], capture_output=True)
    if mounted.returncode:
        pytest.skip("a read-only bind mount needs root; the /sys cases of REFUSED cover read-only places")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=True)


def test_evaluate_to_a_read_only_place_refuses_before_computing_anything(read_only_dir, tiny_run, capsys):
    output = read_only_dir / "results.csv"
    start = time.perf_counter()
    assert main(["evaluate", str(tiny_run), "--output", str(output)]) == 2
    out = capsys.readouterr().out
    assert _error_lines(out) == [f"error: {read_only_dir}: cannot write here (Read-only file system); choose "
                                 "another --output"], out
    assert time.perf_counter() - start < 30  # the quick suite takes minutes: nothing was computed


def test_a_write_refused_by_a_read_only_place_raises_its_own_error_once(read_only_dir):
    """The cleanup of the partial file fails as the write did; the write's error is the one raised."""
    with pytest.raises(OSError) as raised:
        write_atomic(lambda file: file.write(b"records"), read_only_dir / "results.csv")
    assert raised.value.errno == errno.EROFS and raised.value.__context__ is None


def test_pretrain_into_a_read_only_place_exits_2_before_training(read_only_dir, capsys):
    assert main(["pretrain", MOCO, *RUN, f"output_dir={read_only_dir}"]) == 2
    assert _error_lines(capsys.readouterr().out) == [
        f"error: {read_only_dir}/pretrain: cannot write here (Read-only file system); choose another output_dir"]


def test_evaluate_output_dir_writes_the_default_file_in_it(tmp_path, capsys):
    """`--output DIR` used to compute the whole suite and crash at the final rename onto DIR."""
    suite = tmp_path / "one_task.yaml"
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(TASK))
    suite.write_text(yaml.safe_dump({"name": "one_task", "tasks": ["task.yaml"], "knn": {"k": 5}}))
    config = BackboneConfig(width=0.125)
    save_encoder(build_backbone(config), config, tmp_path / "run" / "encoder.safetensors")
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    assert main(["evaluate", str(tmp_path / "run"), "--suite", str(suite), "--output", str(out_dir)]) == 0
    assert (out_dir / "evaluation_one_task.csv").is_file(), capsys.readouterr().out
    from augbench.evaluate.evaluate import evaluate

    with pytest.raises(StorageError, match=rf"{out_dir}: is a directory; give the CSV file to write"):
        evaluate(tmp_path / "run", suite, output=out_dir)


# --- Kill during the first last.ckpt write ------------------------------------------------------------------


@pytest.mark.slow
def test_a_kill_during_the_first_last_ckpt_write_resumes_from_the_step_checkpoint(tmp_path):
    config = _config(tmp_path, "killed", "trainer.max_steps=3")
    checkpoints = config.run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    # last.ckpt is written to last.ckpt.partial, then renamed. A FIFO there blocks the writer until this test
    # reads; the process is killed once it has written part of the file.
    fifo = checkpoints / "last.ckpt.partial"
    os.mkfifo(fifo)
    process = _cli("pretrain", MOCO, *RUN, "trainer.max_steps=3", f"output_dir={tmp_path}", "name=killed")
    written = []

    def read_part():
        with open(fifo, "rb") as reader:
            written.append(reader.read(4096))
            process.kill()

    reader = threading.Thread(target=read_part, daemon=True)
    reader.start()
    reader.join(timeout=600)
    if reader.is_alive():
        process.kill()
        pytest.fail(f"the run never wrote last.ckpt:\n{process.communicate()[0][-3000:]}")
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL and written[0]
    fifo.unlink()
    (checkpoints / "last.ckpt.partial").write_bytes(written[0])  # what a kill mid-write leaves on a disk
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt.partial", "step=1.ckpt"]
    assert read_status(config.run_dir)["state"] == "running"

    resumed = pretrain(config)
    status = read_status(resumed.directory)
    assert status["resumed_from"] == str(checkpoints / "step=1.ckpt") and status["steps"] == 3
    reference = pretrain(_config(tmp_path, "reference", "trainer.max_steps=3"))
    ours, theirs = _encoder_tensors(resumed.directory), _encoder_tensors(reference.directory)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_the_newest_checkpoint_is_the_one_with_most_steps(tmp_path):
    for name, step in (("last.ckpt", 4), ("step=6.ckpt", 6), ("epoch=0.ckpt", 4)):
        torch.save({"global_step": step}, tmp_path / name)
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    assert newest_checkpoint(tmp_path) == tmp_path / "step=6.ckpt"
    (tmp_path / "step=6.ckpt").unlink()
    assert newest_checkpoint(tmp_path) == tmp_path / "last.ckpt"  # among equals, last.ckpt
    assert newest_checkpoint(tmp_path / "absent") is None


# --- Two processes, one run ---------------------------------------------------------------------------------


def test_a_second_process_on_a_run_directory_exits_2_naming_the_holder(tmp_path, capsys):
    run_dir = tmp_path / "shared"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; from augbench.files import RunLock; lock = RunLock({str(run_dir)!r})"
         ".acquire(); print('held', flush=True); time.sleep(300)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["pretrain", MOCO, *RUN, f"output_dir={tmp_path}", "name=shared"]
        assert main(argv) == 2
        assert _error_lines(capsys.readouterr().out) == [
            f"error: {run_dir}: another augbench process (pid {holder.pid} on {os.uname().nodename}) is training "
            "this run; wait for it to end, or choose another name="]
        assert not (run_dir / "config.yaml").exists() and read_status(run_dir) is None  # it touched nothing
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock file stays, with its pid, and does not block.
    assert f"pid {holder.pid}" in (run_dir / ".lock").read_text()
    RunLock(run_dir).acquire().release()
