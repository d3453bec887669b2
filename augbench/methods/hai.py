"""HAI: hierarchical augmentation invariance with expanded views, over any two-branch base method.

Zhang & Ma, "Rethinking the Augmentation Module in Contrastive Learning:
Learning Hierarchical Augmentation Invariance with Expanded Views" (CVPR 2022;
official code zhangjb416/Hierarchical-Augmentation, SimSiam only).

Each tapped stage s has its own pair of views (`augment.views: hierarchical`,
augment/hai.py: the pair of stage s applies only the augmentations assigned
to stages ≤ s), its own head (models/taps.py), projector, predictor and, for
MoCo-style bases, queue:

    z = projector_s([head_s(backbone_≤s(view)) ; embed_s(a(view))])

where a(view) is the view's augmentation-parameter vector (colour-jitter
factors by default) and embed_s = Linear → BN → ReLU, on the stages listed in
`embedding.stages` (2–4 in the paper; the paper found colour embeddings the
vital part, so `embedding.params` defaults to ["color_jitter"]). Each view
is embedded with its own vector, not the difference between views.

The loss of stage s is the base method's loss (`base_method`, a point of the
MoCo v2/BYOL/SimCLR/SimSiam design space of two_branch.py: InfoNCE over a queue,
NT-Xent, or 2 − 2cos, one-way or symmetric, its directions combined by
`base_method.pair_reduction`) on that stage's pair; the total is
Σ_s w_s · L_s with `loss_weights` (equal in the paper). With a momentum target,
the whole target side (backbone, heads, embeddings, projectors, and the
predictors with `base_method.target_predictor`) is an EMA copy.
Augmentation embeddings are training-time only: `encoder()` is the backbone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from augbench.augment.hai import EMBEDDED_PARAMS, HierarchicalConfig, augmentation_vector, vector_width
from augbench.augment.views import View
from augbench.methods.base import Method, embedding_spread
from augbench.methods.momentum import cosine_momentum, ema_update
from augbench.methods.queue import Queue
from augbench.methods.two_branch import TwoBranchConfig, keys_to_enqueue, online_views, pair_loss, reduce_pairs
from augbench.models.heads import MLP, LayerSpec
from augbench.models.taps import NUM_STAGES, StageHead, check_staged, forward_to_stage


@dataclass
class ExpandedViewsConfig:
    """Which recorded parameters form each view's vector (augment/hai.py EMBEDDED_PARAMS), its embedding width,
    and the stages that get an embedding (none at stage 1 in the paper)."""

    params: list[str] = field(default_factory=lambda: ["color_jitter"])
    dim: int = 512
    stages: list[int] = field(default_factory=lambda: [2, 3, 4])

    def __post_init__(self):
        unknown = [name for name in self.params if name not in EMBEDDED_PARAMS]
        if unknown:
            raise ValueError(f"embedding.params={self.params}: {unknown} unknown; known: {sorted(EMBEDDED_PARAMS)}")
        if self.stages and (not self.params or self.dim < 1):
            raise ValueError("embedding.stages is set but embedding.params is empty or embedding.dim < 1")


@dataclass
class HAIConfig:
    """`stages` lists the taps, each with its pair of views (`augment.views: hierarchical`, whose `assignment` gives
    each augmentation the shallowest stage whose pair applies it), head, projector and loss, weighted by
    `loss_weights`."""

    name: str = "hai"
    stages: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    loss_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    embedding: ExpandedViewsConfig = field(default_factory=ExpandedViewsConfig)
    base_method: TwoBranchConfig = field(default_factory=TwoBranchConfig)

    def __post_init__(self):
        valid = list(range(1, NUM_STAGES + 1))
        if not self.stages or sorted(set(self.stages)) != list(self.stages) or not set(self.stages) <= set(valid):
            raise ValueError(f"stages={self.stages}: expected distinct stages in increasing order from {valid}")
        if len(self.loss_weights) != len(self.stages):
            raise ValueError(f"loss_weights={self.loss_weights}: expected one weight per stage of {self.stages}")
        if self.base_method.shuffle_bn > 1:
            raise ValueError(f"base_method.shuffle_bn={self.base_method.shuffle_bn}: HAI runs its stages' pairs "
                             "without Shuffle BN; set it to 0")
        missing = [stage for stage in self.embedding.stages if stage not in self.stages]
        if missing:
            raise ValueError(f"embedding.stages={self.embedding.stages}: {missing} not in stages={self.stages}")

    @classmethod
    def composed_over(cls, previous: type, values: DictConfig) -> dict | None:
        """A config that renames a method section to `hai` makes the method composed so far HAI's base method
        (config.compose): `base: byol.yaml` plus `method.name: hai` is HAI over that preset, Barlow Twins taken as
        its point of the two-branch space."""
        if issubclass(previous, TwoBranchConfig):
            return {"base_method": values}
        if hasattr(previous, "two_branch"):
            return {"base_method": OmegaConf.to_object(values).two_branch()}
        return None

    def check_views(self, views: HierarchicalConfig) -> None:
        for augmentation, stage in views.assignment.items():
            if stage is not None and stage not in self.stages:
                raise ValueError(f"augment.assignment.{augmentation}={stage}: names stage {stage}, which has no tap; "
                                 f"method.stages={self.stages}")

    def runs_backbone_by_stage(self) -> str | None:
        return "method.name=hai"

    def missing_features(self) -> str | None:
        if self.stages[-1] == NUM_STAGES:
            return None
        return f"HAI computes only with stage {NUM_STAGES} tapped; method.stages={list(self.stages)}"


class StageBranch(nn.Module):
    """One tap: stage feature map and augmentation vector → projection (B, D)."""

    def __init__(self, head: StageHead, embedder: nn.Module | None, projector: MLP):
        super().__init__()
        self.head, self.embedder, self.projector = head, embedder, projector

    def forward(self, feature_map: Tensor, augmentation: Tensor) -> Tensor:
        return self.project(self.head(feature_map), augmentation)

    def project(self, feature: Tensor, augmentation: Tensor) -> Tensor:
        """The head's vector (B, backbone width) and the augmentation vector → projection (B, D)."""
        if self.embedder is not None:
            feature = torch.cat([feature, self.embedder(augmentation.to(feature.dtype))], dim=1)
        return self.projector(feature)


