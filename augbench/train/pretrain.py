"""`augbench.pretrain(config) -> Run`: compose the pipeline and train it with Lightning.

A run lives in `output_dir/name/`:

    config.yaml           the resolved config
    status.json           {"state": "running" | "failed" | "finished", ...}
    checkpoints/          one Lightning checkpoint per epoch, the latest of every
                          `trainer.checkpoint_every_n_steps` steps, and last.ckpt
    logs/csv/metrics.csv  and logs/tensorboard/: the logged losses, and with
                          `monitor.label` the kNN accuracy (monitor.py)
    encoder.safetensors   the trained backbone, written once training finished

A directory whose status is not "finished" did not finish; running the same
config again resumes it from checkpoints/last.ckpt. A checkpoint holds the
model with its EMA target and queues, the optimiser, the schedule, the RNG
states and the data order's position, so with `trainer.deterministic=true` a
run killed at any step and resumed ends with the same weights, bit for bit on
CPU, as one never interrupted. Checkpoints are written to a temporary file and
renamed, and read with `torch.load(weights_only=True)` (see checkpoint.py).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

import augbench
from augbench.augment.looc import LOOC_RECIPES
from augbench.augment.ops import compile_hue_rotation
from augbench.augment.recipes import AugmentConfig, build_recipe
from augbench.config import ConfigError, changed_keys, compose, read_sources, to_yaml
from augbench.data import DATASETS, ImageDataset, dataset_config_type, load_split
from augbench.errors import DivergedError
from augbench.methods import build_method, method_config_type
from augbench.methods.base import Method
from augbench.methods.hai import HAIConfig
from augbench.methods.looc import LooCConfig
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.io import ENCODER_FILE, save_encoder
from augbench.models.taps import NUM_STAGES
from augbench.train.checkpoint import AtomicCheckpointIO, write_atomic
from augbench.train.memory import keep_freed_memory
from augbench.train.module import PretrainModule
from augbench.train.monitor import MonitorConfig, ProbeMonitor
from augbench.train.optim import OptimConfig
from augbench.train.sampler import ResumableBatchSampler

STATUS_FILE = "status.json"
CONFIG_FILE = "config.yaml"


@dataclass
class TrainerConfig:
    """Lightning settings. `batch_size` is global: each of the devices × nodes processes an equal share.

    Distributed training: `devices` per node, `num_nodes`, `strategy=ddp` and
    `sync_batchnorm` (BatchNorm statistics over the global batch; CUDA only in
    torch). `checkpoint_every_n_steps` (0: off) keeps the latest step
    checkpoint for resuming preempted runs. `collapse_threshold` is the
    embedding std below which training warns of representation collapse.
    `precision` is Lightning's, or `auto`: bf16 autocast where the device
    multiplies bf16 natively (a CUDA GPU with bf16, a CPU with AVX512-BF16 or
    AMX), fp32 elsewhere, where bf16 is emulated and slower than fp32.
    `keep_freed_memory` keeps freed host memory in the process for the next
    step instead of returning it to the kernel (glibc only; see
    `augbench.train.memory`); it applies to the whole process.
    `compile_augmentation` fuses the colour jitter's hue rotation into one
    torch.compile'd kernel on CPU images of 64 px and more (15-25 s of
    compilation once per process, then 1.2-1.5x faster augmentation; see
    `augbench.augment.ops.shift_hue`); it too applies to the whole process.
    `compile_model` runs the backbone and its momentum copies through
    torch.compile (see `augbench.train.module.compile_backbones`): it fuses
    BatchNorm, ReLU and residual adds around the convolutions, once per run
    at its first steps (about a minute on two CPU cores). Methods that run
    their backbone stage by stage (HAI, LooC++) refuse it.
    """

    max_epochs: int = 100
    max_steps: int = -1
    batch_size: int = 256
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_workers: int = 0
    log_every_n_steps: int = 10
    checkpoint_every_n_epochs: int = 1
    checkpoint_every_n_steps: int = 100
    sync_batchnorm: bool = False
    collapse_threshold: float = 0.01
    deterministic: bool = False
    channels_last: bool = True
    progress_bar: bool = True
    keep_freed_memory: bool = True
    compile_augmentation: bool = True
    compile_model: bool = False

    def __post_init__(self):
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size}: contrastive batches need at least 2 images")
        if self.max_epochs < 1 and self.max_steps < 1:
            raise ValueError("set max_epochs or max_steps to a positive number")
        if self.checkpoint_every_n_steps < 0:
            raise ValueError(f"checkpoint_every_n_steps={self.checkpoint_every_n_steps}: must be 0 (off) or positive")


@dataclass
class WandbConfig:
    """Weights & Biases logging beside the CSV and TensorBoard logs (`pip install 'augbench[wandb]'`).

    The W&B run is named after the run and carries its whole config; its id is
    kept in `logs/wandb_run_id`, so a resumed run goes on logging into the same
    W&B run. `offline`: write it under `logs/wandb/` without network or
    account, for `wandb sync` later.
    """

    enabled: bool = False
    project: str = "augbench"
    entity: str | None = None
    offline: bool = False
    tags: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.enabled and importlib.util.find_spec("wandb") is None:
            raise ValueError("enabled=true: the wandb package is not installed; pip install 'augbench[wandb]'")


@dataclass
class PretrainConfig:
    name: str = "pretrain"
    seed: int = 0
    output_dir: str = "runs"
    data: Any = field(default_factory=lambda: {"name": "shapes_world"})
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: BackboneConfig = field(default_factory=BackboneConfig)
    method: Any = field(default_factory=lambda: {"name": "siamese"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self):
        # Checked here, before data and models are built, not at the first training step or epoch end.
        known = DATASETS[self.data.name].labels
        if self.monitor.label is not None and self.monitor.label not in known:
            raise ValueError(f"monitor.label={self.monitor.label!r} is not a label of {self.data.name}; known: "
                             f"{list(known)}")
        if self.monitor.online_linear and isinstance(self.method, HAIConfig) and self.method.stages[-1] != NUM_STAGES:
            raise ValueError(f"monitor.online_linear=true reads the encoder's features, which HAI computes only with "
                             f"stage {NUM_STAGES} tapped; method.stages={list(self.method.stages)}")
        if self.augment.background != "none" and "foreground" not in known:
            raise ValueError(f"augment.background={self.augment.background!r} replaces each view's background, "
                             f"which needs the dataset's object masks; {self.data.name} has none (shapes_world has)")
        if self.trainer.sync_batchnorm and getattr(self.method, "shuffle_bn", 0) > 1:
            raise ValueError(f"trainer.sync_batchnorm=true makes BatchNorm statistics global, which undoes "
                             f"method.shuffle_bn={self.method.shuffle_bn}; choose one (MoCo v2+ and BYOL use SyncBN)")
        stagewise = _runs_backbone_by_stage(self.method)
        if self.trainer.compile_model and stagewise:
            raise ValueError(f"trainer.compile_model=true compiles the backbone's forward, which {stagewise} never "
                             "calls: it runs the backbone stage by stage; set trainer.compile_model=false")
        # LooC's heads (one embedding space per augmentation) and its recipe's keys (one per augmentation) are
        # built from two lists.
        if not isinstance(self.method, LooCConfig):
            return
        if self.augment.recipe not in LOOC_RECIPES:
            raise ValueError(f"method.name=looc needs a leave-one-out recipe, augment.recipe one of "
                             f"{sorted(LOOC_RECIPES)}, not {self.augment.recipe!r}")
        if list(self.method.augmentations) != list(self.augment.augmentations):
            raise ValueError(f"method.augmentations={list(self.method.augmentations)} and augment.augmentations="
                             f"{list(self.augment.augmentations)} differ: LooC embeds one space per key of its recipe, "
                             "in order; set method.augmentations to ${augment.augmentations}, as the presets do")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _runs_backbone_by_stage(method) -> str | None:
    """The setting under which `method` reads the backbone's stages rather than calling its forward, if any."""
    if isinstance(method, HAIConfig):
        return "method.name=hai"
    if isinstance(method, LooCConfig) and method.representation == "looc++":
        return "method.representation=looc++"
    return None


