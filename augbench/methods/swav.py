"""SwAV: online clustering with swapped prediction over multi-crop views.

Caron, Misra, Mairal, Goyal, Bojanowski & Joulin, "Unsupervised Learning of
Visual Features by Contrasting Cluster Assignments" (NeurIPS 2020).

Every crop v is embedded, z_v = normalize(projector(backbone(x_v))), and
scored against K unit-norm prototypes C: s_v = z_v Cᵀ (B, K). For each crop
a in `crops_for_assign` (the large crops), codes q_a come from Sinkhorn-Knopp
(`sinkhorn`: ε = 0.05, 3 iterations) over the scores of the global batch
(all ranks) and, when `queue_size` > 0 and the queue is full, the stored
embeddings of past batches. Each other crop predicts those codes:

    L = mean_a mean_{v ≠ a} −Σ_k q_a,k · log softmax(s_v / τ)_k,   τ = 0.1

As in SwAV's code: the projector sees every crop's features in one batch, so
its BatchNorm statistics span all crops; the queue starts filling after
`queue_start_epochs` (SwAV's `epoch_queue_starts`, 15) and joins Sinkhorn
once full; prototypes are re-normalised after every optimiser step and get no
gradient for the first `freeze_prototypes_epochs` (SwAV: 1). Epochs are
counted in steps, in a checkpointed buffer, from the epoch length the trainer
gives `set_steps_per_epoch`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augbench.augment.multicrop import MultiCropConfig
from augbench.augment.views import View
from augbench.methods.base import Method
from augbench.methods.distributed import gather_no_grad, rank
from augbench.methods.host_counters import HostCounters
from augbench.methods.queue import Queue
from augbench.models.heads import MLP, ProjectorConfig


def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV's equipartitioned codes for scores (N, K): rows sum to 1, each prototype's column to about N / K.

    Q = exp(scores / ε)ᵀ is scaled alternately so that each prototype (row of
    Q) holds mass 1/K and each sample (column) mass 1/N; returns N·Qᵀ (N, K).
    The last scaling is per sample, so the sample marginals are exact and the
    prototype marginals approximate after few iterations.
    """
    # Subtracting the maximum changes nothing after normalisation and keeps exp finite for any ε.
    wide = scores.double()  # before dividing by ε, which would magnify bf16's rounding 20-fold
    q = torch.exp((wide - wide.max()) / epsilon).T  # (K, N)
    num_prototypes, num_samples = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * num_prototypes
        q /= q.sum(dim=0, keepdim=True) * num_samples
    return (q * num_samples).T.to(scores.dtype)


def swapped_prediction(codes: Tensor, scores: list[Tensor], temperature: float = 0.1) -> Tensor:
    """Mean over `scores` (each (B, K), the other crops) of the cross-entropy from codes (B, K) to softmax(s / τ)."""
    losses = [-(codes * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean() for s in scores]
    return torch.stack(losses).mean()


def prototype_usage(codes: Tensor) -> Tensor:
    """The fraction of prototypes that are some sample's strongest code, counted on the codes' device (`unique`
    would read the codes back and make each step wait for the device)."""
    strongest = codes.argmax(dim=1)
    used = torch.zeros(codes.shape[1], dtype=torch.bool, device=codes.device).index_fill_(0, strongest, True)
    return used.float().mean()


@dataclass
class SwAVConfig:
    """SwAV's switches; its multi-crop views are `augment.views: multi_crop` (augment/multicrop.py).
    `crops_for_assign` indexes those crops; `queue_size` 0 means no queue."""

    name: str = "swav"
    num_prototypes: int = 128
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    crops_for_assign: list[int] = field(default_factory=lambda: [0, 1])
    queue_size: int = 0
    queue_start_epochs: float = 15.0
    freeze_prototypes_epochs: float = 1.0
    projector: ProjectorConfig = field(
        default_factory=lambda: ProjectorConfig(num_layers=2, hidden_dim=2048, out_dim=128, bn=True)
    )

    def __post_init__(self):
        distinct = len(set(self.crops_for_assign)) == len(self.crops_for_assign)
        if not self.crops_for_assign or min(self.crops_for_assign) < 0 or not distinct:
            raise ValueError(f"crops_for_assign={self.crops_for_assign}: must name distinct crops, by their indices "
                             "from 0")
        for key in ("num_prototypes", "sinkhorn_iterations"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)}: must be at least 1")
        for key in ("temperature", "epsilon"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}={getattr(self, key)}: must be positive")
        for key in ("queue_size", "queue_start_epochs", "freeze_prototypes_epochs"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}={getattr(self, key)}: must not be negative")

    def check_views(self, views: MultiCropConfig) -> None:
        total = sum(views.num_crops)
        if max(self.crops_for_assign) >= total:
            raise ValueError(f"method.crops_for_assign={self.crops_for_assign}: must name crops among the {total} "
                             f"crops of augment.num_crops={views.num_crops} (indices 0..{total - 1})")


