"""Evaluation protocols on cached frozen features: kNN, fast linear (logistic or ridge), an MLP head, few-shot.

Each takes features (N, D) and targets and returns a predictor for new
features together with the settings it chose, so every result can carry its
full protocol and one fitted model can score many test sets (clean,
corrupted, shifted). Protocols that run the encoder itself (SGD linear with
augmentation, fine-tuning, the dense head) live in `training` and `dense`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Predictor = Callable[[Tensor], Tensor]
FEW_SHOT_CLASSIFIERS = ("prototype", "logistic")
LINEAR_SELECTIONS = ("val_loss", "val_accuracy")


@dataclass
class KNNConfig:
    """Weighted kNN of Wu et al. (2018) as used by InstDisc/DINO: cosine similarity, votes exp(s/τ)."""

    k: int = 20
    temperature: float = 0.07
    chunk_size: int = 1024


@dataclass
class LinearConfig:
    """Multinomial logistic regression by full-batch L-BFGS on standardised features.

    The L2 penalty `weight_decay`·‖W‖²/2 is chosen from `weight_decays` on
    the val split, by `select_by`: "val_loss", the lowest cross-entropy (the
    default), or "val_accuracy", the highest top-1, ties to the stronger
    penalty. The model trained on the train split at that value is the one
    tested. Cross-entropy is the default because it scores every val image's
    whole predicted distribution, not one right-or-wrong bit: on 1,000 val
    images, top-1 differs between penalties by less than its own standard
    error (about 1.4 points at 30 %) and picked too strong a penalty. Over
    eleven quickstart-config encoders on the hue task (10,000 test images),
    cross-entropy's pick tested 0.27 points higher on average (−0.02 to
    +0.87) and was the test-best penalty on five.

    `refit_on_train_val`: test a probe refit on train + val at the chosen
    penalty instead, as the transfer protocol of Kornblith et al. (2019) does
    (and SimCLR's and BYOL's transfer tables after it); on datasets with few
    images per class (Flowers-102: 10 in train, 10 in val) it doubles what
    the probe learns from.
    """

    weight_decays: list[float] = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    max_iter: int = 100
    select_by: str = "val_loss"
    refit_on_train_val: bool = False

    def __post_init__(self):
        if self.select_by not in LINEAR_SELECTIONS:
            raise ValueError(f"select_by={self.select_by!r}: expected one of {list(LINEAR_SELECTIONS)}")


def _nearest(bank: Tensor, queries: Tensor, config: KNNConfig) -> Iterator[tuple[Tensor, Tensor]]:
    """Chunk by chunk of queries: the cosine similarities and bank indices (chunk, k) of the k nearest bank rows."""
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    k = min(config.k, len(bank))
    for start in range(0, len(queries), config.chunk_size):
        yield (queries[start : start + config.chunk_size] @ bank.T).topk(k, dim=1)


def knn_predict(bank: Tensor, bank_labels: Tensor, queries: Tensor, num_classes: int, config: KNNConfig) -> Tensor:
    predictions = []
    for top_similarity, top_index in _nearest(bank, queries, config):
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
    """Test predictions and fit_linear_classifier's record of the sweep."""
    predict, chosen = fit_linear_classifier(train, val, num_classes, config)
    return predict(test), chosen


def fit_linear_classifier(
    train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], num_classes: int, config: LinearConfig
) -> tuple[Predictor, dict]:
    """A class predictor and {"weight_decay": chosen, "val_loss": {wd: CE}, "val_accuracy": {wd: acc}}, plus
    "refit_weight_decay" when the probe is refit on train + val."""
    mean, std = _standardisation(train[0])
    train_features = (train[0] - mean) / std
    fitted, losses, accuracies, weights = {}, {}, {}, None
    for weight_decay in sorted(config.weight_decays, reverse=True):  # strong to weak: each warm-starts the next
        weights = fit_logistic_regression(train_features, train[1], num_classes, weight_decay, config.max_iter, weights)
        val_scores = _linear_scores((val[0] - mean) / std, weights)
        fitted[weight_decay] = weights
        losses[weight_decay] = F.cross_entropy(val_scores, val[1]).item()
        accuracies[weight_decay] = (val_scores.argmax(1) == val[1]).float().mean().item()
    # max() keeps the first best of the sweep, so top-1 ties go to the stronger penalty.
    by_loss = config.select_by == "val_loss"
    chosen = min(losses, key=losses.get) if by_loss else max(accuracies, key=accuracies.get)
    record = {"weight_decay": chosen, "val_loss": losses, "val_accuracy": accuracies}
    best = fitted[chosen]
    if config.refit_on_train_val:
        features, labels = torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]])
        mean, std = _standardisation(features)
        record["refit_weight_decay"] = _refit_penalty(chosen, len(train[0]), len(features))
        best = fit_logistic_regression((features - mean) / std, labels, num_classes, record["refit_weight_decay"],
                                       config.max_iter, best)
    return (lambda queries: _linear_scores((queries - mean) / std, best).argmax(1)), record


