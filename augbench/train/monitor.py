"""How well the encoder reads a class label while it pretrains: the running checks lightly's benchmarks and
solo-learn log.

kNN: every `every_n_epochs` epochs the encoder, in eval mode (BatchNorm on
its running statistics, which stay as they are), embeds a fixed, seeded
sample of labelled training images as the bank and of validation images as
the queries; the weighted kNN of the evaluation protocol (`augbench.evaluate.
protocols.knn_predict`) classifies the queries, and the top-1 accuracy is
logged as `monitor/knn_<label>` to the CSV, TensorBoard (and W&B) logs and
the progress bar. It reads no global RNG and changes no weight, so a run with
the monitor trains exactly as one without it.

Online linear (`online_linear`, solo-learn's online classifier): a linear
layer of the training module learns the label from the detached features of
each step's first view (`train/online_linear_loss`, `train/online_linear_acc`),
in its own parameter group of the pretraining optimiser; at the same epochs it
classifies the kNN's validation sample (`monitor/linear_<label>`). The
features are detached, so the encoder trains exactly as without it.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import Dataset

from augbench.data import ImageDataset
from augbench.errors import ConfigError
from augbench.evaluate.features import extract_features
from augbench.evaluate.protocols import KNNConfig, knn_predict
from augbench.methods.base import Method
from augbench.train.config import MonitorConfig, PretrainConfig


class ProbeMonitor(Callback):
    """The kNN and the online linear classifier's validation accuracy, every `every_n_epochs` epochs on rank 0."""

    def __init__(self, config: MonitorConfig, train: Dataset, val: Dataset, seed: int):
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        self.bank = _Sample(train, config.label, config.max_bank_images, generator)
        self.queries = _Sample(val, config.label, config.max_val_images, generator)
        self.num_classes = int(max(self.bank.labels.max(), self.queries.labels.max())) + 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.config.every_n_epochs or not trainer.is_global_zero:
            return
        accuracies = self.accuracies(pl_module.method.encoder(), getattr(pl_module, "online_classifier", None),
                                     pl_module.device)
        for name, accuracy in accuracies.items():
            pl_module.log(f"monitor/{name}_{self.config.label}", accuracy, prog_bar=True, rank_zero_only=True)

    def accuracies(self, encoder: nn.Module, classifier: nn.Module | None, device: torch.device | str
                   ) -> dict[str, float]:
        """Top-1 in % on the val sample: of the kNN over the bank (`knn`) and of `classifier` (`linear`)."""
        queries = self.queries.features(encoder, self.config.batch_size, device)
        predictions = {}
        if self.config.knn:
            settings = KNNConfig(k=self.config.k, temperature=self.config.temperature)
            bank = self.bank.features(encoder, self.config.batch_size, device)
            predictions["knn"] = knn_predict(bank, self.bank.labels, queries, self.num_classes, settings)
        if classifier is not None:
            with torch.no_grad():
                predictions["linear"] = classifier(queries.to(device)).argmax(dim=1).cpu()
        return {name: (predicted == self.queries.labels).float().mean().item() * 100
                for name, predicted in predictions.items()}


def num_classes(train: ImageDataset, label: str, key: str) -> int:
    """The number of classes of the class label `label` (set by config key `key`) in the training split: its
    largest value + 1."""
    values = train.labels[label]
    if values.is_floating_point() or values.ndim != 1:
        raise ConfigError(f"{key}={label!r} is not a class label of {train.name} (it holds "
                          f"{'floats' if values.is_floating_point() else f'{values.ndim}-d values'}); "
                          "choose a label of integer classes")
    return int(values.max()) + 1


def online_linear(config: PretrainConfig, method: Method, train: ImageDataset) -> dict[str, Any]:
    """PretrainModule's online classifier arguments: a linear layer from the encoder's features to every class
    of the label in the training split."""
    label = config.monitor.label
    encoder = method.encoder()
    was_training = encoder.training
    with torch.no_grad():  # in eval mode, so measuring the feature width changes no BatchNorm statistic
        width = encoder.eval()(torch.zeros(2, 3, train.image_size, train.image_size)).shape[1]
    encoder.train(was_training)
    classes = num_classes(train, label, "monitor.label")
    lr = config.monitor.online_linear_lr or (1e-3 if config.optim.name == "adamw" else 0.1)
    return {"online_classifier": nn.Linear(width, classes), "online_label": label, "online_lr": lr}


class _Sample:
    """Up to `count` items of a split that carry a class (STL-10's unlabelled images, label -1, do not), drawn once.

    Its images are read a batch at a time when embedded, never held whole:
    in memory a copy of 10,000 at 224 px would take 1.5 GB.
    """

    def __init__(self, dataset: Dataset, label: str, count: int, generator: torch.Generator):
        labels = dataset.labels[label]  # the label's name was checked against the dataset's at config load
        where = f"monitor.label={label!r}"
        if labels.ndim != 1 or labels.is_floating_point():
            raise ConfigError(f"{where}: the monitor needs a class index per image; {label!r} of {dataset.name} "
                              f"is {labels.dtype} of shape {tuple(labels.shape[1:])} per image")
        labelled = torch.nonzero(labels >= 0).flatten()
        if not len(labelled):
            raise ConfigError(f"{where}: {dataset.name}/{dataset.split} has no labelled image")
        self.dataset = dataset
        self.indices = labelled[torch.randperm(len(labelled), generator=generator)[:count]].sort().values
        self.labels = labels[self.indices]

    def features(self, encoder: nn.Module, batch_size: int, device: torch.device | str) -> Tensor:
        return extract_features(encoder, self.dataset, batch_size, device, order=self.indices)  # (N, D)
