"""Running one end task: its splits, its protocols, its metric; one record per protocol.

`Context` holds the frozen encoder and caches what several tasks share:
datasets, their features (encoded once per split) and, for the dense head,
their stage features. Each task kind has a runner returning `Result`s;
`evaluate()` turns them into records with the encoder's identity.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from augbench.augment.ops import RandomResizedCrop
from augbench.augment.views import to_float
from augbench.data import SPLITS, Split, load_split
from augbench.data.subsets import long_tailed_indices, subset
from augbench.errors import ConfigError
from augbench.evaluate import dense as dense_head
from augbench.evaluate.corruptions import corrupt
from augbench.evaluate.features import extract_features
from augbench.evaluate.probes import sensitivity_table
from augbench.evaluate.protocols import (
    few_shot_accuracies,
    fit_linear_classifier,
    fit_mlp,
    fit_ridge,
    knn_classifier,
    knn_regressor,
    mean_and_ci95,
)
from augbench.evaluate.suite import SuiteConfig, TaskConfig, protocol_config, shifted_dataset
from augbench.evaluate.training import finetune_classifier, sgd_linear_classifier
from augbench.metrics import METRICS

# A fitted protocol maps (features, the split or its uint8 images) to predictions in the target's encoding. Most
# read the features cached once per split; those that run the encoder on pixels themselves (SGD linear and
# fine-tuning) read a lazily read split a batch at a time, so that none holds its images whole.
Fitted = Callable[[Tensor, Split | Tensor], Tensor]


@dataclass
class Result:
    protocol: str
    metric: str
    value: float
    settings: dict
    budget: dict
    details: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    subtask: str = ""  # e.g. the augmentation of an invariance probe, appended to the task's name


def _key(dataset_config: Any, split: str) -> tuple[str, str]:
    """A split's cache key; a `subset` draws from the train split only, so val and test are shared without it."""
    settings = asdict(dataset_config)
    if split != "train":
        settings.pop("subset", None)
    return json.dumps(settings, sort_keys=True), split


@dataclass
class Context:
    encoder: nn.Module
    device: str
    suite: SuiteConfig
    datasets: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)

    def dataset(self, config: Any, split: str) -> Split:
        key = _key(config, split)
        if key not in self.datasets:
            self.datasets[key] = load_split(config, split)
        return self.datasets[key]

    def split(self, config: Any, split: str) -> tuple[Tensor, Split]:
        """Features (N, D) and the dataset of one split, encoded once."""
        key = _key(config, split)
        dataset = self.dataset(config, split)
        if key not in self.features:
            self.features[key] = extract_features(self.encoder, dataset, self.suite.batch_size, self.device)
        return self.features[key], dataset

    def keep_only(self, tasks: Sequence[TaskConfig]) -> None:
        """Drop the cached images, features and stage maps that none of `tasks` reads.

        A suite of datasets on disk would otherwise hold every dataset's images
        to the end: at 224 px CIFAR-10 alone is 9 GB.
        """
        needed = {_key(config, split)[0] for task in tasks for config in dataset_configs(task) for split in SPLITS}
        for cache in (self.datasets, self.features, self.stages):
            for key in [key for key in cache if key[0] not in needed]:
                del cache[key]

    def stage_maps(self, config: Any, split: str, dense: dense_head.DenseConfig) -> list[Tensor]:
        key = (*_key(config, split), dense.cache_resolution)
        if key not in self.stages:
            images = self.dataset(config, split).images
            self.stages[key] = dense_head.stage_features(self.encoder, images, dense, self.device,
                                                         self.suite.batch_size)
        return self.stages[key]


def dataset_configs(task: TaskConfig) -> list[Any]:
    """The dataset configs whose splits `task` reads."""
    return [task.dataset, shifted_dataset(task)] if task.kind == "background_shift" else [task.dataset]


