import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss

from augbench.evaluate.features import extract_features
from augbench.evaluate.protocols import (
    KNNConfig,
    LinearConfig,
    fit_linear_classifier,
    fit_ridge,
    knn_predict,
    knn_regress,
    linear_predict,
)
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


def test_knn_regression_is_the_vote_weighted_mean_of_the_neighbours_targets():
    rng = np.random.default_rng(1)
    bank, queries, targets = rng.normal(size=(120, 6)), rng.normal(size=(30, 6)), rng.normal(size=(120, 2))
    ours = knn_regress(torch.from_numpy(bank), torch.from_numpy(targets), torch.from_numpy(queries),
                       KNNConfig(k=5, temperature=0.2, chunk_size=8))
    unit_bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    for query, prediction in zip(queries / np.linalg.norm(queries, axis=1, keepdims=True), ours.numpy()):
        similarity = unit_bank @ query
        nearest = np.argsort(-similarity)[:5]
        weights = np.exp(similarity[nearest] / 0.2)
        np.testing.assert_allclose(prediction, weights @ targets[nearest] / weights.sum(), rtol=1e-10)


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


def test_the_linear_probe_picks_its_penalty_by_val_cross_entropy_or_by_val_accuracy():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 6))
    def sample(n):
        labels = rng.integers(0, 3, size=n)
        return torch.from_numpy(centres[labels] + 2 * rng.normal(size=(n, 6))).float(), torch.from_numpy(labels)
    train, val = sample(150), sample(60)
    weight_decays = [1e-4, 1e-2, 1e-1, 1.0]
    _, by_loss = fit_linear_classifier(train, val, 3, LinearConfig(weight_decays=weight_decays, max_iter=200))
    mean, std = train[0].numpy().mean(0), train[0].numpy().std(0, ddof=1)
    for weight_decay in weight_decays:
        reference = LogisticRegression(C=1 / (weight_decay * len(train[0])), max_iter=2000)
        reference.fit((train[0].numpy() - mean) / std, train[1].numpy())
        val_loss = log_loss(val[1].numpy(), reference.predict_proba((val[0].numpy() - mean) / std), labels=[0, 1, 2])
        assert by_loss["val_loss"][weight_decay] == pytest.approx(val_loss, abs=2e-3)
    assert by_loss["weight_decay"] == min(by_loss["val_loss"], key=by_loss["val_loss"].get)
    config = LinearConfig(weight_decays=weight_decays, max_iter=200, select_by="val_accuracy")
    _, by_accuracy = fit_linear_classifier(train, val, 3, config)
    best = max(by_accuracy["val_accuracy"].values())
    assert by_accuracy["weight_decay"] == max(w for w, a in by_accuracy["val_accuracy"].items() if a == best)


def test_an_unknown_penalty_selection_is_refused_by_name():
    with pytest.raises(ValueError, match="select_by='val_auc'"):
        LinearConfig(select_by="val_auc")


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


def test_ridge_matches_scikit_learn_at_the_chosen_penalty():
    from sklearn.linear_model import Ridge

    from augbench.evaluate.protocols import fit_ridge

    rng = np.random.default_rng(2)
    weights = rng.normal(size=(6, 2))
    def sample(n):
        x = rng.normal(size=(n, 6)) * rng.uniform(0.5, 3, size=6)
        return x, x @ weights + rng.normal(scale=0.3, size=(n, 2))
    (train, train_y), (val, val_y), (test, _) = sample(300), sample(100), sample(50)
    tensor = lambda a: torch.from_numpy(a).float()  # noqa: E731
    predict, chosen = fit_ridge((tensor(train), tensor(train_y)), (tensor(val), tensor(val_y)),
                                LinearConfig(weight_decays=[1e-3, 1e-1, 10.0]))
    assert chosen["weight_decay"] == min(chosen["val_mse"], key=chosen["val_mse"].get)
    mean, std = train.mean(0), train.std(0, ddof=1)
    # mean ½‖·‖² + wd‖W‖²/2 ⇔ sklearn's ‖·‖² + alpha‖W‖² with alpha = wd·N
    reference = Ridge(alpha=chosen["weight_decay"] * len(train)).fit((train - mean) / std, train_y)
    assert np.allclose(predict(tensor(test)).numpy(), reference.predict((test - mean) / std), atol=1e-3)


def test_few_shot_is_perfect_on_separable_features_and_its_ci_shrinks_with_episodes():
    from augbench.evaluate.protocols import FewShotConfig, few_shot_accuracies, mean_and_ci95

    labels = torch.arange(8).repeat_interleave(30)
    separable = torch.nn.functional.one_hot(labels).float()
    for classifier in ("prototype", "logistic"):
        accuracies = few_shot_accuracies(separable, labels, 5, 1, 15, 20, 0, FewShotConfig(classifier=classifier))
        assert (accuracies == 100).all()
    noisy = separable + torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(0)) * 0.8
    widths = [mean_and_ci95(few_shot_accuracies(noisy, labels, 5, 1, 15, n, 0, FewShotConfig()))[1]
              for n in (20, 320)]
    assert widths[1] < widths[0] * 0.5  # ~ 1/√episodes: √(320/20) = 4
    mean, width = mean_and_ci95(np.array([10.0, 20.0, 30.0]))
    assert mean == 20 and width == pytest.approx(1.96 * 10 / np.sqrt(3))


