"""LooC and LooC++: leave-one-out contrastive learning.

Xiao, Wang, Efros & Darrell, "What Should Not Be Contrastive in Contrastive
Learning" (ICLR 2021). Built on MoCo v2. The views come from
augbench.augment.looc's leave-one-out recipe (`augment.views: leave_one_out`):
a query q and keys k0, k1, …, kn, where ki shares exactly augmentation i's
parameters with q. The method reads its n augmentations, one embedding space
each, from that views config.

A shared backbone gives the representation V; n + 1 heads (MoCo v2's
projector, one per space) embed it into Z0, Z1, …, Zn. Keys go through the
momentum copy of everything and get no gradient. Per space s, with τ the
temperature and Q_s the space's queue of past keys:

    L_s = −log exp(q·k⁺/τ) / (exp(q·k⁺/τ) + Σ_{k⁻ ∈ N_s} exp(q·k⁻/τ) + Σ_{m ∈ Q_s} exp(q·m/τ))

- Z0 (invariant to every augmentation): k⁺ = k0 and N_s is empty: the
  image's other keys are never negatives there. Whether k1..kn are positives
  in Z0 too is not confirmed by the paper: `z0_positives: all` makes each of
  them a positive as well (the loss is then averaged over the positives);
  the default `k0` uses k0 only.
- Zi (invariant to all but augmentation i): k⁺ = ki, and the image's other
  keys kj (j ≠ i, k0 included), which differ from q in augmentation i, are
  negatives with Q_i.

The loss combines the n + 1 spaces by `reduction`: `mean` (default) or `sum`
(re-implementations disagree); τ defaults to MoCo v2's 0.2 (others use
0.07). After the loss, queue 0 receives k0's Z0 embedding and queue i
receives ki's Zi embedding: each queue holds the positives of its space.

`representation` chooses what downstream tasks see:

- `backbone` (LooC): the shared backbone's pooled features, and every head
  reads them;
- `looc++` (LooC++): as in the paper, each space has its own copy of the
  backbone's last stage inside its head. Space 0 uses the backbone's own last
  stage, spaces 1..n a copy each, all fed by the shared earlier stages;
  `encoder()` concatenates the n + 1 pooled stage outputs, (n + 1) × the
  backbone width. This needs one of augbench's ResNets.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augbench.augment.looc import LeaveOneOutConfig
from augbench.augment.views import View
from augbench.errors import ConfigError
from augbench.methods.base import Method, embedding_spread
from augbench.methods.distributed import gather_no_grad
from augbench.methods.momentum import MomentumConfig, cosine_momentum, ema_update
from augbench.methods.queue import QUEUE_INITS, Queue
from augbench.methods.shuffle_bn import ShuffleBN
from augbench.models.heads import MLP, ProjectorConfig
from augbench.models.looc_encoder import LooCPlusPlusEncoder

REPRESENTATIONS = ("backbone", "looc++")
REDUCTIONS = ("mean", "sum")
Z0_POSITIVES = ("k0", "all")


@dataclass
class LooCConfig:
    """LooC's switches; its spaces Z1..Zn are those of `augment.augmentations`, in the order of the keys k1..kn."""

    name: str = "looc"
    representation: str = "backbone"
    queue_size: int = 4096
    queue_init: str = "random"
    temperature: float = 0.2
    reduction: str = "mean"
    z0_positives: str = "k0"
    shuffle_bn: int = 0
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    momentum: MomentumConfig = field(default_factory=MomentumConfig)

    def __post_init__(self):
        for key, allowed in (("representation", REPRESENTATIONS), ("reduction", REDUCTIONS),
                             ("z0_positives", Z0_POSITIVES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r}: expected one of {allowed}")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: must be positive")
        if self.queue_size < 1:
            raise ValueError(f"queue_size={self.queue_size}: a queue needs at least one entry")
        if self.queue_init not in QUEUE_INITS:
            raise ValueError(f"queue_init={self.queue_init!r}: expected one of {QUEUE_INITS}")
        if self.shuffle_bn < 0:
            raise ValueError(f"shuffle_bn={self.shuffle_bn}: the number of BatchNorm sub-batches (0: off)")
        if not self.momentum.enabled:
            raise ValueError("momentum.enabled=false: LooC's keys come from a momentum encoder")

    def runs_backbone_by_stage(self) -> str | None:
        return "method.representation=looc++" if self.representation == "looc++" else None


def space_masks(num_spaces: int, space: int, z0_positives: str = "k0") -> tuple[Tensor, Tensor]:
    """Which of an image's keys k0..kn are positives and which are negatives of its query in space `space`.

    Returns two bool masks of shape (num_spaces,) over the keys.
    """
    keys = torch.arange(num_spaces)
    if space == 0:
        positives = keys == 0 if z0_positives == "k0" else torch.ones(num_spaces, dtype=torch.bool)
        return positives, torch.zeros(num_spaces, dtype=torch.bool)
    return keys == space, keys != space


