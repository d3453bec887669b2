"""Lightning's noise kept out of a run's output, for the duration of a pretraining call only."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Lightning's messages about its own internals, its advertising, and choices augbench makes on purpose (the module,
# not the data module, augments batches on the device; the monitor measures on rank 0 alone, so its values need no
# cross-rank sync): none asks anything of the user, and they bury the run's own.
LIGHTNING_NOISE = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a `LightningDataModule`",
    r"It is recommended to use `self.log\('monitor/",
    # Lightning cannot see that ResumableBatchSampler's position travels in the data module's state, so it warns on
    # every mid-epoch resume that the order will not resume; it does, bit for bit (tests/train/test_resume.py).
    r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable",
)
# The loggers through which Lightning prints its tips (advertising for its cloud products).
TIP_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("💡 Tip:")


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Drop LIGHTNING_NOISE's warnings and Lightning's tips inside the block; the process's filters are as they
    were after it."""
    loggers = [logging.getLogger(name) for name in TIP_LOGGERS]
    for tip_logger in loggers:
        tip_logger.addFilter(_not_a_tip)
    try:
        with warnings.catch_warnings():
            for message in LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for tip_logger in loggers:
            tip_logger.removeFilter(_not_a_tip)