def run_task(task: TaskConfig, context: Context) -> list[Result]:
    seed = context.suite.seed if task.seed is None else task.seed
    return RUNNERS[task.kind](task, context, seed)


# --- targets -----------------------------------------------------------------------------------------------------


def _labels(task: TaskConfig, dataset: Split) -> Tensor:
    labels = dataset.labels[task.label]
    if task.target == "class" and (labels.is_floating_point() or labels.ndim != 1):
        raise ConfigError(f"task {task.name!r}: label {task.label!r} is not a class index; target 'class' needs an "
                          "integer label per image")
    if task.target in ("segmentation", "binary_map", "map") and labels.ndim != 3:
        raise ConfigError(f"task {task.name!r}: label {task.label!r} is not a per-pixel map; target "
                          f"{task.target!r} needs one")
    return labels


def _encode(task: TaskConfig, labels: Tensor) -> Tensor:
    """Labels → what a head fits: (cos, sin) for angles, float rows for vectors and boxes."""
    if task.target == "angle":
        radians = torch.deg2rad(labels.float())
        return torch.stack([radians.cos(), radians.sin()], dim=1)
    if task.target in ("vector", "box"):
        return labels.float().reshape(len(labels), -1)
    return labels


def _decode(task: TaskConfig, outputs: Tensor) -> Tensor:
    if task.target == "angle":
        return torch.rad2deg(torch.atan2(outputs[:, 1], outputs[:, 0])) % 360
    return outputs


def _score(task: TaskConfig, predictions: Tensor, labels: Tensor) -> float:
    if task.target in ("vector", "angle", "box", "map"):
        labels = labels.float().reshape(len(labels), -1) if task.target in ("vector", "box") else labels.float()
    return METRICS[task.metric].compute(_decode(task, predictions), labels)


def _settings(config: Any, chosen: dict | None = None) -> dict:
    return {**(asdict(config) if is_dataclass(config) else dict(config)), **(chosen or {})}


# --- fitting image-level protocols ---------------------------------------------------------------------------------


def _fit(protocol: str, task: TaskConfig, context: Context, train: tuple[Tensor, Split, Tensor],
         val: tuple[Tensor, Split, Tensor], seed: int) -> tuple[Fitted, dict, dict]:
    """Fit `protocol` on train (features, split, encoded targets); return the predictor, settings, budget."""
    config = protocol_config(context.suite, task, protocol)
    features, data, targets = train
    val_features, val_data, val_targets = val
    classify = task.target == "class"
    num_classes = int(max(targets.max(), val_targets.max())) + 1 if classify else 0
    if protocol == "knn":
        if classify:
            predict = knn_classifier(features, targets, num_classes, config)
        else:
            predict = knn_regressor(features, targets, config)
        return (lambda f, _: predict(f)), _settings(config), {"train_images": len(features)}
    if protocol == "linear":
        if classify:
            predict, chosen = fit_linear_classifier((features, targets), (val_features, val_targets), num_classes,
                                                    config)
        else:
            predict, chosen = fit_ridge((features, targets), (val_features, val_targets), config)
        fitted_on = len(features) + (len(val_features) if config.refit_on_train_val else 0)
        budget = {"train_images": fitted_on, "max_iter": config.max_iter, "sweep": len(config.weight_decays)}
        return (lambda f, _: predict(f)), _settings(config, chosen), budget
    if protocol == "mlp":
        outputs = num_classes if classify else targets.shape[1]
        predict = fit_mlp((features, targets), outputs, classify, config, seed)
        return (lambda f, _: predict(f)), _settings(config), {"train_images": len(features), "epochs": config.epochs}
    if protocol == "sgd_linear":
        head, chosen = sgd_linear_classifier(context.encoder, (data, targets), (val_data, val_targets), num_classes,
                                             config, seed, context.device)

        def predict_with_head(f: Tensor, _: Split | Tensor) -> Tensor:
            with torch.no_grad():
                return head(f).argmax(1)

        used = min(len(data), config.max_train_images or len(data))
        return predict_with_head, _settings(config, chosen), {"train_images": used, "epochs": config.epochs,
                                                              "sweep": len(config.lrs)}
    if protocol == "finetune":
        model = finetune_classifier(context.encoder, (data, targets), num_classes, config, seed, context.device)
        used = min(len(data), config.max_train_images or len(data))

        def predict_finetuned(_: Tensor, test: Split | Tensor) -> Tensor:
            return extract_features(model, test, context.suite.batch_size, context.device).argmax(1)

        return predict_finetuned, _settings(config), {"train_images": used, "epochs": config.epochs,
                                                      "optimizer": config.optimizer.name}
    raise ConfigError(f"task {task.name!r}: protocol {protocol!r} does not apply to a {task.kind} task")