class SwAVMethod(HostCounters, Method):
    views_kind = "multi_crop"

    def __init__(self, backbone: nn.Module, config: SwAVConfig):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.projector = MLP(backbone.out_dim, config.projector.specs())
        self.prototypes = nn.Linear(self.projector.out_dim, config.num_prototypes, bias=False)
        self._normalize_prototypes()
        if config.queue_size:
            self.queues = nn.ModuleList(Queue(config.queue_size, self.projector.out_dim, init="empty")
                                        for _ in config.crops_for_assign)  # SwAV's queue starts empty (zeros)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.steps_per_epoch: int | None = None

    def set_steps_per_epoch(self, steps: int) -> None:
        self.steps_per_epoch = steps

    def _before_epochs(self, epochs: float) -> bool:
        """Whether this step comes before `epochs` epochs of training."""
        if self.steps_per_epoch is None:
            raise RuntimeError("SwAV counts queue_start_epochs and freeze_prototypes_epochs in epochs: call "
                               "set_steps_per_epoch first (the trainer does)")
        return self.host_int("step") < epochs * self.steps_per_epoch

    def forward(self, views: list[View]) -> dict[str, Tensor]:
        total = len(views)
        if total < 2 or max(self.config.crops_for_assign) >= total:
            raise ValueError(f"SwAV assigns codes to crops {self.config.crops_for_assign} and predicts them from the "
                             f"others, got {total} views; set augment.views=multi_crop")
        embeddings, features = self._embed(views)  # (B, D) per crop, unit norm; the first crop's backbone features
        weight = self.prototypes.weight  # (K, D)
        frozen = self._before_epochs(self.config.freeze_prototypes_epochs)
        if frozen:
            # Zero gradient rather than detaching: under DDP every parameter must take part in the loss.
            weight = weight.detach() + 0.0 * weight
        scores = [z @ weight.T for z in embeddings]  # (B, K) per crop
        losses, usage = [], []
        for slot, crop in enumerate(self.config.crops_for_assign):
            codes = self._codes(slot, scores[crop].detach(), embeddings[crop].detach())
            others = [scores[v] for v in range(total) if v != crop]
            losses.append(swapped_prediction(codes, others, self.config.temperature))
            usage.append(prototype_usage(codes))
        return {
            "loss": torch.stack(losses).mean(),
            "prototype_usage": torch.stack(usage).mean(),
            "prototypes_frozen": torch.tensor(float(frozen)),
            "features": features,
        }

    def _embed(self, views: list[View]) -> tuple[list[Tensor], Tensor]:
        """Each crop's embedding, and the first crop's detached backbone features; crops of one size go through the
        backbone together, as SwAV batches them by resolution, and all crops through the projector together."""
        features = [self.backbone(torch.cat([view.images for view in group]))
                    for _, group in itertools.groupby(views, key=lambda view: view.images.shape[-2:])]
        z = F.normalize(self.projector(torch.cat(features)), dim=1)
        return list(z.split([len(view.images) for view in views])), features[0][: len(views[0].images)].detach()

    @torch.no_grad()
    def _codes(self, slot: int, scores: Tensor, embeddings: Tensor) -> Tensor:
        """Sinkhorn codes of this rank's samples, computed over the global batch and the full queue."""
        batch_scores = gather_no_grad(scores)  # (world × B, K)
        bank = batch_scores[:0]
        if self.config.queue_size and not self._before_epochs(self.config.queue_start_epochs):
            queue = self.queues[slot]
            if queue.host_int("filled") == len(queue.keys):  # SwAV uses the queue once it is full
                bank = queue.negatives().to(scores.dtype) @ self.prototypes.weight.T
            queue.push(gather_no_grad(embeddings))
        codes = sinkhorn(torch.cat([bank, batch_scores]), self.config.epsilon, self.config.sinkhorn_iterations)
        start = len(bank) + rank() * len(scores)
        return codes[start : start + len(scores)]

    @torch.no_grad()
    def _normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def update_target(self, progress: float) -> dict[str, float]:
        step = self.host_int("step")
        self.step += 1
        self.set_host_int("step", step + 1)
        self._normalize_prototypes()
        return {}