def _standardisation(features: Tensor) -> tuple[Tensor, Tensor]:
    return features.float().mean(dim=0), features.float().std(dim=0).clamp_min(1e-6)


def _linear_scores(standardised: Tensor, weights: Tensor) -> Tensor:
    return standardised @ weights[:-1] + weights[-1]


def _refit_penalty(weight_decay: float, train_size: int, refit_size: int) -> float:
    """The penalty for the refit on more images: the same absolute penalty on the summed loss, as scikit-learn's C
    (Kornblith et al.'s probe) keeps it, is a proportionally weaker one on our mean loss."""
    return weight_decay * train_size / refit_size


def knn_classifier(bank: Tensor, bank_labels: Tensor, num_classes: int, config: KNNConfig) -> Predictor:
    return lambda queries: knn_predict(bank, bank_labels, queries, num_classes, config)


def knn_regress(bank: Tensor, bank_targets: Tensor, queries: Tensor, config: KNNConfig) -> Tensor:
    """The votes of `knn_predict` as weights of a mean: each query gets the exp(s/τ)-weighted mean of its k
    nearest neighbours' target rows (N, K), so a regression target reads with the same k, τ and distance."""
    predictions = []
    for top_similarity, top_index in _nearest(bank, queries, config):
        weights = torch.softmax(top_similarity / config.temperature, dim=1)  # exp(s/τ), normalised per query
        predictions.append(torch.einsum("qk,qkd->qd", weights, bank_targets[top_index].to(weights.dtype)))
    return torch.cat(predictions)


def knn_regressor(bank: Tensor, bank_targets: Tensor, config: KNNConfig) -> Predictor:
    return lambda queries: knn_regress(bank, bank_targets, queries, config)


def fit_ridge(train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], config: LinearConfig) -> tuple[Predictor, dict]:
    """Ridge regression of targets (N, K) on standardised features, the penalty chosen on val.

    Minimises mean ½‖x·W + b − y‖² + weight_decay·‖W‖²/2 in closed form
    (float64 normal equations; D is a few thousand at most), so the sweep
    reuses one Gram matrix. The chosen penalty has the lowest val MSE; with
    `refit_on_train_val` the regression is solved again on train + val.
    """
    solve = _ridge_solver(train)
    best, sweep = None, {}
    val_targets = val[1].double().reshape(len(val[0]), -1)
    for weight_decay in config.weight_decays:
        predictor = solve(weight_decay)
        error = (predictor(val[0]).double() - val_targets).pow(2).mean().item()
        sweep[weight_decay] = error
        if best is None or error < sweep[best[0]]:
            best = (weight_decay, predictor)
    record = {"weight_decay": best[0], "val_mse": sweep}
    if not config.refit_on_train_val:
        return best[1], record
    record["refit_weight_decay"] = _refit_penalty(best[0], len(train[0]), len(train[0]) + len(val[0]))
    refit = _ridge_solver((torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]])))
    return refit(record["refit_weight_decay"]), record


