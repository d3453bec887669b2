"""The Lightning module: augmentation on the device, the method's loss, the target update."""

from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from augbench.augment.views import Recipe, to_float
from augbench.methods.base import Method
from augbench.optim import OptimConfig, build_optimizer, build_scheduler
from augbench.train.checkpoint import restore_rng_state, rng_state
from augbench.train.step_checks import StepChecks, resolve_check_interval


def step_seed(seed: int, step: int, rank: int) -> int:
    """The augmentation seed of one step on one rank: a resumed run replays the same views."""
    return (seed * 1_000_003 + step) * 1_009 + rank


def compile_backbones(method: Method) -> list[nn.Module]:
    """torch.compile the forward of the method's backbone and of its momentum copies, in place; returns them.

    Inductor keeps oneDNN's or cuDNN's convolutions and fuses what lies between
    them (BatchNorm's statistics and affine map, ReLU, residual adds): passes
    over memory that take a third of a quarter-width ResNet-18's fp32 step on
    a CPU. Compiling in place keeps the modules' parameter names, so
    checkpoints and encoder files are those of an eager run. A new input shape
    or the switch to eval mode compiles again, once each.
    """
    kind = type(method.backbone)
    backbones = [module for module in method.modules() if type(module) is kind]
    for backbone in backbones:
        backbone.compile()
    return backbones