class HAIMethod(Method):
    views_kind = "hierarchical"

    def __init__(self, backbone: nn.Module, config: HAIConfig):
        super().__init__()
        self.config = config
        base = config.base_method
        self.backbone = check_staged(backbone)
        width = vector_width(config.embedding.params)
        branches = []
        for stage in config.stages:
            head = StageHead(backbone.stage_dims[stage - 1], backbone.out_dim, last=stage == NUM_STAGES)
            embedder = None
            if stage in config.embedding.stages:
                embedder = MLP(width, [LayerSpec(config.embedding.dim, bn=True, activation="relu")])
            in_dim = head.out_dim + (embedder.out_dim if embedder is not None else 0)
            branches.append(StageBranch(head, embedder, MLP(in_dim, base.projector.specs())))
        self.branches = nn.ModuleList(branches)
        out_dim = base.projector.out_dim
        self.predictors = nn.ModuleList(
            MLP(out_dim, base.predictor.specs(out_dim)) if base.predictor.enabled else nn.Identity()
            for _ in config.stages
        )
        if base.momentum.enabled:
            self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
            self.target_branches = copy.deepcopy(self.branches).requires_grad_(False)
            if base.target_predictor:
                self.target_predictors = copy.deepcopy(self.predictors).requires_grad_(False)
        if base.negatives == "queue":
            self.queues = nn.ModuleList(Queue(base.queue_size, out_dim, base.queue_init) for _ in config.stages)

    def forward(self, views: list[View]) -> dict[str, Tensor]:
        stages = self.config.stages
        if len(views) != 2 * len(stages):
            raise ValueError(f"HAI takes 2 views per stage of {stages} ({2 * len(stages)}), got {len(views)}; "
                             "set augment.views=hierarchical")
        total, logs, similarities, spreads = 0.0, {}, [], []
        for index, (stage, weight) in enumerate(zip(stages, self.config.loss_weights)):
            stage_loss, similarity, spread, features = self._stage_loss(index, stage, views[2 * index : 2 * index + 2])
            total = total + weight * stage_loss
            logs[f"loss_stage{stage}"] = stage_loss.detach()
            similarities.append(similarity)
            spreads.append(spread)
        # The least spread stage: a collapse of any stage's embedding is reported (trainer.collapse_threshold).
        out = {"loss": total, **logs, "positive_similarity": torch.stack(similarities).mean(),
               "embedding_std": torch.stack(spreads).min()}
        if stages[-1] == NUM_STAGES:  # the last stage's pooled map is the encoder's output
            out["features"] = features
        return out

    def _stage_loss(self, index: int, stage: int, pair: list[View]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The stage's loss, the mean positive similarity, the spread of its normalised projections (embedding_std),
        and its head's detached vectors of the first view."""
        base = self.config.base_method
        directions = [(0, 1), (1, 0)] if base.symmetric else [(0, 1)]
        vectors = [self._vector(view) for view in pair]
        branch, predictor = self.branches[index], self.predictors[index]
        needed = {j for _, j in directions}
        heads = {i: branch.head(forward_to_stage(self.backbone, pair[i].images, stage))
                 for i in online_views(directions, base.momentum.enabled)}
        projections = {i: branch.project(h, vectors[i]) for i, h in heads.items()}
        queries = {i: predictor(z) for i, z in projections.items()}
        if base.momentum.enabled:
            with torch.no_grad():
                target = self.target_branches[index]
                keys = {j: target(forward_to_stage(self.target_backbone, pair[j].images, stage), vectors[j])
                        for j in needed}
                if base.target_predictor:
                    keys = {j: self.target_predictors[index](k) for j, k in keys.items()}
        else:
            keys = {j: projections[j].detach() if base.stop_gradient else projections[j] for j in needed}
        losses = [self._pair_loss(index, queries[i], keys[j]) for i, j in directions]
        if base.negatives == "queue":
            self.queues[index].push(keys_to_enqueue(base, keys, directions))
        with torch.no_grad():
            similarity = torch.stack([F.cosine_similarity(queries[i], keys[j]).mean() for i, j in directions]).mean()
            spread = embedding_spread(projections[0])
        return reduce_pairs(base, losses), similarity, spread, heads[0].detach()

    def _vector(self, view: View) -> Tensor:
        if not self.config.embedding.stages:  # no stage embeds, so views need not record the parameters
            return view.images.new_zeros(len(view.images), 0)
        return augmentation_vector(view.params, self.config.embedding.params).to(view.images.device)

    def _pair_loss(self, index: int, query: Tensor, key: Tensor) -> Tensor:
        base = self.config.base_method
        return pair_loss(base, query, key, self.queues[index] if base.negatives == "queue" else None)

    def predictor_parameters(self) -> list[nn.Parameter]:
        return list(self.predictors.parameters())

    def update_target(self, progress: float) -> dict[str, float]:
        momentum_config = self.config.base_method.momentum
        if not momentum_config.enabled:
            return {}
        momentum = cosine_momentum(momentum_config.base, momentum_config.final, progress)
        ema_update(self.target_backbone, self.backbone, momentum)
        ema_update(self.target_branches, self.branches, momentum)
        if self.config.base_method.target_predictor:
            ema_update(self.target_predictors, self.predictors, momentum)
        return {"momentum": momentum}
