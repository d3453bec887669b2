"""The training step's checks (a loss that is not finite, collapsed embeddings), recorded on the device and read
back every `trainer.check_every_n_steps` steps.

Reading a tensor on the host (`bool(tensor)`, `.item()`, `float(tensor)`)
waits for every kernel queued before it; once per step, it leaves a GPU idle
while the host prepares the next step. So each step records on the device the
first step whose loss was not finite and the first whose embeddings
collapsed, with their values, and the host reads both in one transfer on
check steps, before every checkpoint and at the end of training. A NaN still
stops the run naming the step where it first appeared, and the collapse
warning names the step where it began. With an interval of 1 (the default on
a CPU) every step is read, as before; with more, the steps between a NaN and
the next read train on, but no checkpoint is written from them.
"""

from __future__ import annotations

import warnings

import torch

from augbench.errors import DivergedError

# `trainer.check_every_n_steps: null` on an accelerator: a read-back every 25 steps costs one wait in 25, and a NaN
# is still caught within a second or two of a fast run.
ACCELERATOR_CHECK_INTERVAL = 25
_NOT_YET = -1


def resolve_check_interval(configured: int | None, device: torch.device) -> int:
    """`trainer.check_every_n_steps`, or when null, every step on a CPU (where a read-back waits for nothing) and
    every ACCELERATOR_CHECK_INTERVAL steps elsewhere."""
    if configured is not None:
        return configured
    return 1 if device.type == "cpu" else ACCELERATOR_CHECK_INTERVAL


class StepChecks:
    """`record` each step's loss and embedding std on the device; `read` raises DivergedError naming the first step
    whose loss was not finite, and warns once of collapse naming the first step whose embedding std fell below
    `collapse_threshold`."""

    def __init__(self, collapse_threshold: float):
        self.collapse_threshold = collapse_threshold
        self._first: torch.Tensor | None = None  # (4,) float64: diverged step, its loss, collapsed step, its std
        self._warned_collapse = False

    def record(self, step: int, loss: torch.Tensor, embedding_std: torch.Tensor | None) -> torch.Tensor | None:
        """Record one step; returns, for the logs, whether its embeddings collapsed (1.0 or 0.0, on the device),
        or None when the method reports no `embedding_std`."""
        loss = loss.detach().double()
        if self._first is None:
            self._first = torch.tensor([_NOT_YET, 0.0, _NOT_YET, 0.0], dtype=torch.float64, device=loss.device)
        first = self._first
        diverged = ~torch.isfinite(loss) & (first[0] == _NOT_YET)
        first[0] = torch.where(diverged, step, first[0])
        first[1] = torch.where(diverged, loss, first[1])
        if embedding_std is None:
            return None
        std = torch.as_tensor(embedding_std, device=loss.device).detach().double()
        below = std < self.collapse_threshold
        began = below & (first[2] == _NOT_YET)
        first[2] = torch.where(began, step, first[2])
        first[3] = torch.where(began, std, first[3])
        return below.float()

    def read(self) -> None:
        """Read the records back (one transfer, which waits for the device): raise or warn as the class says."""
        if self._first is None:
            return
        diverged_step, loss, collapsed_step, std = self._first.tolist()
        if diverged_step != _NOT_YET:
            raise DivergedError(int(diverged_step), loss)
        if collapsed_step != _NOT_YET and not self._warned_collapse:
            self._warned_collapse = True
            warnings.warn(
                f"representation collapse at step {int(collapsed_step)}: embedding_std={std:.3g} is below "
                f"trainer.collapse_threshold={self.collapse_threshold} (every image maps to nearly the same "
                "embedding; logged as train/collapsed)",
                RuntimeWarning,
                stacklevel=3,
            )