def online_linear_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The cross-entropy of `logits` (B, C) over the images whose target (B,) is a class (STL-10's unlabelled images
    carry -1), and its logs `loss` and `acc` (%), NaN for a batch without a labelled image.

    Masked rather than selected, so that no count is read back to the host; a
    batch without a label gives a loss of 0 that still reaches every
    parameter, as DDP needs.
    """
    labelled = targets >= 0
    count = labelled.sum()
    losses = F.cross_entropy(logits, targets.clamp(min=0), reduction="none").masked_fill(~labelled, 0.0)
    correct = (logits.argmax(dim=1) == targets) & labelled
    logs = {"loss": losses.detach().sum() / count, "acc": correct.sum() * 100 / count}
    return losses.sum() / count.clamp(min=1), logs


class PretrainModule(L.LightningModule):
    """`batch_size` is the global batch over all devices; it sets the learning rate and the schedule.

    `collapse_threshold`: when the method's `embedding_std` (the mean over
    dimensions of the per-dimension std of the L2-normalised embeddings; about
    1/√D when healthy, 0 when every image maps to one point) falls below it,
    training warns once and logs `train/collapsed` = 1 for each such step.
    `check_every_n_steps` (None: every step on a CPU, every 25 elsewhere) is
    how often that check and the loss's are read back from the device, and
    the progress bar's values and `train/images_per_s` with them (see
    `augbench.train.step_checks`).
    Checkpoints carry the global RNG states (Python, NumPy, torch, its CUDA device's) of rank 0.

    `compile_model`: see `compile_backbones`.

    `online_classifier` (optional) learns the label `online_label` from the
    method's detached `features` at `online_lr` (see `augbench.train.monitor`);
    its loss joins the method's in one backward pass, and since the features
    are detached its gradients reach no weight of the method. A batch without
    a labelled image (STL-10's unlabelled split) adds nothing to the loss and
    logs NaN as its accuracy and loss.
    """

    def __init__(self, method: Method, recipe: Recipe, optim: OptimConfig, batch_size: int, steps_per_epoch: int,
                 seed: int, channels_last: bool = True, collapse_threshold: float = 0.0, compile_model: bool = False,
                 online_classifier: nn.Linear | None = None, online_label: str = "", online_lr: float = 0.1,
                 check_every_n_steps: int | None = None):
        super().__init__()
        self.method, self.recipe, self.optim = method, recipe, optim
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.method.set_steps_per_epoch(steps_per_epoch)
        self.seed, self.channels_last = seed, channels_last
        self.checks = StepChecks(collapse_threshold)
        self.configured_check_interval = check_every_n_steps
        self.check_every_n_steps = check_every_n_steps or 1  # resolved for the device in on_fit_start
        self._window_started: float | None = None  # when the current images/s window began, or None
        self._window_steps = 0
        self._images_per_s: float | None = None
        self.online_classifier, self.online_label, self.online_lr = online_classifier, online_label, online_lr
        if channels_last:
            self.method.to(memory_format=torch.channels_last)
        if compile_model:
            compile_backbones(self.method)

    def on_fit_start(self) -> None:
        self.check_every_n_steps = resolve_check_interval(self.configured_check_interval, self.device)

    def is_check_step(self, steps_done: int) -> bool:
        """Whether the step that brings the run to `steps_done` optimiser steps reads the device's records back."""
        return steps_done % self.check_every_n_steps == 0

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # Images per second over the steps between two check steps, whose read-backs wait for the device (with an
        # interval of 1, from one step's start to the next): the whole step (augmentation, forward, backward,
        # optimiser, target update, logging). Between check steps the host runs ahead of the device, so a window
        # without a read-back would time the host's queueing of kernels, not the training.
        now = time.perf_counter()
        if self._window_started is not None:
            self._window_steps += 1
            if self.is_check_step(self.global_step):
                self._images_per_s = self._window_steps * self.batch_size / (now - self._window_started)
                self._window_started, self._window_steps = now, 0
        else:
            self._window_started, self._window_steps = now, 0
        if self._images_per_s is not None:
            self.log("train/images_per_s", self._images_per_s, prog_bar=True, batch_size=self.batch_size)

    def on_train_epoch_end(self) -> None:
        # The gap to the next epoch holds checkpointing and validation, not training.
        self._window_started, self._images_per_s = None, None

    def on_train_end(self) -> None:
        self.checks.read()  # the steps since the last check step

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if self.trainer is not None and self.trainer.training:
            images = to_float(batch["image"])  # images travel as uint8 and are augmented on the device
            if self.recipe.needs_foreground:
                images = torch.cat([images, batch["labels"]["foreground"][:, None].to(images.dtype)], dim=1)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            generator = torch.Generator().manual_seed(step_seed(self.seed, self.global_step, self.global_rank))
            with torch.no_grad():
                batch["views"] = self.recipe(images, generator)
        return batch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        label = self.method.label
        out = self.method(batch["views"], batch["labels"][label]) if label else self.method(batch["views"])
        features = out.pop("features", None)
        loss = out["loss"]
        collapsed = self.checks.record(self.global_step, loss, out.get("embedding_std"))
        if self.is_check_step(self.global_step + 1):
            self.checks.read()  # a NaN raises DivergedError here, before this step's backward pass
        size = len(batch["image"])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in out.items() if k != "loss"}, batch_size=size)
        if collapsed is not None:
            self.log("train/collapsed", collapsed, batch_size=size)
        if self.online_classifier is not None:
            loss = loss + self._online_linear_loss(features, batch["labels"][self.online_label], size)
        return loss

    def _online_linear_loss(self, features: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
        loss, logs = online_linear_loss(self.online_classifier(features), targets)
        self.log_dict({f"train/online_linear_{name}": value for name, value in logs.items()}, batch_size=batch_size)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.checks.read()  # no checkpoint holds weights trained after a NaN: DivergedError stops the save
        checkpoint["rng_state"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_state" in checkpoint:
            restore_rng_state(checkpoint["rng_state"])

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        # The target update belongs to the optimiser step: Lightning runs checkpoint callbacks before the
        # module's on_train_batch_end, so an update made there would be missing from that step's checkpoint.
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        steps_done = self.global_step + 1  # Lightning counts this step once the hook returns
        logs = self.method.update_target(steps_done / max(1, self.trainer.estimated_stepping_batches))
        if logs:
            self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=self.batch_size)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.method, self.optim, self.batch_size, fused=self.device.type == "cuda")
        if self.online_classifier is not None:
            # No weight decay, which under LARS also means no trust ratio: a plain (momentum) step at its own rate.
            optimizer.add_param_group({"params": list(self.online_classifier.parameters()), "lr": self.online_lr,
                                       "weight_decay": 0.0})
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, self.optim, self.steps_per_epoch, total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
