"""The design space's losses as pure functions of embeddings.

All take raw embeddings and L2-normalise them; each returns the mean over the
batch of a per-sample loss.
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
