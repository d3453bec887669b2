import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from augbench.evaluate.features import extract_features
from augbench.evaluate.protocols import KNNConfig, LinearConfig, knn_predict, linear_predict
from augbench.models.backbones import BackboneConfig, build_backbone


def numpy_weighted_knn(bank, bank_labels, queries, num_classes, k, temperature):
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    predictions = []
    for query in queries:
        similarity = bank @ query
        nearest = np.argsort(-similarity)[:k]
        votes = np.zeros(num_classes)
        for index in nearest:
            votes[bank_labels[index]] += np.exp(similarity[index] / temperature)
        predictions.append(votes.argmax())
    return np.array(predictions)


def test_knn_matches_a_brute_force_numpy_vote():
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(200, 8)), rng.normal(size=(50, 8))
    labels = rng.integers(0, 5, size=200)
    config = KNNConfig(k=7, temperature=0.1, chunk_size=16)
    ours = knn_predict(torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries), 5, config)
    assert np.array_equal(ours.numpy(), numpy_weighted_knn(bank, labels, queries, 5, 7, 0.1))


def test_linear_probe_agrees_with_scikit_learn():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 10)) * 1.5
    def sample(n):
        labels = rng.integers(0, 4, size=n)
        return centres[labels] + rng.normal(size=(n, 10)), labels
    (train, train_labels), (val, val_labels), (test, test_labels) = sample(400), sample(100), sample(300)
    tensor = lambda a: torch.from_numpy(a).float()  # noqa: E731
    predictions, chosen = linear_predict(
        (tensor(train), torch.from_numpy(train_labels)), (tensor(val), torch.from_numpy(val_labels)),
        tensor(test), 4, LinearConfig(weight_decays=[1e-4, 1e-2, 1.0], max_iter=200),
    )
    ours = (predictions.numpy() == test_labels).mean()
    mean, std = train.mean(0), train.std(0, ddof=1)
    c = 1 / (chosen["weight_decay"] * len(train))  # sklearn: C·Σ CE + ‖W‖²/2 ⇔ mean CE + ‖W‖²/(2·C·N)
    reference = LogisticRegression(C=c, max_iter=2000).fit((train - mean) / std, train_labels)
    theirs = reference.score((test - mean) / std, test_labels)
    assert ours > 0.7 and abs(ours - theirs) <= 0.01
    assert set(chosen["val_accuracy"]) == {1e-4, 1e-2, 1.0}


def test_feature_extraction_leaves_bn_statistics_and_training_mode_alone():
    encoder = build_backbone(BackboneConfig(width=0.125)).train()
    encoder(torch.rand(8, 3, 16, 16))  # non-trivial running statistics
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    images = (torch.rand(20, 3, 16, 16) * 255).to(torch.uint8)
    first = extract_features(encoder, images, batch_size=7)
    second = extract_features(encoder, images[:5], batch_size=2)
    assert encoder.training
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert first.shape == (20, 64) and torch.allclose(first[:5], second, atol=1e-5)


@pytest.mark.parametrize("k", [1, 20])
def test_knn_with_k_1_recovers_training_points(k):
    bank = torch.eye(6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    predictions = knn_predict(bank, labels, bank, 3, KNNConfig(k=k))
    assert torch.equal(predictions, labels) or k > 1
