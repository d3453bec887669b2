"""The design space's losses as pure functions of embeddings.

All take raw embeddings. The first four L2-normalise them and return the mean
over the batch of a per-sample loss; Barlow Twins' `cross_correlation`
standardises each dimension over the batch instead and returns one sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(query: Tensor, key: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE with a bank of negatives.

    L = -log exp(q·k⁺/τ) / (exp(q·k⁺/τ) + Σ_n exp(q·n/τ))

    query, key: (B, D), row i of `key` is the positive of row i of `query`;
    negatives: (K, D), shared by every query.
    """
    query, key, negatives = (F.normalize(t, dim=1) for t in (query, key, negatives))
    positive = (query * key).sum(dim=1, keepdim=True)  # (B, 1)
    logits = torch.cat([positive, query @ negatives.T], dim=1) / temperature  # (B, 1 + K)
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device))


def nt_xent(
    query: Tensor,
    key: Tensor,
    temperature: float,
    all_queries: Tensor | None = None,
    all_keys: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """SimCLR's NT-Xent for the anchors in `query`: 2N − 2 in-batch negatives each.

    For anchor q_i the positive is k_i, the negatives are k_j and q_j for
    j ≠ i. With `query` and `key` the two views' projections, the mean of
    nt_xent(z1, z2) and nt_xent(z2, z1) is SimCLR's loss over all 2N anchors.
    When the batch is split over ranks, `all_queries` and `all_keys` (M, D)
    are the whole batch's embeddings, with these anchors at rows offset …
    offset + N − 1 (2M − 2 negatives each); by default they are `query` and
    `key` themselves.

    query, key: (N, D).
    """
    query = F.normalize(query, dim=1)
    all_queries = query if all_queries is None else F.normalize(all_queries, dim=1)
    all_keys = F.normalize(key if all_keys is None else all_keys, dim=1)
    positives = torch.arange(len(query), device=query.device) + offset
    itself = F.one_hot(positives, len(all_queries)).bool()  # (N, M): each anchor's own column
    to_queries = (query @ all_queries.T).masked_fill(itself, float("-inf"))
    logits = torch.cat([query @ all_keys.T, to_queries], dim=1) / temperature  # (N, 2M)
    return F.cross_entropy(logits, positives)


def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """BYOL's loss: ‖p/‖p‖ − z/‖z‖‖² = 2 − 2·cos(p, z), averaged over the batch. (B, D) each."""
    return (2 - 2 * F.cosine_similarity(prediction, target, dim=1)).mean()


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """SimSiam's loss: −cos(p, z), averaged over the batch; half the gradient of normalized_mse. (B, D) each."""
    return -F.cosine_similarity(prediction, target, dim=1).mean()


def cross_correlation(z_a: Tensor, z_b: Tensor, off_diagonal_weight: float) -> Tensor:
    """Barlow Twins' loss (Zbontar et al., ICML 2021): Σ_i (1 − C_ii)² + λ·Σ_i Σ_{j≠i} C_ij².

    C = BN(z_a)ᵀ·BN(z_b) / N is the (D, D) cross-correlation of the two views'
    embeddings, each dimension standardised over the batch as the official
    code's `nn.BatchNorm1d(D, affine=False)` does in training (biased variance,
    ε = 1e-5); λ = `off_diagonal_weight` (0.0051 for D = 8192 in the paper).

    z_a, z_b: (N, D), row i of both from the same image.
    """
    c = F.batch_norm(z_a, None, None, training=True).T @ F.batch_norm(z_b, None, None, training=True) / len(z_a)
    on_diagonal = torch.diagonal(c)
    return (on_diagonal - 1).pow(2).sum() + off_diagonal_weight * (c.pow(2).sum() - on_diagonal.pow(2).sum())
