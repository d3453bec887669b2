"""`augbench.pretrain(config) -> Run`: compose the pipeline and train it with Lightning.

A run lives in `output_dir/name/`:

    config.yaml           the resolved config
    status.json           {"state": "running" | "failed" | "preempted" | "finished", ...}
    .lock                 held (flock) by the process training the run; a second one is refused
    checkpoints/          one Lightning checkpoint per epoch, the latest of every
                          `trainer.checkpoint_every_n_steps` steps, and last.ckpt
    logs/csv/metrics.csv  and logs/tensorboard/: the logged losses, and with
                          `monitor.label` the kNN accuracy (monitor.py)
    encoder.safetensors   the trained backbone, written once training finished

A directory whose status is not "finished" did not finish; running the same
config again resumes it from the checkpoint with the most steps (last.ckpt,
unless a kill came between another checkpoint's write and its own). SIGTERM
(preemption) ends training after the current step, saves last.ckpt there,
marks the run "preempted" and raises PreemptedError. A checkpoint holds the
model with its EMA target and queues, the optimiser, the schedule, the RNG
states and the data order's position, so with `trainer.deterministic=true` a
run killed at any step and resumed ends with the same weights, bit for bit on
CPU, as one never interrupted. Checkpoints are written to a temporary file and
renamed, and read with `torch.load(weights_only=True)` (see checkpoint.py).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader

import augbench
from augbench.augment.ops import compile_hue_rotation
from augbench.augment.recipes import build_recipe
from augbench.config import ConfigError, to_yaml
from augbench.data import ImageDataset, load_split
from augbench.errors import DivergedError, PreemptedError
from augbench.files import RunLock, check_writable, write_atomic
from augbench.methods import build_method
from augbench.methods.base import Method
from augbench.models.backbones import build_backbone
from augbench.models.io import ENCODER_FILE, save_encoder
from augbench.train.checkpoint import AtomicCheckpointIO
from augbench.train.config import (  # noqa: F401  (re-exported: augbench.train.pretrain is where users look)
    CONFIG_FILE,
    STATUS_FILE,
    PretrainConfig,
    TrainerConfig,
    WandbConfig,
    check_runnable,
    config_changes,
    load_config,
    read_status,
    resolve_precision,
)
from augbench.train.device_data import DeviceBatches, resolve_on_device
from augbench.train.memory import keep_freed_memory
from augbench.train.module import PretrainModule
from augbench.train.monitor import ProbeMonitor
from augbench.train.sampler import ResumableBatchSampler

logger = logging.getLogger(__name__)

@dataclass
class Run:
    """A finished pretraining run: its directory, config, trained encoder (eval mode) and last logged metrics."""

    directory: Path
    config: PretrainConfig
    encoder: nn.Module
    metrics: dict[str, float]


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(lambda file: file.write(text.encode()), path)


@rank_zero_only  # under DDP every process runs pretrain(); one writes the run directory's files
def _mark(run_dir: Path, state: str, **info) -> None:
    status = {"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "augbench": augbench.__version__, **info}
    _write_atomic(run_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")


def _prepare_run_dir(config: PretrainConfig, config_yaml: str) -> Path | None:
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
        rank_zero_only(_write_atomic)(run_dir / CONFIG_FILE, config_yaml)  # with today's keys and display settings
        return newest
    run_dir.mkdir(parents=True, exist_ok=True)
    rank_zero_only(_write_atomic)(run_dir / CONFIG_FILE, config_yaml)
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


class _TrainData(L.LightningDataModule):
    """Batches from a ResumableBatchSampler; its position (global batches trained) travels in checkpoints."""

    def __init__(self, dataset: ImageDataset, batch_size: int, num_workers: int, seed: int, on_device="auto"):
        super().__init__()
        self.dataset, self.batch_size, self.num_workers, self.seed = dataset, batch_size, num_workers, seed
        self.on_device = on_device
        self.next_batch = 0

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        world = self.trainer.world_size
        if self.batch_size % world:
            raise ConfigError(f"trainer.batch_size={self.batch_size} is not divisible by the {world} processes")
        sampler = ResumableBatchSampler(len(self.dataset), self.batch_size, self.seed, self.trainer.global_rank, world)
        sampler.next_batch = self.next_batch
        device = self.trainer.strategy.root_device
        if resolve_on_device(self.on_device, self.dataset, device):
            return DeviceBatches(self.dataset, sampler, device)
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=device.type == "cuda",
            # Each new iterator draws its workers' base seed from this generator, not the global one: the global
            # generator travels in checkpoints, and a resumed run, which opens its epoch's iterator after the
            # restore, would otherwise be one draw ahead of the uninterrupted run from then on.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def state_dict(self) -> dict:
        # Without gradient accumulation one optimiser step consumes one global batch.
        return {"next_batch": self.trainer.global_step}

    def load_state_dict(self, state: dict) -> None:
        self.next_batch = state["next_batch"]


def pretrain(config: PretrainConfig | str | Path | Sequence[str | Path], overrides: Sequence[str] = (),
             callbacks: Sequence[Callback] = ()) -> Run:
    """Pretrain the encoder a config (or config files, each merged over the ones before) describes; resumes an
    unfinished run of the same config.

    `callbacks` are extra Lightning callbacks (monitoring, profiling) added to the trainer.
    """
    if not isinstance(config, PretrainConfig):
        config, _ = load_config(config, overrides)
    elif overrides:
        raise ValueError("overrides apply to a config file; edit the PretrainConfig object directly instead")
    check_runnable(config)
    check_writable(config.run_dir, "output_dir")
    # One process per run directory: under DDP the other ranks run this function too, and rank 0 holds the lock.
    lock = RunLock(config.run_dir).acquire() if rank_zero_only.rank == 0 else None
    try:
        return _pretrain(config, callbacks)
    finally:
        if lock is not None:
            lock.release()


def _pretrain(config: PretrainConfig, callbacks: Sequence[Callback]) -> Run:
    resume_from = _prepare_run_dir(config, to_yaml(config))
    run_dir = config.run_dir
    resumed = {"resumed_from": str(resume_from)} if resume_from else {}
    _mark(run_dir, "running", **resumed)
    if config.trainer.keep_freed_memory:
        keep_freed_memory()
    compile_hue_rotation(config.trainer.compile_augmentation)
    try:
        L.seed_everything(config.seed, workers=True, verbose=False)
        dataset = load_split(config.data, "train")
        if len(dataset) < config.trainer.batch_size:
            raise ConfigError(f"data: {len(dataset)} training images, fewer than trainer.batch_size="
                              f"{config.trainer.batch_size}")
        backbone = build_backbone(config.model)
        method = build_method(config.method, backbone)
        if config.monitor.enabled:
            monitor = ProbeMonitor(config.monitor, dataset, load_split(config.data, "val"), config.seed)
            callbacks = [*callbacks, monitor]
        module = PretrainModule(
            method,
            build_recipe(config.augment, dataset.image_size, config.method),
            config.optim,
            batch_size=config.trainer.batch_size,
            steps_per_epoch=len(dataset) // config.trainer.batch_size,
            seed=config.seed,
            channels_last=config.trainer.channels_last,
            collapse_threshold=config.trainer.collapse_threshold,
            compile_model=config.trainer.compile_model,
            check_every_n_steps=config.trainer.check_every_n_steps,
            **(_online_linear(config, method, dataset) if config.monitor.online_linear else {}),
        )
        data = _TrainData(dataset, config.trainer.batch_size, config.trainer.num_workers, config.seed,
                          config.data.on_device)
        with _quiet_lightning():
            trainer = _build_trainer(config, run_dir, callbacks)
            try:
                trainer.fit(module, datamodule=data, ckpt_path=resume_from)
            except DivergedError as error:
                last = run_dir / "checkpoints" / "last.ckpt"
                raise DivergedError(error.step, error.loss, str(last) if last.is_file() else None) from None
            finally:
                if config.wandb.enabled:
                    _finish_wandb(trainer)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        encoder = method.encoder().eval()
        if trainer.is_global_zero:
            save_encoder(encoder, config.model, run_dir / ENCODER_FILE, method=config.method.name, run=config.name)
    except SIGTERMException:
        # Lightning's answer to SIGTERM (preemption, `timeout`, `docker stop`) is a bare SystemExit: exit status 0,
        # as if the run had finished. _CheckpointOnSigterm has saved last.ckpt at the step the signal ended.
        last = run_dir / "checkpoints" / "last.ckpt"
        _mark(run_dir, "preempted", step=trainer.global_step, checkpoint=str(last), **resumed)
        raise PreemptedError(f"{run_dir}: stopped by SIGTERM at step {trainer.global_step}; its checkpoint is {last}, "
                        "and the same command resumes it") from None
    except BaseException as error:
        try:
            _mark(run_dir, "failed", error=f"{type(error).__name__}: {error}", **resumed)
        except OSError as status_error:  # a full or read-only disk: the error that stopped the run is the news
            logger.warning("could not record the failure in %s: %s", run_dir / STATUS_FILE, status_error)
        raise
    _mark(run_dir, "finished", metrics=metrics, steps=trainer.global_step, **resumed)
    return Run(run_dir, config, encoder, metrics)


class _CheckpointOnSigterm(Callback):
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


# Lightning's messages about its own internals, its advertising, and choices augbench makes on purpose (the module,
# not the data module, augments batches on the device; the monitor measures on rank 0 alone, so its values need no
# cross-rank sync): none asks anything of the user, and they bury the run's own.
_LIGHTNING_NOISE = (
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
def _quiet_lightning() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in _LIGHTNING_NOISE:
            warnings.filterwarnings("ignore", message=message)
        yield


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


def _online_linear(config: PretrainConfig, method: Method, train: ImageDataset) -> dict[str, Any]:
    """PretrainModule's online classifier arguments: a linear layer from the encoder's features to every class
    of the label in the training split."""
    label = config.monitor.label
    encoder = method.encoder()
    was_training = encoder.training
    with torch.no_grad():  # in eval mode, so measuring the feature width changes no BatchNorm statistic
        width = encoder.eval()(torch.zeros(2, 3, train.image_size, train.image_size)).shape[1]
    encoder.train(was_training)
    num_classes = int(train.labels[label].max()) + 1
    lr = config.monitor.online_linear_lr or (1e-3 if config.optim.name == "adamw" else 0.1)
    return {"online_classifier": nn.Linear(width, num_classes), "online_label": label, "online_lr": lr}


def _loggers(config: PretrainConfig, run_dir: Path) -> list[Logger]:
    loggers = [
        CSVLogger(run_dir, name="logs", version="csv"),
        TensorBoardLogger(run_dir, name="logs", version="tensorboard", default_hp_metric=False),
    ]
    settings = config.wandb
    if settings.enabled:
        loggers.append(WandbLogger(
            project=settings.project, entity=settings.entity, name=config.name, tags=list(settings.tags),
            offline=settings.offline, save_dir=str(run_dir / "logs"), id=_wandb_run_id(run_dir), resume="allow",
            config=OmegaConf.to_container(OmegaConf.create(to_yaml(config))),
        ))
    return loggers


def _finish_wandb(trainer: L.Trainer) -> None:
    """Close this process's W&B run, so the next run of the process (a benchmark grid's next cell) starts its own."""
    import wandb  # only with wandb.enabled, whose config check found the package

    if wandb.run is not None:
        wandb.finish(exit_code=0 if trainer.state.status == TrainerStatus.FINISHED else 1)


def _wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run: made on its first start, read back on every resume."""
    path = run_dir / "logs" / "wandb_run_id"
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    rank_zero_only(_write_atomic)(path, run_id + "\n")  # other ranks never log, so their id is not used
    return run_id


def _build_trainer(config: PretrainConfig, run_dir: Path, extra_callbacks: Sequence[Callback] = ()) -> L.Trainer:
    settings = config.trainer
    callbacks = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="epoch={epoch}",
            auto_insert_metric_name=False,
            every_n_epochs=settings.checkpoint_every_n_epochs,
            save_top_k=-1,
            save_last=True,
            enable_version_counter=False,  # both callbacks write last.ckpt: it is always the newest checkpoint
        ),
        LearningRateMonitor(logging_interval="step"),
        _CheckpointOnSigterm(run_dir / "checkpoints" / "last.ckpt"),
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
        logger=_loggers(config, run_dir),
        callbacks=[*callbacks, *extra_callbacks],
        enable_progress_bar=settings.progress_bar,
        enable_model_summary=False,
    )