def leave_one_out_info_nce(
    query: Tensor, keys: Tensor, queue: Tensor, positives: Tensor, negatives: Tensor, temperature: float
) -> Tensor:
    """InfoNCE of one space with the image's own keys as positives or negatives.

    query (B, D); keys (B, K, D), the space's embeddings of each image's K
    keys; queue (M, D); positives, negatives (K,) bool masks over the keys.
    Each positive p gives −log e^{q·p/τ} / (e^{q·p/τ} + Σ_{own negatives}
    e^{q·k/τ} + Σ_{queue} e^{q·m/τ}); the result is the mean over positives
    and over the batch. Embeddings are L2-normalised here.
    """
    query, keys, queue = F.normalize(query, dim=-1), F.normalize(keys, dim=-1), F.normalize(queue, dim=-1)
    own = torch.einsum("bd,bkd->bk", query, keys) / temperature  # (B, K)
    negative_logits = torch.cat([own[:, negatives], query @ queue.T / temperature], dim=1)  # (B, N + M)
    target = torch.zeros(len(query), dtype=torch.long, device=query.device)
    losses = [
        F.cross_entropy(torch.cat([own[:, p : p + 1], negative_logits], dim=1), target)
        for p in torch.nonzero(positives)[:, 0].tolist()
    ]
    return torch.stack(losses).mean()


class _SharedFeatures(nn.Module):
    """LooC's trunk: every space reads the same backbone features."""

    def __init__(self, backbone: nn.Module, num_spaces: int):
        super().__init__()
        self.backbone, self.num_spaces = backbone, num_spaces

    def space_features(self, images: Tensor) -> list[Tensor]:
        return [self.backbone(images)] * self.num_spaces


class LooCMethod(Method):
    """`augmentations`: the n atomic augmentations of the views, one embedding space each after Z0's."""

    views_kind = "leave_one_out"

    def __init__(self, backbone: nn.Module, config: LooCConfig, augmentations: Sequence[str]):
        super().__init__()
        if not augmentations:
            raise ValueError("augmentations=[]: LooC needs at least one augmentation, an embedding space each")
        self.config, self.augmentations = config, list(augmentations)
        self.num_spaces = len(self.augmentations) + 1
        # Shuffle BN as MoCo v2's (augbench/methods/shuffle_bn.py), before LooC++ copies the last stage.
        self.shuffle_bn = ShuffleBN(config.shuffle_bn)
        self.backbone = self.shuffle_bn.convert(backbone)
        spaces = self.num_spaces
        trunk = LooCPlusPlusEncoder if config.representation == "looc++" else _SharedFeatures
        self.trunk = trunk(backbone, spaces)
        self.heads = self.shuffle_bn.convert(
            nn.ModuleList(MLP(backbone.out_dim, config.projector.specs()) for _ in range(spaces)))
        self.target_trunk = copy.deepcopy(self.trunk).requires_grad_(False)
        self.target_heads = copy.deepcopy(self.heads).requires_grad_(False)
        self.queues = nn.ModuleList(Queue(config.queue_size, self.heads[0].out_dim, config.queue_init)
                                    for _ in range(spaces))

    @classmethod
    def build(cls, backbone: nn.Module, config: LooCConfig, views: LeaveOneOutConfig | None) -> LooCMethod:
        if views is None:
            raise ValueError("LooC reads its embedding spaces from the leave-one-out views config (the augment "
                             "section): build it with that config")
        return cls(backbone, config, views.augmentations)

    def forward(self, views: list[View]) -> dict[str, Tensor]:
        spaces = self.num_spaces
        if len(views) != spaces + 1:
            raise ConfigError(f"LooC with augmentations {self.augmentations} takes a query and {spaces} keys, got "
                              f"{len(views)} views; set augment.views=leave_one_out with the same "
                              "augment.augmentations")
        query_features = self.trunk.space_features(views[0].images)
        queries = [head(v) for head, v in zip(self.heads, query_features)]  # n + 1 × (B, D)
        keys = self._key_embeddings(views[1:])  # n + 1 spaces × (B, n + 1 keys, D)
        losses = []
        for space in range(spaces):
            positives, negatives = space_masks(spaces, space, self.config.z0_positives)
            negatives_from_queue = self.queues[space].negatives()
            losses.append(leave_one_out_info_nce(queries[space], keys[space], negatives_from_queue,
                                                 positives, negatives, self.config.temperature))
        for space in range(spaces):
            self.queues[space].push(gather_no_grad(keys[space][:, space]))
        losses = torch.stack(losses)
        loss = losses.mean() if self.config.reduction == "mean" else losses.sum()
        with torch.no_grad():
            similarity = torch.stack([F.cosine_similarity(queries[s], keys[s][:, s]).mean() for s in range(spaces)])
            spread = embedding_spread(queries[0])
        logs = {f"loss_z{s}": losses[s].detach() for s in range(spaces)}
        features = torch.cat(query_features, dim=1) if self.config.representation == "looc++" else query_features[0]
        return {"loss": loss, "positive_similarity": similarity.mean(), "embedding_std": spread, **logs,
                "features": features.detach()}

    @torch.no_grad()
    def _key_embeddings(self, key_views: list[View]) -> list[Tensor]:
        """Every key in every space through the momentum encoder: per space, (B, number of keys, D)."""
        def embed(images: Tensor) -> list[Tensor]:
            return [head(v) for head, v in zip(self.target_heads, self.target_trunk.space_features(images))]

        per_key = [self.shuffle_bn.encode(embed, view.images, index, len(key_views))
                   for index, view in enumerate(key_views)]
        return [torch.stack([embeddings[space] for embeddings in per_key], dim=1) for space in range(len(key_views))]

    def update_target(self, progress: float) -> dict[str, float]:
        momentum = cosine_momentum(self.config.momentum.base, self.config.momentum.final, progress)
        ema_update(self.target_trunk, self.trunk, momentum)
        ema_update(self.target_heads, self.heads, momentum)
        self.shuffle_bn.step()
        return {"momentum": momentum}

    def encoder(self) -> nn.Module:
        return self.trunk if self.config.representation == "looc++" else self.backbone
