"""`augbench.pretrain(config) -> Run`: compose the pipeline and train it with Lightning.

The run directory, its status and its resuming: `run_dir.py`; the trainer,
its checkpoints and loggers: `trainer.py` and `loggers.py`; the data order:
`data.py`; the training step: `module.py`.

A run not finished resumes, when the same config runs again, from its
newest checkpoint. SIGTERM (preemption) ends training after the current
step, saves last.ckpt there, marks the run "preempted" and raises
PreemptedError. A checkpoint holds the model with its EMA target and queues,
the optimiser, the schedule, the RNG states and the data order's position, so
with `trainer.deterministic=true` a run killed at any step and resumed ends
with the same weights, bit for bit on CPU, as one never interrupted.
Checkpoints are written to a temporary file and renamed, and read with
`torch.load(weights_only=True)` (see checkpoint.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from augbench.augment.kinds import build_views
from augbench.augment.ops import compiled_hue_rotation
from augbench.config import ConfigError, to_yaml
from augbench.data import load_split
from augbench.errors import DivergedError, PreemptedError
from augbench.files import check_writable
from augbench.methods import build_method
from augbench.models.backbones import build_backbone
from augbench.models.io import ENCODER_FILE, save_encoder
from augbench.train.config import STATUS_FILE, PretrainConfig, check_runnable, load_config
from augbench.train.data import TrainData
from augbench.train.loggers import finish_wandb
from augbench.train.memory import keep_freed_memory
from augbench.train.module import PretrainModule
from augbench.train.monitor import ProbeMonitor, num_classes, online_linear
from augbench.train.quiet import quiet_lightning
from augbench.train.run_dir import mark_state, prepare_run_dir, run_dir_lock
from augbench.train.trainer import build_trainer

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """A finished pretraining run: its directory, config, trained encoder (eval mode) and last logged metrics."""

    directory: Path
    config: PretrainConfig
    encoder: nn.Module
    metrics: dict[str, float]


def pretrain(config: PretrainConfig | str | Path | Sequence[str | Path], overrides: Sequence[str] = (),
             callbacks: Sequence[Callback] = (), *, process_wide: bool = False) -> Run:
    """Pretrain the encoder a config (or config files, each merged over the ones before) describes; resumes an
    unfinished run of the same config.

    `callbacks` are extra Lightning callbacks (monitoring, profiling) added to the trainer. `process_wide` also
    applies the config's settings that act on the whole process and outlast the call (`trainer.keep_freed_memory`),
    as the command line does; without it the process is left as it was.
    """
    if not isinstance(config, PretrainConfig):
        config, _ = load_config(config, overrides)
    elif overrides:
        raise ValueError("overrides apply to a config file; edit the PretrainConfig object directly instead")
    check_runnable(config)
    check_writable(config.run_dir, "output_dir")
    with run_dir_lock(config.run_dir):
        return _pretrain(config, callbacks, process_wide)


def _pretrain(config: PretrainConfig, callbacks: Sequence[Callback], process_wide: bool) -> Run:
    resume_from = prepare_run_dir(config, to_yaml(config))
    run_dir = config.run_dir
    resumed = {"resumed_from": str(resume_from)} if resume_from else {}
    mark_state(run_dir, "running", **resumed)
    if process_wide and config.trainer.keep_freed_memory:
        keep_freed_memory()
    try:
        L.seed_everything(config.seed, workers=True, verbose=False)
        dataset = load_split(config.data, "train")
        if len(dataset) < config.trainer.batch_size:
            raise ConfigError(f"data: {len(dataset)} training images, fewer than trainer.batch_size="
                              f"{config.trainer.batch_size}")
        backbone = build_backbone(config.model)
        method = build_method(config.method, backbone, config.augment)
        if method.label is not None:
            method.set_num_classes(num_classes(dataset, method.label, "method.label"))
        if config.monitor.enabled:
            monitor = ProbeMonitor(config.monitor, dataset, load_split(config.data, "val"), config.seed)
            callbacks = [*callbacks, monitor]
        module = PretrainModule(
            method,
            build_views(config.augment, dataset.image_size, config.method),
            config.optim,
            batch_size=config.trainer.batch_size,
            steps_per_epoch=len(dataset) // config.trainer.batch_size,
            seed=config.seed,
            channels_last=config.trainer.channels_last,
            collapse_threshold=config.trainer.collapse_threshold,
            compile_model=config.trainer.compile_model,
            check_every_n_steps=config.trainer.check_every_n_steps,
            **(online_linear(config, method, dataset) if config.monitor.online_linear else {}),
        )
        data = TrainData(dataset, config.trainer.batch_size, config.trainer.num_workers, config.seed,
                         config.data.on_device)
        with quiet_lightning(), compiled_hue_rotation(config.trainer.compile_augmentation):
            trainer = build_trainer(config, run_dir, callbacks)
            try:
                trainer.fit(module, datamodule=data, ckpt_path=resume_from)
            except DivergedError as error:
                last = run_dir / "checkpoints" / "last.ckpt"
                raise DivergedError(error.step, error.loss, str(last) if last.is_file() else None) from None
            finally:
                if config.wandb.enabled:
                    finish_wandb(trainer)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        encoder = method.encoder().eval()
        if trainer.is_global_zero:
            save_encoder(encoder, config.model, run_dir / ENCODER_FILE, method=config.method.name, run=config.name)
    except SIGTERMException:
        # Lightning's answer to SIGTERM (preemption, `timeout`, `docker stop`) is a bare SystemExit: exit status 0,
        # as if the run had finished. CheckpointOnSigterm has saved last.ckpt at the step the signal ended.
        last = run_dir / "checkpoints" / "last.ckpt"
        mark_state(run_dir, "preempted", step=trainer.global_step, checkpoint=str(last), **resumed)
        raise PreemptedError(f"{run_dir}: stopped by SIGTERM at step {trainer.global_step}; its checkpoint is {last}, "
                        "and the same command resumes it") from None
    except BaseException as error:
        try:
            mark_state(run_dir, "failed", error=f"{type(error).__name__}: {error}", **resumed)
        except OSError as status_error:  # a full or read-only disk: the error that stopped the run is the news
            logger.warning("could not record the failure in %s: %s", run_dir / STATUS_FILE, status_error)
        raise
    mark_state(run_dir, "finished", metrics=metrics, steps=trainer.global_step, **resumed)
    return Run(run_dir, config, encoder, metrics)
