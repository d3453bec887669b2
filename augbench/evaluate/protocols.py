"""Evaluation protocols on cached frozen features: kNN and a fast linear probe.

Both take features (N, D) and integer labels (N,) and return test
predictions together with the settings that produced them, so every result
can carry its full protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class KNNConfig:
    """Weighted kNN of Wu et al. (2018) as used by InstDisc/DINO: cosine similarity, votes exp(s/τ)."""

    k: int = 20
    temperature: float = 0.07
    chunk_size: int = 1024


@dataclass
class LinearConfig:
    """Multinomial logistic regression by full-batch L-BFGS on standardised features.

    The L2 penalty `weight_decay`·‖W‖²/2 is chosen from `weight_decays` by
    validation accuracy; the model trained on the train split at that value
    is the one tested.
    """

    weight_decays: list[float] = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    max_iter: int = 100


def knn_predict(bank: Tensor, bank_labels: Tensor, queries: Tensor, num_classes: int, config: KNNConfig) -> Tensor:
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    k = min(config.k, len(bank))
    predictions = []
    for start in range(0, len(queries), config.chunk_size):
        similarity = queries[start : start + config.chunk_size] @ bank.T  # (chunk, N)
        top_similarity, top_index = similarity.topk(k, dim=1)
        weights = (top_similarity / config.temperature).exp()
        votes = torch.zeros(len(top_index), num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, bank_labels[top_index], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def fit_logistic_regression(
    features: Tensor, labels: Tensor, num_classes: int, weight_decay: float, max_iter: int, init: Tensor | None = None
) -> Tensor:
    """Weights (D + 1, C), bias last, minimising mean cross-entropy + weight_decay·‖W‖²/2.

    Written on torch's L-BFGS rather than scikit-learn's so that it runs on
    the features' device (a GPU for ImageNet-size feature banks) and can
    warm-start along the weight-decay sweep.
    """
    inputs = torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype)], dim=1)
    weights = (init.clone() if init is not None else torch.zeros(inputs.shape[1], num_classes)).requires_grad_(True)
    optimizer = torch.optim.LBFGS([weights], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(inputs @ weights, labels) + weight_decay / 2 * weights[:-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach()


def linear_predict(
    train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], test: Tensor, num_classes: int, config: LinearConfig
) -> tuple[Tensor, dict]:
    """Test predictions and {"weight_decay": chosen, "val_accuracy": {wd: acc}}."""
    mean, std = train[0].mean(dim=0), train[0].std(dim=0).clamp_min(1e-6)

    def scores(features: Tensor, weights: Tensor) -> Tensor:
        standardised = (features - mean) / std
        return standardised @ weights[:-1] + weights[-1]

    train_features = (train[0] - mean) / std
    best, best_accuracy, sweep, weights = None, -1.0, {}, None
    for weight_decay in sorted(config.weight_decays, reverse=True):  # strong to weak: each warm-starts the next
        weights = fit_logistic_regression(train_features, train[1], num_classes, weight_decay, config.max_iter, weights)
        accuracy = (scores(val[0], weights).argmax(1) == val[1]).float().mean().item()
        sweep[weight_decay] = accuracy
        if accuracy > best_accuracy:
            best, best_accuracy = (weight_decay, weights), accuracy
    return scores(test, best[1]).argmax(1), {"weight_decay": best[0], "val_accuracy": sweep}
