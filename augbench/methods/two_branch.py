"""The two-branch method: one configurable method of which MoCo v2, BYOL, SimCLR and SimSiam are presets.

Huang, Kong & Zhang, "Revisiting the Critical Factors of Augmentation-Invariant
Representation Learning" (ECCV 2022) show that MoCo v2 and BYOL differ by a few
switches; SimCLR (Chen et al. 2020) and SimSiam (Chen & He 2021) are two more
points of the same space. `TwoBranchConfig` holds the switches; each paper's
preset is a subclass whose defaults are that paper's (methods/moco_v2.py,
byol.py, simclr.py, simsiam.py), registered under its name, and `two_branch`
is the generic method for the points between them (configs/fair/).

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
  and weight decay under SGD), or Barlow Twins' `cross_correlation` of the
  batch-standardised embeddings, weighted by `off_diagonal_weight` (λ).

`shuffle_bn` > 1 is MoCo's Shuffle BN (augbench/methods/shuffle_bn.py):
BatchNorm statistics over that many sub-batches in both encoders (backbone,
projector and predictor, as per-GPU BatchNorm computes them everywhere), with
the momentum encoder's input shuffled across them, so that a query and its
key never share statistics.

`symmetric` adds the pair (1, 0). `pair_reduction` combines the pairs' losses:
`mean`, as SimSiam's and SimCLR's code do, or `sum`, as BYOL's paper
(L + L̃) and the study's code (revisitAIRL, MoCo v2+ and BYOL) do; under SGD
`sum` takes twice the step of `mean`. With one pair they are equal.

`queue_init` starts MoCo's queue with random unit keys (`random`, MoCo's
code: a loss of about ln K from step 1) or `empty` (methods/queue.py: the
one-way loss and its gradients are 0 at step 1).

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
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from augbench.augment.views import View
from augbench.methods.base import Method, embedding_spread
from augbench.methods.distributed import gather_no_grad, gather_with_grad, is_distributed, rank
from augbench.methods.losses import cross_correlation, info_nce, negative_cosine, normalized_mse, nt_xent
from augbench.methods.momentum import MomentumConfig, cosine_momentum, ema_update
from augbench.methods.queue import QUEUE_INITS, Queue
from augbench.methods.shuffle_bn import ShuffleBN
from augbench.models.heads import MLP, PredictorConfig, ProjectorConfig

NEGATIVES = ("queue", "batch", "none")
ENQUEUE = ("one_view", "all")
PAIR_REDUCTIONS = ("mean", "sum")
REGRESSION_LOSSES = {"normalized_mse": normalized_mse, "negative_cosine": negative_cosine,
                     "cross_correlation": cross_correlation}


@dataclass
class TwoBranchConfig:
    """The switches of the two-branch method (module docstring). The paper presets are subclasses that change only
    the defaults, so every preset has these keys and a comparison of two is a comparison of values."""

    name: str = "two_branch"
    negatives: str = "queue"
    queue_size: int = 4096
    queue_init: str = "random"
    temperature: float = 0.2
    symmetric: bool = False
    pair_reduction: str = "mean"
    stop_gradient: bool = True
    target_predictor: bool = False
    enqueue: str = "one_view"
    regression_loss: str = "normalized_mse"  # with negatives = none
    off_diagonal_weight: float = 0.0051  # λ of regression_loss = cross_correlation
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
        if self.queue_init not in QUEUE_INITS:
            raise ValueError(f"queue_init={self.queue_init!r}: expected one of {QUEUE_INITS}")
        if self.pair_reduction not in PAIR_REDUCTIONS:
            raise ValueError(f"pair_reduction={self.pair_reduction!r}: expected one of {PAIR_REDUCTIONS}")
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

    @classmethod
    def composed_over(cls, previous: type, values: DictConfig) -> dict | None:
        """A config that renames a two-branch section to a more generic or a more specific method keeps what is
        composed so far (config.compose): configs/fair/ walks from moco_v2 through two_branch to byol. A sibling
        preset (moco_v2 → byol) starts from its own defaults, as another method would."""
        if issubclass(cls, previous) or issubclass(previous, cls):
            values = OmegaConf.to_container(values, resolve=False)
            values.pop("name")
            return values
        return None


def pair_loss(config: TwoBranchConfig, query: Tensor, key: Tensor, queue: Queue | None = None) -> Tensor:
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
    if config.regression_loss == "cross_correlation":
        if is_distributed():
            # Every rank computes the global batch's loss; the gathers sum its gradient over ranks back to each
            # slice's owner and DDP averages the ranks, so the update is the global batch's (as the official code's
            # all_reduce of C).
            query, key = gather_with_grad(query), gather_with_grad(key)
        return cross_correlation(query, key, config.off_diagonal_weight)
    return REGRESSION_LOSSES[config.regression_loss](query, key)


def reduce_pairs(config: TwoBranchConfig, losses: list[Tensor]) -> Tensor:
    """The pairs' losses combined by `config.pair_reduction`."""
    stacked = torch.stack(losses)
    return stacked.sum() if config.pair_reduction == "sum" else stacked.mean()


def keys_to_enqueue(config: TwoBranchConfig, keys: dict[int, Tensor], pairs: list[tuple[int, int]]) -> Tensor:
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


class TwoBranchMethod(Method):
    def __init__(self, backbone: nn.Module, config: TwoBranchConfig):
        super().__init__()
        self.config = config
        self.shuffle_bn = ShuffleBN(config.shuffle_bn)
        self.backbone = self.shuffle_bn.convert(backbone)
        self.projector = self.shuffle_bn.convert(MLP(backbone.out_dim, config.projector.specs()))
        out_dim = self.projector.out_dim
        self.predictor = nn.Identity()
        if config.predictor.enabled:
            self.predictor = self.shuffle_bn.convert(MLP(out_dim, config.predictor.specs(out_dim)))
        if config.momentum.enabled:
            self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
            self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
            if config.target_predictor:
                self.target_predictor = copy.deepcopy(self.predictor).requires_grad_(False)
        if config.negatives == "queue":
            self.queue = Queue(config.queue_size, out_dim, config.queue_init)

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
        return {"loss": reduce_pairs(self.config, losses), "positive_similarity": similarity, "embedding_std": spread,
                "features": features[0].detach()}

    def _target_embeddings(self, views: list[View], projections: dict[int, Tensor], needed: set[int]
                           ) -> dict[int, Tensor]:
        if not self.config.momentum.enabled:
            return {j: projections[j].detach() if self.config.stop_gradient else projections[j] for j in needed}

        def embed(images: Tensor) -> Tensor:
            keys = self.target_projector(self.target_backbone(images))
            return self.target_predictor(keys) if self.config.target_predictor else keys

        with torch.no_grad():
            return {j: self.shuffle_bn.encode(embed, views[j].images, j, len(views)) for j in needed}

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
