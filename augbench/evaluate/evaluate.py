"""`augbench.evaluate(encoder_or_checkpoint, suite) -> DataFrame`: frozen-encoder end tasks.

Each split's images are encoded once and the features shared by every task
and protocol that reads that dataset. One row per (task, protocol) carries
the metric and everything needed to reproduce it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from rich.progress import Progress
from torch import nn

import augbench
from augbench.config import ConfigError
from augbench.data import load_split
from augbench.evaluate.features import extract_features
from augbench.evaluate.protocols import knn_predict, linear_predict
from augbench.evaluate.suite import SuiteConfig, TaskConfig, load_suite
from augbench.models.io import load_encoder


def evaluate(
    encoder_or_checkpoint: nn.Module | str | Path,
    suite: str | Path = "quick",
    *,
    name: str | None = None,
    device: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> pd.DataFrame:
    """Evaluate a frozen encoder on every task of `suite`.

    `encoder_or_checkpoint` is any module mapping float images in [0, 1]
    (B, 3, H, W) to features (B, D), or a run directory / `.safetensors` /
    `.ckpt` path. `suite` is a name from configs/suites/ or a YAML path;
    `overrides` are dot-list edits of the suite (e.g. `knn.k=200`).
    """
    if isinstance(encoder_or_checkpoint, nn.Module):
        encoder, source = encoder_or_checkpoint, f"module:{type(encoder_or_checkpoint).__name__}"
    else:
        encoder, _ = load_encoder(encoder_or_checkpoint)
        source = str(encoder_or_checkpoint)
    name = name or (Path(source).stem if not source.startswith("module:") else source)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = encoder.to(device)
    config, tasks = load_suite(suite, overrides)
    cache: dict[str, dict] = {}
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(f"evaluating {name}", total=len(tasks))
        for task in tasks:
            bar.update(job, description=f"{name}: {task.name}")
            splits = _features(encoder, task, config, cache, device)
            rows += _run_task(task, config, splits, name, source)
            bar.advance(job)
    return pd.DataFrame(rows)


def _features(encoder: nn.Module, task: TaskConfig, config: SuiteConfig, cache: dict, device: str) -> dict:
    key = json.dumps(asdict(task.dataset), sort_keys=True)
    if key not in cache:
        cache[key] = {}
        for split in ("train", "val", "test"):
            dataset = load_split(task.dataset, split)
            features = extract_features(encoder, dataset.images, config.batch_size, device)
            cache[key][split] = (features, dataset)
    return cache[key]


def _run_task(task: TaskConfig, config: SuiteConfig, splits: dict, name: str, source: str) -> list[dict]:
    (train, _), (val, _), (test, _) = splits["train"], splits["val"], splits["test"]
    labels = {split: data.labels[task.label] for split, (_, data) in splits.items()}
    if labels["train"].is_floating_point() or labels["train"].ndim != 1:
        raise ConfigError(f"task {task.name!r}: label {task.label!r} is not a class index; kNN and linear "
                          "classification need an integer label")
    num_classes = int(max(labels[split].max() for split in labels)) + 1
    rows = []
    for protocol in task.protocols:
        start = time.perf_counter()
        if protocol == "knn":
            predictions = knn_predict(train, labels["train"], test, num_classes, config.knn)
            settings = asdict(config.knn)
        else:
            predictions, chosen = linear_predict(
                (train, labels["train"]), (val, labels["val"]), test, num_classes, config.linear
            )
            settings = {**asdict(config.linear), **chosen}
        accuracy = (predictions == labels["test"]).float().mean().item() * 100
        rows.append({
            "encoder": name,
            "task": task.name,
            "label": task.label,
            "protocol": protocol,
            "metric": "top1",
            "value": accuracy,
            "settings": json.dumps(settings, sort_keys=True),
            "dataset": json.dumps(asdict(task.dataset), sort_keys=True),
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test),
            "seed": config.seed,
            "suite": config.name,
            "source": source,
            "seconds": time.perf_counter() - start,
            "augbench": augbench.__version__,
        })
    return rows