@dataclass
class Run:
    """A finished pretraining run: its directory, config, trained encoder (eval mode) and last logged metrics."""

    directory: Path
    config: PretrainConfig
    encoder: nn.Module
    metrics: dict[str, float]


def load_config(
    paths: str | Path | Sequence[str | Path] = (), overrides: Sequence[str] = ()
) -> tuple[PretrainConfig, DictConfig]:
    """Compose a pretraining config from YAML files (each with its `base:` files) and dot-list overrides."""
    polymorphic = {"data": dataset_config_type, "method": method_config_type}
    return compose(PretrainConfig, read_sources(paths, overrides), polymorphic)


def read_status(run_dir: Path) -> dict | None:
    path = Path(run_dir) / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(lambda file: file.write(text.encode()), path)


@rank_zero_only  # under DDP every process runs pretrain(); one writes the run directory's files
def _mark(run_dir: Path, state: str, **info) -> None:
    status = {"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "augbench": augbench.__version__, **info}
    _write_atomic(run_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")


# Keys that change what a run shows, not what it trains: a resumed run may change them.
DISPLAY_KEYS = ("trainer.progress_bar", "wandb.")


def config_changes(stored: Path, config: PretrainConfig) -> list[str]:
    """The keys at which `config` differs from the run config stored in the file `stored`, display keys aside.

    The stored file is read through today's config classes, so a key added to
    augbench since that run started takes its default on both sides instead
    of counting as a change that would refuse the resume.
    """
    try:
        previous, _ = load_config(stored)
    except ConfigError as error:
        return [f"(it no longer loads: {error})"]
    as_dict = [OmegaConf.to_container(OmegaConf.create(to_yaml(c))) for c in (previous, config)]
    return [key for key in changed_keys(*as_dict) if not key.startswith(DISPLAY_KEYS)]


def _prepare_run_dir(config: PretrainConfig, config_yaml: str) -> Path | None:
    """Create or reopen the run directory; return the checkpoint to resume from, if any."""
    run_dir = config.run_dir
    status = read_status(run_dir)
    if status and status["state"] == "finished":
        raise FileExistsError(
            f"{run_dir}: holds a finished run; evaluate it with `augbench evaluate {run_dir}` "
            "or choose another name= / output_dir="
        )
    last = run_dir / "checkpoints" / "last.ckpt"
    if (run_dir / CONFIG_FILE).is_file() and last.is_file():
        changed = config_changes(run_dir / CONFIG_FILE, config)
        if changed:
            raise ConfigError(
                f"{run_dir / CONFIG_FILE}: an unfinished run with another config is here (differs at {changed}); "
                "choose another name= to start afresh"
            )
        rank_zero_only(_write_atomic)(run_dir / CONFIG_FILE, config_yaml)  # with today's keys and display settings
        return last
    run_dir.mkdir(parents=True, exist_ok=True)
    rank_zero_only(_write_atomic)(run_dir / CONFIG_FILE, config_yaml)
    return None


class _TrainData(L.LightningDataModule):
    """Batches from a ResumableBatchSampler; its position (global batches trained) travels in checkpoints."""

    def __init__(self, dataset: ImageDataset, batch_size: int, num_workers: int, seed: int):
        super().__init__()
        self.dataset, self.batch_size, self.num_workers, self.seed = dataset, batch_size, num_workers, seed
        self.next_batch = 0

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size
        if self.batch_size % world:
            raise ConfigError(f"trainer.batch_size={self.batch_size} is not divisible by the {world} processes")
        sampler = ResumableBatchSampler(len(self.dataset), self.batch_size, self.seed, self.trainer.global_rank, world)
        sampler.next_batch = self.next_batch
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
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
    config_yaml = to_yaml(config)
    resume_from = _prepare_run_dir(config, config_yaml)
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
            **(_online_linear(config, method, dataset) if config.monitor.online_linear else {}),
        )
        data = _TrainData(dataset, config.trainer.batch_size, config.trainer.num_workers, config.seed)
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
    except BaseException as error:
        _mark(run_dir, "failed", error=f"{type(error).__name__}: {error}", **resumed)
        raise
    _mark(run_dir, "finished", metrics=metrics, steps=trainer.global_step, **resumed)
    return Run(run_dir, config, encoder, metrics)


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision for `precision`, with `auto` resolved for the device `accelerator` picks."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    else:
        # torch.cpu exposes the CPU's bf16 units only through these private probes; without them, assume none.
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        native = any(probe() for probe in probes if probe is not None)
    return "bf16-mixed" if native else "32-true"


# Lightning's messages about its own internals, its advertising, and choices augbench makes on purpose (the module,
# not the data module, augments batches on the device; the monitor measures on rank 0 alone, so its values need no
# cross-rank sync): none asks anything of the user, and they bury the run's own.
_LIGHTNING_NOISE = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a `LightningDataModule`",
    r"It is recommended to use `self.log\('monitor/",
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
    """Rich's bar without `v_num`: a run's logs live in fixed folders (logs/csv, logs/tensorboard), not versions."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


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
