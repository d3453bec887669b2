"""The Lightning module: augmentation on the device, the method's loss, the target update."""

from __future__ import annotations

import lightning as L
import torch

from augbench.augment.views import Recipe, to_float
from augbench.methods.base import Method
from augbench.train.optim import OptimConfig, build_optimizer, build_scheduler


def step_seed(seed: int, step: int, rank: int) -> int:
    """The augmentation seed of one step on one rank: a resumed run replays the same views."""
    return (seed * 1_000_003 + step) * 1_009 + rank


class PretrainModule(L.LightningModule):
    """`batch_size` is the global batch over all devices; it sets the learning rate and the schedule."""

    def __init__(self, method: Method, recipe: Recipe, optim: OptimConfig, batch_size: int, steps_per_epoch: int,
                 seed: int, channels_last: bool = True):
        super().__init__()
        self.method, self.recipe, self.optim = method, recipe, optim
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.seed, self.channels_last = seed, channels_last
        if channels_last:
            self.method.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if self.trainer is not None and self.trainer.training:
            images = to_float(batch["image"])  # images travel as uint8 and are augmented on the device
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            generator = torch.Generator().manual_seed(step_seed(self.seed, self.global_step, self.global_rank))
            with torch.no_grad():
                batch["views"] = self.recipe(images, generator)
        return batch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.method(batch["views"])
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.global_step}")
        size = len(batch["image"])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in out.items() if k != "loss"}, batch_size=size)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        progress = self.global_step / max(1, self.trainer.estimated_stepping_batches)
        logs = self.method.update_target(progress)
        if logs:
            self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=len(batch["image"]))

    def configure_optimizers(self):
        optimizer = build_optimizer(self.method, self.optim, self.batch_size)
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, self.optim, self.steps_per_epoch, total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
