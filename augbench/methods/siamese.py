"""The two-branch design space of MoCo v2, BYOL, SimCLR and SimSiam.

Huang, Kong & Zhang, "Revisiting the Critical Factors of Augmentation-Invariant
Representation Learning" (ECCV 2022) show that MoCo v2 and BYOL differ by a few
switches; SimCLR (Chen et al. 2020) and SimSiam (Chen & He 2021) are two more
points of the same space. Each is a preset in configs/methods/.

Online branch: q = predictor(projector(backbone(view))). Target branch: the
momentum (EMA) copy of backbone and projector when `momentum.enabled`, else the
online branch itself, detached if `stop_gradient`. `target_predictor` gives the
momentum target an EMA copy of the predictor too, so both branches have the
same heads: the study's S-MoCo v2+, which tests whether MoCo v2+'s gain comes
from the asymmetry or from the deeper head. For a view pair (i, j) the loss
compares q_i with the target embedding k_j:

- negatives = queue: InfoNCE against a queue of past keys (MoCo); the keys
  k_j of the step are enqueued after the loss; with a symmetric loss,
  `enqueue` pushes one of the two views' keys, drawn at random each step, or
  `all` of them;
- negatives = batch: NT-Xent with the 2N − 2 other embeddings of the batch
  as negatives (SimCLR);
- negatives = none: `regression_loss`, BYOL's normalised MSE
  2 − 2·cos(q_i, k_j) or SimSiam's negative cosine −cos(q_i, k_j), which
  differ by a factor 2 in gradient (and so in the effective learning rate
  and weight decay under SGD).

`shuffle_bn` > 1 is MoCo's Shuffle BN (augbench/methods/shuffle_bn.py):
BatchNorm statistics over that many sub-batches in both backbones, as that
many GPUs compute them, with the momentum encoder's input shuffled across
them, so that a query and its key never share statistics.

`symmetric` adds the pair (1, 0). The loss is the mean over pairs, so that
symmetric and one-way presets share a scale under the same optimiser, as
SimSiam's code does. BYOL's paper and the study's code (revisitAIRL,
MoCo v2+ and BYOL) sum the two directions, i.e. twice this loss.

Under DDP each rank holds a slice of the global batch. The queue is fed with
the keys of every rank (so it is the same on all ranks); batch negatives are
the embeddings of the global batch, gathered with gradients; the EMA target
follows the online weights, which DDP keeps identical on all ranks. With
batch statistics made global too (SyncBatchNorm), W ranks compute what one
process computes on the global batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augbench.augment.views import View
from augbench.methods.base import Method, embedding_spread
from augbench.methods.distributed import gather_no_grad, gather_with_grad, is_distributed, rank
from augbench.methods.losses import info_nce, negative_cosine, normalized_mse, nt_xent
from augbench.methods.momentum import cosine_momentum, ema_update
from augbench.methods.queue import Queue
from augbench.methods.shuffle_bn import ShuffleBN
from augbench.models.heads import MLP, PredictorConfig, ProjectorConfig

NEGATIVES = ("queue", "batch", "none")
ENQUEUE = ("one_view", "all")
REGRESSION_LOSSES = {"normalized_mse": normalized_mse, "negative_cosine": negative_cosine}


@dataclass
class MomentumConfig:
    """EMA target: m goes from `base` to `final` on a cosine over training (constant when equal)."""

    enabled: bool = True
    base: float = 0.99
    final: float = 0.99

    def __post_init__(self):
        for key in ("base", "final"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"momentum.{key}={getattr(self, key)}: must be in [0, 1]")


@dataclass
class SiameseConfig:
    name: str = "siamese"
    negatives: str = "queue"
    queue_size: int = 4096
    temperature: float = 0.2
    symmetric: bool = False
    stop_gradient: bool = True
    target_predictor: bool = False
    enqueue: str = "one_view"
    regression_loss: str = "normalized_mse"  # with negatives = none
    shuffle_bn: int = 0
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    momentum: MomentumConfig = field(default_factory=MomentumConfig)

    def __post_init__(self):
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives={self.negatives!r}: expected one of {NEGATIVES}")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: must be positive")
        if self.negatives == "queue" and self.queue_size < 1:
            raise ValueError(f"queue_size={self.queue_size}: a queue needs at least one entry")
        if self.enqueue not in ENQUEUE:
            raise ValueError(f"enqueue={self.enqueue!r}: expected one of {ENQUEUE}")
        if self.shuffle_bn < 0:
            raise ValueError(f"shuffle_bn={self.shuffle_bn}: the number of BatchNorm sub-batches (0: off)")
        if self.shuffle_bn > 1 and not self.momentum.enabled:
            raise ValueError(f"shuffle_bn={self.shuffle_bn} shuffles the momentum encoder's input: it needs "
                             "momentum.enabled=true")
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"regression_loss={self.regression_loss!r}: expected one of {list(REGRESSION_LOSSES)}")
        missing = [f"{part}.enabled=true" for part in ("predictor", "momentum") if not getattr(self, part).enabled]
        if self.target_predictor and missing:
            raise ValueError(f"target_predictor=true: the target's predictor is the EMA of the online one, so it "
                             f"needs {' and '.join(missing)}")


def pair_loss(config: SiameseConfig, query: Tensor, key: Tensor, queue: Queue | None = None) -> Tensor:
    """The loss of one (query, key) pair under `config.negatives`; `queue` holds the negatives when it is "queue"."""
    if config.negatives == "queue":
        return info_nce(query, key, queue.negatives(), config.temperature)
    if config.negatives == "batch":
        if is_distributed():
            # The gathers carry gradients back to the rank owning each embedding and DDP averages the ranks'
            # gradients, so the update equals nt_xent over the global batch (lightly issue 1528).
            return nt_xent(query, key, config.temperature, gather_with_grad(query), gather_with_grad(key),
                           offset=rank() * len(query))
        return nt_xent(query, key, config.temperature)
    return REGRESSION_LOSSES[config.regression_loss](query, key)


def keys_to_enqueue(config: SiameseConfig, keys: dict[int, Tensor], pairs: list[tuple[int, int]]) -> Tensor:
    """The step's keys for the queue, gathered from every rank: one pair's key view, drawn at random, or under
    `enqueue=all` every pair's.

    The study's MoCo v2+ enqueues one view's keys per step, picked at random
    (revisitAIRL, exp/mocov2_plus.py), and solo-learn's keeps one queue per
    view: either way a query's negatives span as many past steps as in
    one-way MoCo, where pushing both views would age the queue twice as fast.
    The draw uses torch's global generator, which every rank seeds alike and
    which checkpoints carry: all ranks pick the same view, and a resumed run
    picks what the uninterrupted one would.
    """
    views = [j for _, j in pairs]
    if config.enqueue == "one_view" and len(views) > 1:  # one-way MoCo has one view to push and draws nothing
        views = [views[int(torch.randint(len(views), ()))]]
    return torch.cat([gather_no_grad(keys[j]) for j in views])


def online_views(pairs: list[tuple[int, int]], momentum: bool) -> list[int]:
    """The views the online branch must embed for (query, key) view `pairs`: the queries, and the keys too when
    there is no momentum target to embed them.

    One-way MoCo thus skips the key view, as MoCo's code does: a third of the
    step's forward passes, and BatchNorm's running statistics come from the
    query views alone.
    """
    queries, keys = {i for i, _ in pairs}, {j for _, j in pairs}
    return sorted(queries if momentum else queries | keys)


class SiameseMethod(Method):
    def __init__(self, backbone: nn.Module, config: SiameseConfig):
        super().__init__()
        self.config = config
        self.shuffle_bn = ShuffleBN(config.shuffle_bn)
        self.backbone = self.shuffle_bn.convert(backbone)
        self.projector = MLP(backbone.out_dim, config.projector.specs())
        out_dim = self.projector.out_dim
        self.predictor = MLP(out_dim, config.predictor.specs(out_dim)) if config.predictor.enabled else nn.Identity()
        if config.momentum.enabled:
            self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
            self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
            if config.target_predictor:
                self.target_predictor = copy.deepcopy(self.predictor).requires_grad_(False)
        if config.negatives == "queue":
            self.queue = Queue(config.queue_size, out_dim)

    def forward(self, views: list[View]) -> dict[str, Tensor]:
        if len(views) != 2:
            raise ValueError(f"{type(self).__name__} takes 2 views, got {len(views)}; check augment.recipe")
        pairs = [(0, 1), (1, 0)] if self.config.symmetric else [(0, 1)]
        online = online_views(pairs, self.config.momentum.enabled)
        features = {i: self.backbone(views[i].images) for i in online}
        projections = {i: self.projector(f) for i, f in features.items()}  # (B, D) each
        queries = {i: self.predictor(z) for i, z in projections.items()}
        keys = self._target_embeddings(views, projections, {j for _, j in pairs})
        losses = [self._pair_loss(queries[i], keys[j]) for i, j in pairs]
        if self.config.negatives == "queue":
            self.queue.push(keys_to_enqueue(self.config, keys, pairs))
        with torch.no_grad():
            similarity = torch.stack([F.cosine_similarity(queries[i], keys[j]).mean() for i, j in pairs]).mean()
            spread = embedding_spread(projections[0])
        return {"loss": torch.stack(losses).mean(), "positive_similarity": similarity, "embedding_std": spread,
                "features": features[0].detach()}

    def _target_embeddings(self, views: list[View], projections: dict[int, Tensor], needed: set[int]
                           ) -> dict[int, Tensor]:
        if not self.config.momentum.enabled:
            return {j: projections[j].detach() if self.config.stop_gradient else projections[j] for j in needed}

        def embed(images: Tensor) -> Tensor:
            return self.target_projector(self.target_backbone(images))

        with torch.no_grad():
            keys = {j: self.shuffle_bn.encode(embed, views[j].images, j, len(views)) for j in needed}
            if self.config.target_predictor:
                keys = {j: self.target_predictor(k) for j, k in keys.items()}
            return keys

    def _pair_loss(self, query: Tensor, key: Tensor) -> Tensor:
        return pair_loss(self.config, query, key, self.queue if self.config.negatives == "queue" else None)

    def predictor_parameters(self) -> list[nn.Parameter]:
        return list(self.predictor.parameters())

    def update_target(self, progress: float) -> dict[str, float]:
        if not self.config.momentum.enabled:
            return {}
        momentum = cosine_momentum(self.config.momentum.base, self.config.momentum.final, progress)
        ema_update(self.target_backbone, self.backbone, momentum)
        ema_update(self.target_projector, self.projector, momentum)
        if self.config.target_predictor:
            ema_update(self.target_predictor, self.predictor, momentum)
        self.shuffle_bn.step()
        return {"momentum": momentum}
