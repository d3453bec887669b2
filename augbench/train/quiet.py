"""Lightning's noise kept out of a run's output."""

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


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("💡 Tip:")


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_not_a_tip)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in LIGHTNING_NOISE:
            warnings.filterwarnings("ignore", message=message)
        yield
