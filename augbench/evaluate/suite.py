"""End tasks and suites, configured in configs/tasks/ and configs/suites/.

A task is a dataset, a label read as a `target` kind, the protocols that fit
a head to it (the protocol names the head: kNN votes, a linear layer, an
MLP, a linear layer on augmented images, a fine-tuned network, few-shot
prototypes, a dense head) and the metric that scores it. Its `kind` says how
the splits are used:

- `standard`: fit on train (settings chosen on val), score on test.
- `long_tailed`: the train split subsampled with exponentially decaying class
  sizes (`long_tailed.imbalance_ratio`, `augbench.data.subsets`); val and
  test stay balanced; many/medium/few-shot accuracy (mean per-class accuracy
  of each group) in the record's details.
- `background_shift`: fit on train, score on a test split rendered with
  `shifted_test` overrides of the dataset (e.g. unseen photo backgrounds);
  the in-distribution score and the drop are in the details.
- `corruptions`: fit on clean train, score on test images under each of
  ImageNet-C's corruptions and severities; value = mean accuracy.
- `few_shot`: N-way K-shot episodes on one split (held-out classes);
  value = mean accuracy, the 95 % CI in the details.
- `crop_pair`: two crops of each image; the target is the offset between
  their centres, read from the concatenated features (ViRB's two-frame
  egomotion head, on one image).
- `invariance`: the invariance probes of `probes.py`.

A suite lists tasks and holds every protocol's settings, budget and seed, so
the protocol of every number is written down before it is computed. A task
may change a protocol's settings for itself in `protocol_settings`, e.g.
`{finetune: {optimizer: {name: lars}}}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from augbench.config import ConfigError, compose, read_sources, shipped_config
from augbench.data import DATASETS, dataset_config_type
from augbench.data.disk import DiskConfig
from augbench.evaluate.corruptions import CORRUPTIONS, SEVERITIES
from augbench.evaluate.dense import DenseConfig
from augbench.evaluate.probes import ProbeConfig
from augbench.evaluate.protocols import FewShotConfig, KNNConfig, LinearConfig, MLPConfig
from augbench.evaluate.training import FinetuneConfig, SGDLinearConfig
from augbench.metrics import METRICS, PIXEL_TARGETS, TARGETS
from augbench.models.external import is_external, parse_spec

PROTOCOLS = ("knn", "linear", "mlp", "sgd_linear", "finetune", "fewshot", "dense", "probe")
KINDS = ("standard", "long_tailed", "background_shift", "corruptions", "few_shot", "crop_pair", "invariance")
CATEGORIES = ("semantic_image", "structural_image", "semantic_pixel", "structural_pixel", "few_shot", "long_tailed",
              "corruptions", "background_shift", "invariance")
CLASS_PROTOCOLS = ("knn", "linear", "mlp", "sgd_linear", "finetune")
FEATURE_PROTOCOLS = ("knn", "linear", "mlp")
# The folder the shipped on-disk tasks (configs/tasks/cifar10.yaml, ...) read their datasets from.
DATA_ROOT_VARIABLE = "AUGBENCH_DATA"
# Labels a task kind computes itself rather than reading from the dataset.
DERIVED_LABELS = {"crop_pair": "crop_offset", "invariance": "augmentation"}


@dataclass
class LongTailedTaskConfig:
    """Classes with more than `many` train images are 'many-shot', fewer than `few` 'few-shot' (OLTR's split)."""

    imbalance_ratio: float = 100.0
    many: int = 100
    few: int = 20


@dataclass
class CorruptionTaskConfig:
    """`max_test_images` caps the test images corrupted (0 = all), 15 × 5 encoder passes over them."""

    names: list[str] = field(default_factory=lambda: list(CORRUPTIONS))
    severities: list[int] = field(default_factory=lambda: list(SEVERITIES))
    max_test_images: int = 500

    def __post_init__(self):
        unknown = [n for n in self.names if n not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"names: unknown {unknown}; known: {list(CORRUPTIONS)}")
        bad = [s for s in self.severities if s not in SEVERITIES]
        if bad:
            raise ValueError(f"severities: {bad} not in {list(SEVERITIES)}")


@dataclass
class FewShotTaskConfig:
    """Episodes of `ways` classes, `shots` support and `queries` query images each, drawn from `split`."""

    ways: int = 5
    shots: int = 1
    queries: int = 15
    episodes: int = 600
    split: str = "test"


@dataclass
class CropPairTaskConfig:
    """Both crops are squares of `crop_fraction` of the side, placed independently and resized to the image size."""

    crop_fraction: float = 0.5


@dataclass
class TaskConfig:
    name: str = "task"
    category: str = "semantic_image"
    kind: str = "standard"
    dataset: Any = field(default_factory=lambda: {"name": "shapes_world"})
    label: str = "shape"
    target: str = "class"
    metric: str = "top1"
    protocols: list[str] = field(default_factory=lambda: ["knn", "linear"])
    seed: int | None = None
    protocol_settings: dict[str, Any] = field(default_factory=dict)
    shifted_test: dict[str, Any] = field(default_factory=dict)
    long_tailed: LongTailedTaskConfig = field(default_factory=LongTailedTaskConfig)
    corruptions: CorruptionTaskConfig = field(default_factory=CorruptionTaskConfig)
    few_shot: FewShotTaskConfig = field(default_factory=FewShotTaskConfig)
    crop_pair: CropPairTaskConfig = field(default_factory=CropPairTaskConfig)


@dataclass
class SuiteConfig:
    """`tasks` are names of configs/tasks/*.yaml or paths to task files; one section per protocol.

    `dataset_overrides` are set on every task's dataset that has those keys
    (e.g. `{image_size: 16, train_size: 200}` for a smoke run of a suite).
    `protocols`, when given, keeps only these of each task's protocols.
    """

    name: str = "suite"
    seed: int = 0
    tasks: list[str] = field(default_factory=list)
    knn: KNNConfig = field(default_factory=KNNConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    sgd_linear: SGDLinearConfig = field(default_factory=SGDLinearConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    batch_size: int = 512
    dataset_overrides: dict[str, Any] = field(default_factory=dict)
    protocols: list[str] = field(default_factory=list)

    def __post_init__(self):
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise ValueError(f"protocols: unknown {unknown}; known: {list(PROTOCOLS)}")


def _resolve(kind: str, name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return relative_to / path if relative_to is not None and not path.is_absolute() else path
    shipped = shipped_config(f"{kind}/{name_or_path}.yaml")
    if not shipped.is_file():
        known = sorted(p.stem for p in shipped.parent.glob("*.yaml"))
        raise ConfigError(f"{kind[:-1]} {name_or_path!r}: no such file {shipped}; known: {known}")
    return shipped


def load_suite(suite: str | Path, overrides: Sequence[str] = ()) -> tuple[SuiteConfig, list[TaskConfig]]:
    path = _resolve("suites", suite)
    config, _ = compose(SuiteConfig, read_sources(path, overrides))
    if not config.tasks:
        raise ConfigError(f"{path}: tasks: the suite lists no tasks")
    tasks = []
    for name in config.tasks:
        task_path = _resolve("tasks", name, path.parent)
        task = load_task(task_path)
        task.dataset = _override_dataset(task.dataset, config.dataset_overrides, task_path)
        if config.protocols:
            task.protocols = [p for p in task.protocols if p in config.protocols]
            if not task.protocols:
                raise ConfigError(f"{path}: protocols: {list(config.protocols)} leave task {task.name!r} none of its "
                                  "own")
        _check_disk_path(task.dataset, task_path)
        for protocol in task.protocols:
            settings = protocol_config(config, task, protocol, where=str(task_path))
            if protocol == "finetune":
                _check_norm_rescale_reference(settings.norm_rescale, task_path)
        tasks.append(task)
    names = [task.name for task in tasks]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{path}: tasks: task names {duplicated} appear more than once")
    return config, tasks


def _override_dataset(dataset: Any, overrides: dict[str, Any], where: Path) -> Any:
    every_key = {f.name for entry in DATASETS.values() for f in fields(entry.config)}
    unknown = sorted(set(overrides) - every_key)
    if unknown:
        raise ConfigError(f"dataset_overrides: {unknown} is not a setting of any dataset ({sorted(DATASETS)})")
    own = {key: value for key, value in overrides.items() if key in {f.name for f in fields(dataset)}}
    if not own:
        return dataset
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(dataset), own))
    except (OmegaConfBaseException, ValueError, TypeError) as error:
        message = (getattr(error, "msg", None) or str(error)).splitlines()[0]
        raise ConfigError(f"{where}: dataset_overrides {own}: {message}") from None


def _check_disk_path(dataset: Any, where: Path) -> None:
    """An on-disk task's folder, checked when the suite loads rather than when its turn comes after hours of others."""
    if not isinstance(dataset, DiskConfig):
        return
    if not dataset.path:
        raise ConfigError(f"{where}: dataset.path is not set: {dataset.name} is read from disk; set "
                          f"{DATA_ROOT_VARIABLE} to the folder that holds it (torchvision's layout), or pass "
                          "dataset_overrides.path=FOLDER")
    if not Path(dataset.path).expanduser().is_dir():
        raise ConfigError(f"{where}: dataset.path={dataset.path}: no such directory (the folder holding "
                          f"{dataset.name}, from {DATA_ROOT_VARIABLE} or dataset_overrides.path)")


def _check_norm_rescale_reference(spec: str, where: Path) -> None:
    """The reference encoder's file, checked when the suite loads rather than when fine-tuning's turn comes."""
    if not spec:
        return
    try:
        if is_external(spec):
            parse_spec(spec)  # a named model carries no file; ARCH@FILE's file must exist
        elif not Path(spec).exists():
            raise FileNotFoundError(spec)
    except FileNotFoundError:
        raise ConfigError(f"{where}: finetune.norm_rescale={spec}: no such file or run directory (the reference "
                          "encoder whose tensor norms the fine-tuned copy takes)") from None


def protocol_config(suite: SuiteConfig, task: TaskConfig, protocol: str, where: str = "") -> Any:
    """The suite's settings of `protocol`, with the task's `protocol_settings[protocol]` merged over them."""
    base = getattr(suite, protocol)
    changes = task.protocol_settings.get(protocol)
    if not changes:
        return base
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base), changes))
    except (OmegaConfBaseException, ValueError, TypeError) as error:
        key = getattr(error, "full_key", "")
        message = (getattr(error, "msg", None) or str(error)).splitlines()[0]
        raise ConfigError(f"{where or task.name}: protocol_settings.{protocol}{'.' + key if key else ''}: "
                          f"{message}") from None