def _splits(task: TaskConfig, context: Context, dataset_config: Any | None = None):
    """(features, split, encoded targets, raw labels) per split of the task's dataset."""
    out = {}
    for split in ("train", "val", "test"):
        features, dataset = context.split(dataset_config or task.dataset, split)
        labels = _labels(task, dataset)
        out[split] = (features, dataset, _encode(task, labels), labels)
    return out


def _sizes(splits: dict) -> dict:
    return {f"n_{split}": len(values[0]) for split, values in splits.items()}


# --- runners, one per task kind ------------------------------------------------------------------------------------


def run_standard(task: TaskConfig, context: Context, seed: int) -> list[Result]:
    if "dense" in task.protocols:
        return [_run_dense(task, context, seed)]
    splits = _splits(task, context)
    results = []
    for protocol in task.protocols:
        predict, settings, budget = _fit(protocol, task, context, splits["train"][:3], splits["val"][:3], seed)
        features, test, _, labels = splits["test"]
        value = _score(task, predict(features, test), labels)
        results.append(Result(protocol, task.metric, value, settings, budget, sizes=_sizes(splits)))
    return results


def _run_dense(task: TaskConfig, context: Context, seed: int) -> Result:
    config = protocol_config(context.suite, task, "dense")
    maps = {s: context.stage_maps(task.dataset, s, config) for s in ("train", "test")}
    labels = {s: _labels(task, context.dataset(task.dataset, s)) for s in ("train", "test")}
    predict = dense_head.fit_dense_head(maps["train"], labels["train"], task.target, config, seed)
    value = _score(task, predict(maps["test"]), labels["test"])
    used = min(len(labels["train"]), config.max_train_images or len(labels["train"]))
    sizes = {"n_train": used, "n_val": 0, "n_test": len(labels["test"])}
    stage_shapes = [list(m.shape[1:]) for m in maps["train"]]
    return Result("dense", task.metric, value, _settings(config, {"stage_shapes": stage_shapes}),
                  {"train_images": used, "epochs": config.epochs}, sizes=sizes)


def run_long_tailed(task: TaskConfig, context: Context, seed: int) -> list[Result]:
    splits = _splits(task, context)
    features, data, targets, _ = splits["train"]
    indices = long_tailed_indices(targets.numpy(), task.long_tailed.imbalance_ratio, seed)
    keep = torch.from_numpy(indices)
    train = (features[keep], subset(data, indices), targets[keep])
    counts = torch.bincount(targets[keep], minlength=int(targets.max()) + 1)
    groups = {
        "many": counts > task.long_tailed.many,
        "medium": (counts <= task.long_tailed.many) & (counts >= task.long_tailed.few),
        "few": counts < task.long_tailed.few,
    }
    test_features, test, _, test_labels = splits["test"]
    results = []
    for protocol in task.protocols:
        predict, settings, budget = _fit(protocol, task, context, train, splits["val"][:3], seed)
        predictions = predict(test_features, test)
        per_class = torch.stack([
            (predictions[test_labels == c] == c).float().mean() * 100 if (test_labels == c).any() else torch.tensor(0.0)
            for c in range(len(counts))
        ])
        details = {f"{name}_top1": (per_class[mask].mean().item() if mask.any() else None)
                   for name, mask in groups.items()}
        details |= {f"{name}_classes": int(mask.sum()) for name, mask in groups.items()}
        details["train_class_sizes"] = counts.tolist()
        results.append(Result(protocol, task.metric, _score(task, predictions, test_labels), settings,
                              budget | {"imbalance_ratio": task.long_tailed.imbalance_ratio}, details,
                              {"n_train": len(keep), "n_val": len(splits["val"][0]), "n_test": len(test_labels)}))
    return results


