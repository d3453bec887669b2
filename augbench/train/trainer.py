"""The Lightning trainer of a run: its checkpoints (per epoch, per N steps, on SIGTERM), progress bar and loggers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException

from augbench.train.checkpoint import AtomicCheckpointIO
from augbench.train.config import PretrainConfig, resolve_precision
from augbench.train.loggers import build_loggers


class CheckpointOnSigterm(Callback):
    """Saves last.ckpt when SIGTERM ends training, so a preempted run resumes from the step it reached.

    Lightning raises SIGTERMException only after a whole optimiser step (the
    end of `on_advance_end`), so the state saved here is the same kind of
    step-boundary state as ModelCheckpoint's and resumes bit-exactly.
    """

    def __init__(self, path: Path):
        self.path = path

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)


class _ProgressBar(RichProgressBar):
    """Rich's bar without `v_num` (a run's logs live in fixed folders, logs/csv and logs/tensorboard, not versions),
    its values updated on check steps (`PretrainModule.check_every_n_steps`)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def _update_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning reads the bar's tensors back from the device at every update: during training, only on the
        # module's check steps, which wait for the device anyway (the bar's counter still moves every step).
        if trainer.training and not pl_module.is_check_step(trainer.global_step):
            return
        super()._update_metrics(trainer, pl_module)


def build_trainer(config: PretrainConfig, run_dir: Path, extra_callbacks: Sequence[Callback] = ()) -> L.Trainer:
    settings = config.trainer
    callbacks = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="epoch={epoch}",
            auto_insert_metric_name=False,
            every_n_epochs=settings.checkpoint_every_n_epochs,
            # The top k by epoch are the k newest: Lightning deletes the oldest as it writes a new one, and its list
            # of them travels in checkpoints, so a resumed run goes on deleting the ones written before the resume.
            monitor="epoch",
            mode="max",
            save_top_k=settings.keep_epoch_checkpoints,
            save_last=True,
            enable_version_counter=False,  # both callbacks write last.ckpt: it is always the newest checkpoint
        ),
        LearningRateMonitor(logging_interval="step"),
        CheckpointOnSigterm(run_dir / "checkpoints" / "last.ckpt"),
    ]
    if settings.checkpoint_every_n_steps:
        callbacks.append(ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="step={step}",
            auto_insert_metric_name=False,
            every_n_train_steps=settings.checkpoint_every_n_steps,
            save_top_k=1,  # the latest only: epoch checkpoints are the ones kept
            save_last=True,
            enable_version_counter=False,
        ))
    if settings.progress_bar:
        callbacks.append(_ProgressBar())
    return L.Trainer(
        default_root_dir=run_dir,
        max_epochs=settings.max_epochs,
        max_steps=settings.max_steps,
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=settings.strategy,
        sync_batchnorm=settings.sync_batchnorm,
        use_distributed_sampler=False,  # ResumableBatchSampler shards the global batch over ranks itself
        plugins=[AtomicCheckpointIO()],
        precision=resolve_precision(settings.precision, settings.accelerator),
        deterministic=settings.deterministic,
        log_every_n_steps=settings.log_every_n_steps,
        logger=build_loggers(config, run_dir),
        callbacks=[*callbacks, *extra_callbacks],
        enable_progress_bar=settings.progress_bar,
        enable_model_summary=False,
    )
