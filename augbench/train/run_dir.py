"""A run directory's lifecycle: created, or reopened to resume; its status marks; its lock; its newest checkpoint.

A run lives in `output_dir/name/`:

    config.yaml           the resolved config
    status.json           {"state": "running" | "failed" | "preempted" | "finished", ...}
    .lock                 held (flock) by the process training the run; a second one is refused
    checkpoints/          the newest `trainer.keep_epoch_checkpoints` epoch checkpoints (epoch=N.ckpt), the
                          latest of every `trainer.checkpoint_every_n_steps` steps (step=N.ckpt), and last.ckpt
    logs/csv/metrics.csv  and logs/tensorboard/: the logged losses, and with
                          `monitor.label` the kNN accuracy (monitor.py)
    encoder.safetensors   the trained backbone, written once training finished

A directory whose status is not "finished" did not finish; running the same
config again resumes it from the checkpoint with the most steps (last.ckpt,
unless a kill came between another checkpoint's write and its own).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only

import augbench
from augbench.config import ConfigError
from augbench.files import RunLock, write_atomic
from augbench.train.config import CONFIG_FILE, STATUS_FILE, PretrainConfig, config_changes, read_status

logger = logging.getLogger(__name__)


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a temporary file renamed over it)."""
    write_atomic(lambda file: file.write(text.encode()), path)


@rank_zero_only  # under DDP every process runs pretrain(); one writes the run directory's files
def mark_state(run_dir: Path, state: str, **info) -> None:
    """Record the run's state in its status.json, with the time, augbench's version and `info`."""
    status = {"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "augbench": augbench.__version__, **info}
    write_text(run_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """One process per run directory: under DDP the other ranks run pretrain() too, and rank 0 holds the lock."""
    lock = RunLock(run_dir).acquire() if rank_zero_only.rank == 0 else None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def prepare_run_dir(config: PretrainConfig, config_yaml: str) -> Path | None:
    """Create or reopen the run directory; return the checkpoint to resume from, if any."""
    run_dir = config.run_dir
    status = read_status(run_dir)
    if status and status["state"] == "finished":
        raise FileExistsError(
            f"{run_dir}: holds a finished run; evaluate it with `augbench evaluate {run_dir}` "
            "or choose another name= / output_dir="
        )
    newest = newest_checkpoint(run_dir / "checkpoints")
    if (run_dir / CONFIG_FILE).is_file() and newest is not None:
        changed = config_changes(run_dir / CONFIG_FILE, config)
        if changed:
            raise ConfigError(
                f"{run_dir / CONFIG_FILE}: an unfinished run with another config is here (differs at {changed}); "
                "choose another name= to start afresh"
            )
        rank_zero_only(write_text)(run_dir / CONFIG_FILE, config_yaml)  # with today's keys and display settings
        return newest
    run_dir.mkdir(parents=True, exist_ok=True)
    rank_zero_only(write_text)(run_dir / CONFIG_FILE, config_yaml)
    return None


def newest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint of `directory` with the most optimiser steps (last.ckpt among equals), or None.

    last.ckpt is normally the newest, but a kill between a step or epoch
    checkpoint's write and last.ckpt's leaves last.ckpt behind it, or absent
    the first time. Every `.ckpt` here is whole (written by rename), so any
    may be resumed from; a file that does not load is passed over. Each is
    opened with mmap, which reads its small pickle and not its tensors.
    """
    candidates = []
    for path in directory.glob("*.ckpt") if directory.is_dir() else ():
        try:
            step = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        except Exception as error:  # torch raises several types for an unreadable file; none is resumable
            logger.warning("%s: passed over for resuming, it does not load (%s)", path, type(error).__name__)
            continue
        candidates.append((int(step), path.name == "last.ckpt", path))
    return max(candidates)[2] if candidates else None