def run_background_shift(task: TaskConfig, context: Context, seed: int) -> list[Result]:
    splits = _splits(task, context)
    shifted_features, shifted = context.split(shifted_dataset(task), "test")
    shifted_labels = _labels(task, shifted)
    results = []
    for protocol in task.protocols:
        predict, settings, budget = _fit(protocol, task, context, splits["train"][:3], splits["val"][:3], seed)
        clean = _score(task, predict(splits["test"][0], splits["test"][1]), splits["test"][3])
        value = _score(task, predict(shifted_features, shifted), shifted_labels)
        details = {"in_distribution": clean, "drop": clean - value,
                   "relative_drop": (clean - value) / clean if clean else None, "shifted_test": task.shifted_test}
        results.append(Result(protocol, task.metric, value, settings, budget, details, _sizes(splits)))
    return results


_CORRUPTED: dict[tuple, Tensor] = {}  # uint8 corrupted test images, shared by every encoder evaluated in-process


def _corrupted(images: Tensor, name: str, severity: int, seed: int, dataset_key: tuple[str, str]) -> Tensor:
    key = (dataset_key, len(images), name, severity, seed)
    if key not in _CORRUPTED:
        generator = torch.Generator().manual_seed(seed * 1000 + severity)
        corrupted = corrupt(to_float(images), name, severity, generator)
        _CORRUPTED[key] = (corrupted * 255).round().clamp(0, 255).to(torch.uint8)
    return _CORRUPTED[key]


def run_corruptions(task: TaskConfig, context: Context, seed: int) -> list[Result]:
    splits = _splits(task, context)
    fitted = {p: _fit(p, task, context, splits["train"][:3], splits["val"][:3], seed) for p in task.protocols}
    features, test, _, labels = splits["test"]
    cap = min(task.corruptions.max_test_images or len(labels), len(labels))
    test = subset(test, np.arange(cap))  # of a lazy split, only these are decoded
    features, images, labels = features[:cap], test.images, labels[:cap]
    clean = {p: _score(task, predict(features, test), labels) for p, (predict, _, _) in fitted.items()}
    scores: dict[str, dict[str, dict[int, float]]] = {p: {} for p in fitted}
    for name in task.corruptions.names:
        for severity in task.corruptions.severities:
            corrupted = _corrupted(images, name, severity, seed, _key(task.dataset, "test"))
            corrupted_features = extract_features(context.encoder, corrupted, context.suite.batch_size,
                                                  context.device)
            for protocol, (predict, _, _) in fitted.items():
                value = _score(task, predict(corrupted_features, corrupted), labels)
                scores[protocol].setdefault(name, {})[severity] = value
    results = []
    for protocol, (_, settings, budget) in fitted.items():
        per_corruption = {name: float(np.mean(list(v.values()))) for name, v in scores[protocol].items()}
        per_severity = {s: float(np.mean([scores[protocol][n][s] for n in per_corruption]))
                        for s in task.corruptions.severities}
        mean = float(np.mean(list(per_corruption.values())))
        details = {"clean": clean[protocol], "relative_drop": (clean[protocol] - mean) / clean[protocol]
                   if clean[protocol] else None, "per_corruption": per_corruption, "per_severity": per_severity,
                   "scores": scores[protocol]}
        results.append(Result(protocol, task.metric, mean, settings,
                              budget | {"corrupted_test_images": cap,
                                        "corruptions": len(task.corruptions.names) * len(task.corruptions.severities)},
                              details, {**_sizes(splits), "n_test": cap}))
    return results


