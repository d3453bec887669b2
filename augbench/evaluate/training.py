"""Protocols that run the encoder on augmented images: SGD linear (frozen encoder) and fine-tuning.

Both train on random resized crops and horizontal flips drawn by augbench's
own ops from the suite's seed, and both pick the best of their settings on
the validation split. The SGD linear probe keeps the encoder frozen in eval
mode, so its BatchNorm statistics do not move (the failure of lightly issue
1440); fine-tuning trains a deep copy, so the caller's encoder is untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augbench.augment.ops import HorizontalFlip, RandomResizedCrop
from augbench.augment.views import Pipeline, to_float
from augbench.data import Split
from augbench.errors import ConfigError
from augbench.evaluate.features import extract_features
from augbench.models.io import load_encoder
from augbench.optim import OptimConfig, build_optimizer, build_scheduler


@dataclass
class SGDLinearConfig:
    """A linear classifier on frozen features of augmented images (the standard linear protocol, scaled down).

    One linear head per rate in `lrs` is trained on the same augmented
    batches (one encoder pass serves them all); the head with the best val
    accuracy is tested. Features pass a non-affine BatchNorm first (as MAE's
    linear probe does), so one rate range suits any encoder's feature scale.
    SGD with momentum 0.9, no weight decay, cosine decay over the budget.
    `max_train_images` caps the train split (0 = all of it).
    """

    epochs: int = 10
    batch_size: int = 256
    lrs: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    momentum: float = 0.9
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    max_train_images: int = 0


@dataclass
class FinetuneConfig:
    """The whole network and a linear head trained together; `optimizer.name` is sgd, lars (timm) or adamw.

    `optimizer.lr` is the rate for a batch of 256 (scaled by batch_size/256),
    with `optimizer.warmup_epochs` of warm-up and cosine decay. The
    'Critical Factors' study found a fine-tuning optimiser unlike the
    pretraining one hurts transfer, hence the switch. The test score is the
    network after the last epoch; `max_train_images` caps the train split.
    `norm_rescale` names a reference encoder (any `load_encoder` spec: run
    directory, encoder .safetensors, .ckpt, ARCH@FILE, …) whose tensor norms
    the copy takes before fine-tuning: the study's NormRescale (see
    `norm_rescale`); empty, off.
    """

    epochs: int = 5
    batch_size: int = 128
    optimizer: OptimConfig = field(default_factory=lambda: OptimConfig(name="sgd", lr=0.1, weight_decay=5e-4))
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    max_train_images: int = 0
    norm_rescale: str = ""


def _augmentation(size: int, crop_scale: list[float]) -> Pipeline:
    return Pipeline([RandomResizedCrop(size, scale=tuple(crop_scale)), HorizontalFlip(p=0.5)])


def _capped(data: Split, labels: Tensor, cap: int) -> tuple[Split, Tensor]:
    return (data.take(torch.arange(cap)), labels[:cap]) if 0 < cap < len(data) else (data, labels)


def _feature_width(encoder: nn.Module, data: Split, device: str) -> int:
    return extract_features(encoder, data, device=device, order=torch.arange(1)).shape[1]


def sgd_linear_classifier(
    encoder: nn.Module, train: tuple[Split, Tensor], val: tuple[Split, Tensor], num_classes: int,
    config: SGDLinearConfig, seed: int, device: str,
) -> tuple[nn.Module, dict]:
    """The chosen head (features → logits) and {"lr": chosen, "val_accuracy": {lr: acc}}.

    `train` and `val` are a split and its labels; a lazily read split is
    decoded a batch ahead, epoch after epoch, and never held whole.
    """
    data, labels = _capped(*train, config.max_train_images)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    augment = _augmentation(data.image_size, config.crop_scale)
    dim = _feature_width(encoder, data, device)
    heads = nn.ModuleList(
        nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, num_classes)) for _ in config.lrs
    ).to(device)
    optimizer = torch.optim.SGD(
        [{"params": head.parameters(), "lr": lr} for head, lr in zip(heads, config.lrs)], momentum=config.momentum
    )
    # A last batch of one image is left out: BatchNorm cannot normalise it.
    used = len(data) - (len(data) % config.batch_size == 1)
    batches_per_epoch = -(-used // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, config.epochs * batches_per_epoch))
    was_training = encoder.training
    encoder.eval()
    try:
        for _ in range(config.epochs):
            order = torch.randperm(len(data), generator=generator)[:used]
            for batch, images in zip(order.split(config.batch_size), data.batches(config.batch_size, order)):
                view = augment(to_float(images), generator)
                with torch.no_grad():
                    features = encoder(view.images.to(device)).flatten(1)
                optimizer.zero_grad()
                target = labels[batch].to(device)
                sum(F.cross_entropy(head(features), target) for head in heads).backward()
                optimizer.step()
                scheduler.step()
    finally:
        encoder.train(was_training)
    heads.eval()
    val_features = extract_features(encoder, val[0], device=device).to(device)
    with torch.no_grad():
        accuracy = {lr: (head(val_features).argmax(1).cpu() == val[1]).float().mean().item()
                    for head, lr in zip(heads, config.lrs)}
    best = max(accuracy, key=accuracy.get)
    return heads[config.lrs.index(best)].cpu(), {"lr": best, "val_accuracy": accuracy}


@torch.no_grad()
def norm_rescale(encoder: nn.Module, reference: nn.Module, reference_name: str) -> None:
    """Scale each floating tensor of `encoder` (weights and BatchNorm statistics), in place, to the L2 norm of
    `reference`'s tensor of the same name.

    The 'Critical Factors' study's NormRescale (revisitAIRL, norm_rescale.py,
    which rescales every tensor of the online encoder): LARS pretraining
    leaves weights whose norms suit no SGD fine-tuning recipe, and their
    directions at an SGD-pretrained model's norms fine-tune as that model
    does. A tensor of zero norm has no direction to scale and stays as it is.
    """
    ours, theirs = encoder.state_dict(), reference.state_dict()
    tensors = {key: tensor for key, tensor in ours.items() if tensor.is_floating_point()}
    unmatched = [key for key, tensor in tensors.items() if key not in theirs or theirs[key].shape != tensor.shape]
    if unmatched:
        raise ConfigError(f"finetune.norm_rescale={reference_name!r}: the reference encoder has no tensor of the "
                          f"same name and shape for {len(unmatched)} of the encoder's {len(tensors)}, e.g. "
                          f"{unmatched[:3]}; it must be the same architecture")
    for key, tensor in tensors.items():
        norm = tensor.norm()
        if norm > 0:
            tensor.mul_(theirs[key].norm().to(tensor.device) / norm)


def finetune_classifier(
    encoder: nn.Module, train: tuple[Split, Tensor], num_classes: int, config: FinetuneConfig, seed: int,
    device: str,
) -> nn.Module:
    """A fine-tuned copy of `encoder` followed by a linear head (images in [0, 1] → logits), in eval mode.

    `train` is a split and its labels, read as `sgd_linear_classifier` reads them.
    """
    data, labels = _capped(*train, config.max_train_images)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    augment = _augmentation(data.image_size, config.crop_scale)
    backbone = copy.deepcopy(encoder).to(device)
    if config.norm_rescale:
        norm_rescale(backbone, load_encoder(config.norm_rescale)[0], config.norm_rescale)
    dim = _feature_width(backbone, data, device)
    model = nn.Sequential(backbone, nn.Flatten(1), nn.Linear(dim, num_classes)).to(device).train()
    optimizer = build_optimizer(model, config.optimizer, config.batch_size)
    steps_per_epoch = max(1, len(data) // config.batch_size)
    scheduler = build_scheduler(optimizer, config.optimizer, steps_per_epoch, config.epochs * steps_per_epoch)
    for _ in range(config.epochs):
        # drop_last: a final batch of one image would break BatchNorm in train mode.
        order = torch.randperm(len(data), generator=generator)[: steps_per_epoch * config.batch_size]
        for batch, images in zip(order.split(config.batch_size), data.batches(config.batch_size, order)):
            view = augment(to_float(images), generator)
            optimizer.zero_grad()
            F.cross_entropy(model(view.images.to(device)), labels[batch].to(device)).backward()
            optimizer.step()
            scheduler.step()
    return model.eval()
