"""End tasks and suites, configured in configs/tasks/ and configs/suites/.

A task is a dataset, a label, and the protocols that read it; a suite is a
list of tasks with the protocol settings and seed they share. Both are
YAML, so the protocol of every number is written down before it is computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augbench.config import ConfigError, compose, read_sources, shipped_config
from augbench.data import DATASETS, dataset_config_type
from augbench.evaluate.protocols import KNNConfig, LinearConfig

PROTOCOLS = ("knn", "linear")


@dataclass
class TaskConfig:
    name: str = "task"
    dataset: Any = field(default_factory=lambda: {"name": "shapes_world"})
    label: str = "shape"
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))

    def __post_init__(self):
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise ValueError(f"protocols: unknown {unknown}; known: {list(PROTOCOLS)}")


@dataclass
class SuiteConfig:
    """`tasks` are names of configs/tasks/*.yaml or paths to task files."""

    name: str = "suite"
    seed: int = 0
    tasks: list[str] = field(default_factory=list)
    knn: KNNConfig = field(default_factory=KNNConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    batch_size: int = 512


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
    tasks = [load_task(_resolve("tasks", task, path.parent)) for task in config.tasks]
    return config, tasks


def load_task(path: Path) -> TaskConfig:
    config, _ = compose(TaskConfig, read_sources(path), {"dataset": dataset_config_type})
    known = DATASETS[config.dataset.name].labels
    if config.label not in known:
        raise ConfigError(
            f"{path}: label: {config.label!r} is not a label of {config.dataset.name}; known: {list(known)}"
        )
    return config