def run_few_shot(task: TaskConfig, context: Context, seed: int) -> list[Result]:
    config = protocol_config(context.suite, task, "fewshot")
    episodes = task.few_shot
    features, dataset = context.split(task.dataset, episodes.split)
    labels = _labels(task, dataset)
    accuracies = few_shot_accuracies(features, labels, episodes.ways, episodes.shots, episodes.queries,
                                     episodes.episodes, seed, config)
    mean, ci95 = mean_and_ci95(accuracies)
    details = {"ci95": ci95, "std": float(accuracies.std(ddof=1)), "classes": int(labels.unique().numel())}
    budget = asdict(episodes)
    return [Result("fewshot", task.metric, mean, _settings(config), budget, details,
                   {"n_train": 0, "n_val": 0, "n_test": len(labels)})]


def _crop_pairs(images: Tensor, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Two square crops per image resized to the image size, and the offset (N, 2) of crop 2's centre from crop 1's."""
    crop = RandomResizedCrop(images.shape[-1])
    corners = torch.rand(2, len(images), 2, generator=generator) * (1 - fraction)
    boxes = torch.cat([corners, corners + fraction], dim=2)  # (2, N, 4)
    float_images = to_float(images)
    first, second = (crop.apply(float_images, {"box": b}) for b in boxes)
    return first, second, corners[1] - corners[0]


def run_crop_pair(task: TaskConfig, context: Context, seed: int) -> list[Result]:
    data = {}
    for index, split in enumerate(("train", "val", "test")):
        dataset = context.dataset(task.dataset, split)
        generator = torch.Generator().manual_seed(seed * 10 + index)
        first, second, offset = _crop_pairs(dataset.images, task.crop_pair.crop_fraction, generator)
        pair = torch.cat([extract_features(context.encoder, views, context.suite.batch_size, context.device)
                          for views in (first, second)], dim=1)
        data[split] = (pair, dataset, offset, offset)
    results = []
    for protocol in task.protocols:
        predict, settings, budget = _fit(protocol, task, context, data["train"][:3], data["val"][:3], seed)
        value = _score(task, predict(data["test"][0], data["test"][1]), data["test"][3])
        results.append(Result(protocol, task.metric, value, settings | {"crop_fraction": task.crop_pair.crop_fraction},
                              budget, sizes=_sizes(data)))
    return results


def run_invariance(task: TaskConfig, context: Context, seed: int) -> list[Result]:
    config = protocol_config(context.suite, task, "probe")
    test = context.dataset(task.dataset, "test")
    images = subset(test, np.arange(min(config.images, len(test)))).images  # of a lazy split, only these are decoded
    table = sensitivity_table(context.encoder, images, config, seed, context.device)
    results = []
    for row in table.itertuples():
        for metric, value in (("cosine", row.cosine), (row.predictability_metric, row.predictability)):
            kind = "cosine" if metric == "cosine" else "predict"
            results.append(Result(
                f"{kind}@{row.stage}", metric, float(value), _settings(config),
                {"images": row.n_images}, {"augmentation": row.augmentation, "stage": row.stage},
                {"n_train": int(0.6 * row.n_images), "n_val": int(0.2 * row.n_images), "n_test": row.n_images},
                subtask=row.augmentation,
            ))
    return results


RUNNERS = {
    "standard": run_standard,
    "long_tailed": run_long_tailed,
    "background_shift": run_background_shift,
    "corruptions": run_corruptions,
    "few_shot": run_few_shot,
    "crop_pair": run_crop_pair,
    "invariance": run_invariance,
}