def _ridge_solver(data: tuple[Tensor, Tensor]) -> Callable[[float], Predictor]:
    """weight_decay -> the ridge predictor fitted to `data` at that penalty, from one Gram matrix."""
    features, targets = data[0].double(), data[1].double().reshape(len(data[0]), -1)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std
    target_mean = targets.mean(0)
    gram, moment = x.T @ x / len(x), x.T @ (targets - target_mean) / len(x)
    identity = torch.eye(len(gram), dtype=gram.dtype)

    def solve(weight_decay: float) -> Predictor:
        weights = torch.linalg.solve(gram + weight_decay * identity, moment)
        return lambda queries: (((queries.double() - mean) / std) @ weights + target_mean).float()

    return solve


@dataclass
class MLPConfig:
    """A two-layer MLP on standardised cached features, trained by Adam for a fixed budget (ViRB's two-frame head)."""

    hidden: int = 512
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4


def fit_mlp(train: tuple[Tensor, Tensor], num_outputs: int, classify: bool, config: MLPConfig,
            seed: int) -> Predictor:
    """Class predictions (classify) or regression outputs (N, num_outputs) of an MLP trained on `train`."""
    generator = torch.Generator().manual_seed(seed)
    features, targets = train
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(features.shape[1], config.hidden), nn.BatchNorm1d(config.hidden), nn.ReLU(),
                          nn.Linear(config.hidden, num_outputs))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    inputs = (features - mean) / std
    targets = targets if classify else targets.float().reshape(len(targets), -1)
    loss_of = F.cross_entropy if classify else F.mse_loss
    for _ in range(config.epochs):
        for batch in torch.randperm(len(inputs), generator=generator).split(config.batch_size):
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            optimizer.zero_grad()
            loss_of(model(inputs[batch]), targets[batch]).backward()
            optimizer.step()
    model.eval()

    @torch.no_grad()
    def predict(queries: Tensor) -> Tensor:
        outputs = model((queries - mean) / std)
        return outputs.argmax(1) if classify else outputs

    return predict


@dataclass
class FewShotConfig:
    """N-way K-shot episodes; `classifier` is "prototype" (cosine to class means of L2-normalised features,
    as in SimpleShot) or "logistic" (L-BFGS logistic regression on the support set, `weight_decay`)."""

    classifier: str = "prototype"
    weight_decay: float = 1e-2
    max_iter: int = 50

    def __post_init__(self):
        if self.classifier not in FEW_SHOT_CLASSIFIERS:
            raise ValueError(f"classifier={self.classifier!r}: expected one of {list(FEW_SHOT_CLASSIFIERS)}")


def few_shot_accuracies(features: Tensor, labels: Tensor, ways: int, shots: int, queries: int, episodes: int,
                        seed: int, config: FewShotConfig) -> np.ndarray:
    """Accuracy (%) of each of `episodes` episodes, each with its own classes, support and query images."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels.numpy())
    members = {c: np.flatnonzero(labels.numpy() == c) for c in classes}
    short = {int(c): len(m) for c, m in members.items() if len(m) < shots + queries}
    if len(classes) < ways or short:
        raise ValueError(f"few-shot {ways}-way {shots}-shot with {queries} queries needs {ways} classes of "
                         f"{shots + queries} images; got {len(classes)} classes, short: {short}")
    features = F.normalize(features.float(), dim=1)
    accuracies = np.empty(episodes)
    for episode in range(episodes):
        chosen = rng.choice(classes, size=ways, replace=False)
        picks = [rng.choice(members[c], size=shots + queries, replace=False) for c in chosen]
        support = torch.from_numpy(np.concatenate([p[:shots] for p in picks]))
        query = torch.from_numpy(np.concatenate([p[shots:] for p in picks]))
        support_labels = torch.arange(ways).repeat_interleave(shots)
        query_labels = torch.arange(ways).repeat_interleave(queries)
        if config.classifier == "prototype":
            prototypes = F.normalize(features[support].reshape(ways, shots, -1).mean(1), dim=1)
            predictions = (features[query] @ prototypes.T).argmax(1)
        else:
            weights = fit_logistic_regression(features[support], support_labels, ways, config.weight_decay,
                                              config.max_iter)
            predictions = (features[query] @ weights[:-1] + weights[-1]).argmax(1)
        accuracies[episode] = (predictions == query_labels).float().mean().item() * 100
    return accuracies


def mean_and_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % confidence interval, 1.96·s/√n."""
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))