def load_task(path: Path) -> TaskConfig:
    config, _ = compose(TaskConfig, read_sources(path), {"dataset": dataset_config_type})
    _check_choice(path, "kind", config.kind, KINDS)
    _check_choice(path, "category", config.category, CATEGORIES)
    _check_choice(path, "target", config.target, TARGETS)
    _check_choice(path, "metric", config.metric, METRICS)
    unknown = [p for p in config.protocols if p not in PROTOCOLS]
    if unknown or not config.protocols:
        raise ConfigError(f"{path}: protocols: unknown {unknown or 'none given'}; known: {list(PROTOCOLS)}")
    if config.target not in METRICS[config.metric].targets:
        raise ConfigError(f"{path}: metric: {config.metric!r} does not score target {config.target!r}; it scores "
                          f"{list(METRICS[config.metric].targets)}")
    known = DATASETS[config.dataset.name].labels
    derived = DERIVED_LABELS.get(config.kind)
    if derived is not None and config.label != derived:
        raise ConfigError(f"{path}: label: a {config.kind} task computes its label {derived!r}; got {config.label!r}")
    if derived is None and config.label not in known:
        raise ConfigError(
            f"{path}: label: {config.label!r} is not a label of {config.dataset.name}; known: {list(known)}"
        )
    allowed = _allowed_protocols(config)
    misfits = [p for p in config.protocols if p not in allowed]
    if misfits:
        raise ConfigError(f"{path}: protocols: {misfits} do not apply to a {config.kind} task with target "
                          f"{config.target!r}; allowed: {list(allowed)}")
    for key in config.protocol_settings:
        if key not in config.protocols:
            raise ConfigError(f"{path}: protocol_settings.{key}: the task does not run protocol {key!r}")
    if config.kind == "background_shift":
        if not config.shifted_test:
            raise ConfigError(f"{path}: shifted_test: a background_shift task needs dataset overrides for its test")
        shifted_dataset(config, where=str(path))
    return config


def _check_choice(path: Path, key: str, value: str, known: Sequence[str]) -> None:
    if value not in known:
        raise ConfigError(f"{path}: {key}: {value!r} is unknown; known: {list(known)}")


def _allowed_protocols(task: TaskConfig) -> tuple[str, ...]:
    if task.kind == "invariance":
        return ("probe",)
    if task.kind == "few_shot":
        return ("fewshot",) if task.target == "class" else ()
    if task.target in PIXEL_TARGETS:
        return ("dense",) if task.kind == "standard" else ()
    if task.target != "class":
        return ("knn", "linear", "mlp")
    return FEATURE_PROTOCOLS if task.kind in ("corruptions", "crop_pair") else CLASS_PROTOCOLS


def shifted_dataset(task: TaskConfig, where: str = "") -> Any:
    """The task's dataset config with `shifted_test` applied: the same objects, rendered differently."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(task.dataset), task.shifted_test)
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, ValueError, TypeError) as error:
        key = getattr(error, "full_key", "")
        message = (getattr(error, "msg", None) or str(error)).splitlines()[0]
        raise ConfigError(f"{where or task.name}: shifted_test{'.' + key if key else ''}: {message}") from None
