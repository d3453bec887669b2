import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from augbench.methods.losses import cross_correlation, info_nce, negative_cosine, normalized_mse, nt_xent


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _log_softmax_at(logits, index):
    top = logits.max()
    return logits[index] - top - np.log(np.exp(logits - top).sum())


def numpy_info_nce(q, k, queue, t):
    q, k, queue = _unit(q), _unit(k), _unit(queue)
    losses = []
    for i in range(len(q)):
        logits = np.concatenate([[q[i] @ k[i]], queue @ q[i]]) / t
        losses.append(-_log_softmax_at(logits, 0))
    return np.mean(losses)


def numpy_simclr(z1, z2, t):
    """SimCLR's loss over 2N anchors, written from the paper's 2N×2N similarity matrix."""
    z = _unit(np.concatenate([z1, z2]))
    n = len(z1)
    similarity = z @ z.T / t
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        logits = np.delete(similarity[i], i)
        losses.append(-_log_softmax_at(logits, positive if positive < i else positive - 1))
    return np.mean(losses)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(2, 9), dim=st.integers(2, 17), temperature=st.floats(0.05, 1.0))
def test_info_nce_matches_numpy(seed, batch, dim, temperature):
    rng = np.random.default_rng(seed)
    q, k, queue = rng.normal(size=(batch, dim)), rng.normal(size=(batch, dim)), rng.normal(size=(13, dim))
    ours = info_nce(*(torch.from_numpy(a) for a in (q, k, queue)), temperature).item()
    assert np.isclose(ours, numpy_info_nce(q, k, queue, temperature), rtol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(2, 9), dim=st.integers(2, 17), temperature=st.floats(0.05, 1.0))
def test_symmetrised_nt_xent_is_simclrs_loss_over_2n_anchors(seed, batch, dim, temperature):
    rng = np.random.default_rng(seed)
    z1, z2 = rng.normal(size=(batch, dim)), rng.normal(size=(batch, dim))
    a, b = torch.from_numpy(z1), torch.from_numpy(z2)
    ours = ((nt_xent(a, b, temperature) + nt_xent(b, a, temperature)) / 2).item()
    assert np.isclose(ours, numpy_simclr(z1, z2, temperature), rtol=1e-6)


def test_normalized_mse_is_squared_distance_of_unit_vectors():
    rng = np.random.default_rng(0)
    p, z = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    expected = np.mean(np.sum((_unit(p) - _unit(z)) ** 2, axis=1))
    assert np.isclose(normalized_mse(torch.from_numpy(p), torch.from_numpy(z)).item(), expected)
    assert normalized_mse(torch.from_numpy(p), torch.from_numpy(3 * p)).item() < 1e-12


def test_negative_cosine_is_simsiams_loss_with_half_the_gradient_of_normalized_mse():
    rng = np.random.default_rng(1)
    p, z = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    expected = -np.mean(np.sum(_unit(p) * _unit(z), axis=1))
    assert np.isclose(negative_cosine(torch.from_numpy(p), torch.from_numpy(z)).item(), expected)
    gradients = []
    for loss in (negative_cosine, normalized_mse):
        prediction = torch.from_numpy(p).requires_grad_()
        loss(prediction, torch.from_numpy(z)).backward()
        gradients.append(prediction.grad)
    assert torch.allclose(2 * gradients[0], gradients[1])


def test_losses_fall_as_positives_align():
    torch.manual_seed(0)
    q, noise, queue = torch.randn(8, 16), torch.randn(8, 16), torch.randn(32, 16)
    far, near = q + 2 * noise, q + 0.1 * noise
    assert info_nce(q, near, queue, 0.2) < info_nce(q, far, queue, 0.2)
    assert nt_xent(q, near, 0.5) < nt_xent(q, far, 0.5)


def numpy_barlow_twins(z_a, z_b, weight, eps=1e-5):
    """Barlow Twins' Algorithm 1: standardise each dimension over the batch, C = z_aᵀ z_b / N, on- and off-diagonal
    terms (the official code's BatchNorm1d(affine=False): biased variance plus ε)."""

    def standardised(z):
        return (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + eps)

    c = standardised(z_a).T @ standardised(z_b) / len(z_a)
    off_diagonal = c - np.diag(np.diag(c))
    return ((1 - np.diag(c)) ** 2).sum() + weight * (off_diagonal**2).sum()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(2, 12), dim=st.integers(1, 17), weight=st.floats(0.0, 1.0))
def test_cross_correlation_matches_numpy(seed, batch, dim, weight):
    rng = np.random.default_rng(seed)
    z_a, z_b = rng.normal(size=(batch, dim)), rng.normal(size=(batch, dim))
    ours = cross_correlation(torch.from_numpy(z_a), torch.from_numpy(z_b), weight).item()
    assert np.isclose(ours, numpy_barlow_twins(z_a, z_b, weight), rtol=1e-10, atol=1e-10)


def test_cross_correlation_is_zero_only_for_perfectly_correlated_decorrelated_dimensions():
    z = torch.linalg.qr(torch.randn(64, 8, dtype=torch.float64)).Q  # orthogonal columns
    z = z - z.mean(dim=0)
    assert cross_correlation(z, z, 0.0051).item() < 1e-3  # C ≈ I up to BatchNorm's ε
    assert cross_correlation(z, z.flip(0), 0.0051).item() > 1.0