def test_few_shot_reports_too_few_images_per_class():
    from augbench.evaluate.protocols import FewShotConfig, few_shot_accuracies

    labels = torch.tensor([0] * 20 + [1] * 3)
    with pytest.raises(ValueError, match=r"short: \{1: 3\}"):
        few_shot_accuracies(torch.randn(23, 4), labels, 2, 1, 5, 3, 0, FewShotConfig())


def test_mlp_head_learns_a_nonlinear_target():
    from augbench.evaluate.protocols import MLPConfig, fit_mlp

    x = torch.rand(600, 2) * 2 - 1
    y = (x[:, :1] * x[:, 1:]).sign().clamp_min(0).long()[:, 0]  # XOR of signs: not linearly separable
    predict = fit_mlp((x[:500], y[:500]), 2, True, MLPConfig(hidden=64, epochs=60, batch_size=64, lr=1e-2), seed=0)
    assert (predict(x[500:]) == y[500:]).float().mean() > 0.9


def _blobs(rng, centres, n):
    labels = rng.integers(0, len(centres), size=n)
    features = centres[labels] + 2 * rng.normal(size=(n, centres.shape[1]))
    return torch.from_numpy(features).float(), torch.from_numpy(labels)


def test_the_refit_on_train_and_val_is_scikit_learns_probe_at_the_same_c():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 8))
    train, val, test = _blobs(rng, centres, 120), _blobs(rng, centres, 120), _blobs(rng, centres, 2000)
    config = LinearConfig(weight_decays=[1e-3, 1e-2, 1e-1], max_iter=300, refit_on_train_val=True)
    predict, chosen = fit_linear_classifier(train, val, 4, config)
    assert chosen["refit_weight_decay"] == pytest.approx(chosen["weight_decay"] / 2)  # twice the images
    train_val = torch.cat([train[0], val[0]]).numpy(), torch.cat([train[1], val[1]]).numpy()
    mean, std = train_val[0].mean(0), train_val[0].std(0, ddof=1)
    # Kornblith et al.'s probe keeps scikit-learn's C, chosen on val with the train split's size, for the refit.
    reference = LogisticRegression(C=1 / (chosen["weight_decay"] * len(train[0])), max_iter=2000)
    reference.fit((train_val[0] - mean) / std, train_val[1])
    ours = predict(test[0]).numpy()
    assert (ours == reference.predict((test[0].numpy() - mean) / std)).mean() >= 0.99
    train_only, _ = fit_linear_classifier(train, val, 4, LinearConfig(weight_decays=[chosen["weight_decay"]],
                                                                      max_iter=300))
    assert (train_only(test[0]).numpy() != ours).any()


def test_the_ridge_refit_on_train_and_val_is_scikit_learns_ridge():
    rng = np.random.default_rng(4)
    weights = rng.normal(size=(6, 2))
    def sample(n):
        features = rng.normal(size=(n, 6))
        return torch.from_numpy(features).float(), torch.from_numpy(features @ weights + rng.normal(size=(n, 2)))
    train, val, test = sample(40), sample(60), sample(50)
    predict, chosen = fit_ridge(train, val, LinearConfig(weight_decays=[1e-2, 1e-1, 1.0], refit_on_train_val=True))
    assert chosen["refit_weight_decay"] == pytest.approx(chosen["weight_decay"] * 40 / 100)
    features = torch.cat([train[0], val[0]]).double().numpy()
    targets = torch.cat([train[1], val[1]]).numpy()
    mean, std = features.mean(0), features.std(0, ddof=1)
    # scikit-learn: ‖y − Xw‖² + α‖w‖² ⇔ mean ½‖y − Xw‖² + α‖w‖²/(2N), so α = weight_decay · N
    reference = Ridge(alpha=chosen["refit_weight_decay"] * len(features)).fit((features - mean) / std, targets)
    expected = reference.predict((test[0].double().numpy() - mean) / std)
    assert np.allclose(predict(test[0]).numpy(), expected, atol=1e-4)


@pytest.mark.parametrize(("size", "expected"), [(32, 64), (96, 8), (16, 200)])
def test_on_the_cpu_features_are_computed_in_cache_sized_batches_with_the_same_result(size, expected):
    encoder = build_backbone(BackboneConfig(width=0.125))
    seen = []
    encoder.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    images = (torch.rand(200, 3, size, size) * 255).to(torch.uint8)
    chunked = extract_features(encoder, images, batch_size=512)
    assert max(seen) == expected and sum(seen) == 200
    whole = encoder.eval()(images.float() / 255)
    assert torch.allclose(chunked, whole, atol=1e-5)
