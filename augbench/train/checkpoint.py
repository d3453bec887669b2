"""Checkpoints that never run code and never leave half a file, and the state a bit-exact resume needs.

- `safe_load(path)` (in the leaf `augbench.files`, which models/ reads too)
  reads any torch pickle (Lightning `.ckpt`, legacy `.pth`) with
  `torch.load(weights_only=True)`: tensors, numbers, strings and
  containers only. A pickle that asks to call anything else (the way a
  malicious checkpoint runs code) is refused with a CheckpointError naming the
  file, before anything in it executes.
- `AtomicCheckpointIO` is the Lightning checkpoint plugin of every run: it
  writes to `<name>.partial` and renames over the old file, so a crash or a
  full disk during a write leaves the previous checkpoint valid; a scheduler's
  preemption signal that arrives during the write is handled once the file is
  whole; it loads with `safe_load`.
- `rng_state()` / `restore_rng_state()` carry the Python, NumPy and torch
  (CPU and the current CUDA device's) generators through a checkpoint as
  plain tensors.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from augbench.errors import CheckpointError
from augbench.files import safe_load, write_atomic

# What a scheduler sends before it preempts or stops a job (SLURM: SIGUSR2 or SIGTERM, as submitit and Lightning
# configure it). A handler run inside torch.save (submitit's exits the process to requeue the job) surfaces from
# its zip writer as a RuntimeError, which failed the run where it should have been requeued.
PREEMPTION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


@contextmanager
def preemption_signals_deferred() -> Iterator[None]:
    """Record the preemption signals that arrive inside the block and hand each to its handler after it. Python
    runs signal handlers in the main thread only, and only it may install them: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, Any]] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append((signum, frame)))
                for signum in PREEMPTION_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum, frame in received:
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler in (signal.SIG_DFL, None):
                signal.raise_signal(signum)  # the default action, now that the file is whole


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, written by rename and read weights-only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        try:
            with preemption_signals_deferred():
                write_atomic(lambda file: torch.save(checkpoint, file), path)
        except OSError as error:
            raise CheckpointError(
                f"{path}: could not write the checkpoint ({error.strerror or error}); "
                "the previous checkpoint at this path, if any, is unchanged"
            ) from error

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return safe_load(path, map_location=map_location or "cpu")


def rng_state() -> dict[str, Any]:
    """Every global generator's state as tensors and ints, so a weights-only load can read it back."""
    numpy_kind, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": numpy_kind,
            "keys": torch.from_numpy(numpy_keys.astype(np.int64)),
            "pos": int(numpy_pos),
            "has_gauss": int(numpy_has_gauss),
            "gauss": float(numpy_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        # The generator of this process's own device only: rank 0 writes the checkpoint and every rank reads it,
        # and rank 0's copies of the other devices' generators were never drawn from, so restoring them all would
        # send ranks > 0 back to their first dropout masks. Ranks are seeded alike, so rank 0's device state is
        # what each rank's own device had reached.
        state["cuda_device"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    if not torch.cuda.is_available():
        return
    if "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"])
    elif "cuda" in state:  # an earlier version's checkpoint: every device's generator
        torch.cuda.set_rng_state_all(state["cuda"])
