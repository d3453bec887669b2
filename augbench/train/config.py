"""The pretraining config (`PretrainConfig` and its sections), its loading, and a run directory's status file.

Kept apart from `augbench.train.pretrain` so that composing and checking a
config, and reading a run's status, import neither Lightning nor the training
stack: a config error answers before the seconds those imports take.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from augbench.augment.kinds import implied_kind, views_config_type
from augbench.config import ConfigError, Polymorphic, changed_keys, compose, read_sources, to_yaml
from augbench.data import DATASETS, dataset_config_type
from augbench.methods import check_views, method_config_type, stored_method_name, views_kind
from augbench.methods.two_branch import TwoBranchConfig
from augbench.models.backbones import BackboneConfig
from augbench.optim import OptimConfig
from augbench.train.device_data import check_on_device_setting

STATUS_FILE = "status.json"
CONFIG_FILE = "config.yaml"

# Lightning's accepted values, listed here so that a config is checked without importing Lightning (seconds);
# tests/bad_inputs/test_runs.py checks that the lists still match Lightning's.
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "bf16", "64")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


@dataclass
class MonitorConfig:
    """`label`: the dataset's class label the kNN reads (Shapes World: `shape`, `hue_bin`, ...; datasets on disk:
    `class`); null turns the monitor off. `k` and `temperature` are the kNN protocol's; `max_bank_images` labelled
    train images form the bank and `max_val_images` val images are classified, both drawn once with `seed`.
    `knn: false` leaves the kNN out. `online_linear` trains the online linear classifier at `online_linear_lr`
    (null: 0.1 under SGD or LARS, 0.001 under AdamW; not scaled by the batch size), without weight decay."""

    label: str | None = None
    knn: bool = True
    online_linear: bool = False
    online_linear_lr: float | None = None
    every_n_epochs: int = 1
    k: int = 20
    temperature: float = 0.07
    max_bank_images: int = 10_000
    max_val_images: int = 2_000
    batch_size: int = 512

    def __post_init__(self):
        for key in ("every_n_epochs", "k", "max_bank_images", "max_val_images", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)}: must be positive")
        if self.online_linear and self.label is None:
            raise ValueError("online_linear=true: set label to the class label the classifier learns")
        if self.online_linear_lr is not None and self.online_linear_lr <= 0:
            raise ValueError(f"online_linear_lr={self.online_linear_lr}: must be positive")

    @property
    def enabled(self) -> bool:
        return self.label is not None and (self.knn or self.online_linear)


@dataclass
class TrainerConfig:
    """Lightning settings. `batch_size` is global: each of the devices × nodes processes an equal share.

    Distributed training: `devices` per node, `num_nodes`, `strategy=ddp` and
    `sync_batchnorm` (BatchNorm statistics over the global batch; CUDA only in
    torch). `checkpoint_every_n_steps` (0: off) keeps the latest step
    checkpoint for resuming preempted runs. `keep_epoch_checkpoints` is how
    many of the newest epoch checkpoints (one every `checkpoint_every_n_epochs`
    epochs) stay on disk, older ones being deleted as new ones are written;
    -1 keeps all. last.ckpt, always the newest state, is kept besides them.
    `collapse_threshold` is the embedding std below which training warns of
    representation collapse. `check_every_n_steps` is how often that check and
    the NaN check are read back from the device (null: every step on a CPU,
    every 25 on a GPU, where a read-back per step idles the device; see
    `augbench.train.step_checks`): a NaN still stops the run naming the step
    where it first appeared, and no checkpoint is written after it.
    `precision` is Lightning's, or `auto`: bf16 autocast where the device
    multiplies bf16 natively (a CUDA GPU with bf16, a CPU with AVX512-BF16 or
    AMX), fp32 elsewhere, where bf16 is emulated and slower than fp32.
    `keep_freed_memory` keeps freed host memory in the process for the next
    step instead of returning it to the kernel (glibc only; see
    `augbench.train.memory`); it applies to the whole process for the rest of
    its life, so only where the caller lets it: the command line does,
    `augbench.pretrain(..., process_wide=True)` does, a plain call does not.
    `compile_augmentation` fuses the colour jitter's hue rotation into one
    torch.compile'd kernel on CPU images of 64 px and more (15-25 s of
    compilation once per process, then 1.2-1.5x faster augmentation; see
    `augbench.augment.ops.shift_hue`), for this run's training only.
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
    keep_epoch_checkpoints: int = 2
    sync_batchnorm: bool = False
    collapse_threshold: float = 0.01
    check_every_n_steps: int | None = None
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
        if self.check_every_n_steps is not None and self.check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps={self.check_every_n_steps}: must be positive, or null for the "
                             "device's default")
        if self.checkpoint_every_n_steps < 0:
            raise ValueError(f"checkpoint_every_n_steps={self.checkpoint_every_n_steps}: must be 0 (off) or positive")
        # Lightning writes last.ckpt at an epoch's end only along with an epoch checkpoint, so at least one is kept.
        if self.keep_epoch_checkpoints == 0 or self.keep_epoch_checkpoints < -1:
            raise ValueError(f"keep_epoch_checkpoints={self.keep_epoch_checkpoints}: must be positive, or -1 to keep "
                             "every epoch's checkpoint")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not a precision Lightning knows; accepted: "
                             f"{', '.join(PRECISIONS)}")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"accelerator={self.accelerator!r} is not an accelerator Lightning knows; accepted: "
                             f"{', '.join(ACCELERATORS)}")


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
    augment: Any = field(default_factory=lambda: {"views": "two_view"})
    model: BackboneConfig = field(default_factory=BackboneConfig)
    method: Any = field(default_factory=lambda: {"name": "two_branch"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self):
        # Checked here, before data and models are built, not at the first training step or epoch end.
        check_on_device_setting(self.data.on_device)
        known = DATASETS[self.data.name].labels
        if self.monitor.label is not None and self.monitor.label not in known:
            raise ValueError(f"monitor.label={self.monitor.label!r} is not a label of {self.data.name}; known: "
                             f"{list(known)}")
        if hasattr(self.method, "label"):  # a supervised method: its label, by default the dataset's first
            if self.method.label is None:
                self.method.label = known[0]
            if self.method.label not in known:
                raise ValueError(f"method.label={self.method.label!r} is not a label of {self.data.name}; known: "
                                 f"{list(known)}")
        missing_features = _declared(self.method, "missing_features")
        if self.monitor.online_linear and missing_features:
            raise ValueError(f"monitor.online_linear=true reads the encoder's features, which {missing_features}")
        check_views(self.method, self.augment)
        background = getattr(self.augment, "background", "none")
        if background != "none" and "foreground" not in known:
            raise ValueError(f"augment.background={background!r} replaces each view's background, "
                             f"which needs the dataset's object masks; {self.data.name} has none (shapes_world has)")
        if self.trainer.sync_batchnorm and getattr(self.method, "shuffle_bn", 0) > 1:
            raise ValueError(f"trainer.sync_batchnorm=true makes BatchNorm statistics global, which undoes "
                             f"method.shuffle_bn={self.method.shuffle_bn}; choose one (MoCo v2+ and BYOL use SyncBN)")
        stagewise = _declared(self.method, "runs_backbone_by_stage")
        if self.trainer.compile_model and stagewise:
            raise ValueError(f"trainer.compile_model=true compiles the backbone's forward, which {stagewise} never "
                             "calls: it runs the backbone stage by stage; set trainer.compile_model=false")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _declared(method: Any, hook: str) -> str | None:
    """What the method config declares through its optional `hook` (augbench.methods.base lists them), or None."""
    declare = getattr(method, hook, None)
    return declare() if declare is not None else None


def check_runnable(config: PretrainConfig) -> None:
    """Refuse, before anything is built, a config this machine cannot run: an accelerator it does not have.

    Not part of the config's own validation: a config composed on a login node
    (`--print-config`, `augbench benchmark --plan`) may be meant for GPU nodes.
    """
    accelerator, devices = config.trainer.accelerator, config.trainer.devices
    if accelerator in ("gpu", "cuda"):
        found = torch.cuda.device_count()
        if not found:
            raise ConfigError(f"trainer.accelerator={accelerator}: this machine has no CUDA GPU that torch can use; "
                              "accepted here: auto, cpu")
        if isinstance(devices, int) and devices > found:
            raise ConfigError(f"trainer.devices={devices}: this machine has {found} CUDA GPU(s)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps: this machine has no Apple GPU (MPS); accepted here: auto, cpu")


# The sections whose dataclass depends on a kind: `augment` (after `method`) is the kind of views the method trains
# on unless a source names a kind or a recipe.
SECTIONS = {
    "data": Polymorphic(dataset_config_type),
    "method": Polymorphic(method_config_type),
    "augment": Polymorphic(views_config_type, key="views", implied=implied_kind,
                           default=lambda kinds: views_kind(kinds["method"])),
}
# Settings that moved from `method` to the `augment` section.
MOVED_KEYS = {
    **{f"method.{key}": f"augment.{key} (augment.views=hierarchical)"
       for key in ("assignment", "crop_scale", "hierarchical_strength")},
    **{f"method.{key}": f"augment.{key} (augment.views=multi_crop)"
       for key in ("num_crops", "crop_sizes", "min_scale", "max_scale", "color_strength", "blur")},
    "method.augmentations": "augment.augmentations (augment.views=leave_one_out), which LooC reads",
}


def load_config(
    paths: str | Path | Sequence[str | Path] = (), overrides: Sequence[str] = ()
) -> tuple[PretrainConfig, DictConfig]:
    """Compose a pretraining config from YAML files (each with its `base:` files) and dot-list overrides."""
    return compose(PretrainConfig, read_sources(paths, overrides), SECTIONS, MOVED_KEYS)


def load_stored_config(path: Path) -> tuple[PretrainConfig, list[str]]:
    """A run's stored config.yaml as augbench reads it today, and the keys that held a method name that has changed
    since (`siamese`, now `two_branch`): runs of earlier versions stay readable."""
    sources = read_sources(path)
    renamed = []
    for source in sources:
        for key in ("method.name", "method.base_method.name"):  # HAI's base method is named too
            name = OmegaConf.select(source.values, key, default=None)
            if name is not None and stored_method_name(name) != name:
                OmegaConf.update(source.values, key, stored_method_name(name))
                renamed.append(key)
    config, _ = compose(PretrainConfig, sources, SECTIONS, MOVED_KEYS)
    return config, renamed


def read_status(run_dir: Path) -> dict | None:
    path = Path(run_dir) / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


# Keys that change what a run shows, not what it trains: a resumed run may change them.
DISPLAY_KEYS = ("trainer.progress_bar", "wandb.")


def config_changes(stored: Path, config: PretrainConfig) -> list[str]:
    """The keys at which `config` differs from the run config stored in the file `stored`, display keys aside.

    The stored file is read through today's config classes, so a key added to
    augbench since that run started takes its default on both sides instead
    of counting as a change that would refuse the resume (`load_stored_config`).
    """
    try:
        previous, renamed = load_stored_config(stored)
    except ConfigError as error:
        return [f"(it no longer loads: {error})"]
    as_dict = [OmegaConf.to_container(OmegaConf.create(to_yaml(c))) for c in (previous, config)]
    # `siamese` named every point of the two-branch space: with equal switches, the run is the preset's.
    two_branch = {"method.name": config.method, "method.base_method.name": getattr(config.method, "base_method", None)}
    renamed = {key for key in renamed if isinstance(two_branch[key], TwoBranchConfig)}
    return [key for key in changed_keys(*as_dict) if not key.startswith(DISPLAY_KEYS) and key not in renamed]


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
