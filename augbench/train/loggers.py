"""A run's loggers: CSV and TensorBoard under logs/, and Weights & Biases when `wandb.enabled`."""

from __future__ import annotations

import uuid
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from augbench.config import to_yaml
from augbench.train.config import PretrainConfig
from augbench.train.run_dir import write_text


def build_loggers(config: PretrainConfig, run_dir: Path) -> list[Logger]:
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


def finish_wandb(trainer: L.Trainer) -> None:
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
    rank_zero_only(write_text)(path, run_id + "\n")  # other ranks never log, so their id is not used
    return run_id
