"""Encoders from elsewhere: torchvision and timm models by name, and checkpoints of other SSL codebases.

An encoder is named by a *spec*, the string `augbench evaluate` accepts:

    torchvision:NAME        a torchvision model, randomly initialised (e.g. a random-encoder baseline)
    timm:NAME               a timm model, randomly initialised
    FILE                    a checkpoint; its architecture is read from it (MoCo's `arch`) or, for
                            ResNets, inferred from its keys (depth, width, CIFAR or ImageNet stem)
    ARCH@FILE               ARCH (resnet50, torchvision:NAME or timm:NAME) with the weights of FILE

Weights only ever come from a local file: nothing is downloaded. `.pth`,
`.pth.tar`, `.pt`, `.ckpt` files are read with `torch.load(weights_only=True)`
(a pickle that would run code is refused), `.safetensors` with safetensors.

Checkpoint formats are recognised by their key prefixes (`FORMATS`): MoCo
v1/v2 (`module.encoder_q.`, fc head dropped), MoCo v3 (`module.base_encoder.`),
BYOL and the other methods of solo-learn and mmselfsup (`backbone.`, with
projector/predictor/momentum branches beside it), lightly exports
(`backbone.` over an `nn.Sequential` of the ResNet's children, so
`backbone.4.0.conv1.weight` is `layer1.0.conv1.weight`), SwAV
(`module.`, projection head and prototypes dropped), augbench's own
Lightning checkpoints and plain torchvision/timm state dicts. The format
whose renamed keys fit the most tensors of the model wins; the load report
says which, how many tensors loaded, which heads were dropped and which
keys were missing or unexpected. Missing weights or mismatched shapes are
an error (the numbers of a half-random encoder would mislead); no matching
key at all is a `CheckpointError` naming the file.

ResNets load into augbench's `ResNetBackbone` (torchvision's parameter
names, plus `forward_stages` for probes and dense heads); other
torchvision models into `TorchvisionBackbone`, timm models into
`TimmBackbone`. Each owns ImageNet normalisation (timm: the model's own
mean/std), so it takes images in [0, 1] like every augbench encoder.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from augbench.errors import CheckpointError, ConfigError, weights_only_reason
from augbench.models.backbones import RESNET_LAYOUTS, BackboneConfig, build_backbone

logger = logging.getLogger(__name__)

SPEC_PREFIXES = ("torchvision:", "timm:")
# Where checkpoints nest their state dict: MoCo and Lightning (solo-learn, lightly, augbench) use "state_dict",
# torchvision's reference scripts and MAE/DeiT "model", PyTorch-BYOL "online_network_state_dict".
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "online_network_state_dict", "network")
# torchvision.models.ResNet's children in order: what an nn.Sequential(*resnet.children()) numbers 0, 1, 2, …
RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")


@dataclass(frozen=True)
class CheckpointFormat:
    """Keys `prefix + NAME` hold the backbone's parameter NAME; keys under `prefix + head` are heads, dropped."""

    name: str
    prefix: str
    heads: tuple[str, ...] = ()


FORMATS = (
    CheckpointFormat("MoCo v1/v2", "module.encoder_q.", ("fc.",)),
    CheckpointFormat("MoCo v1/v2 (single process)", "encoder_q.", ("fc.",)),
    CheckpointFormat("MoCo v3", "module.base_encoder.", ("fc.", "head.")),
    CheckpointFormat("solo-learn / mmselfsup / BYOL / lightly", "backbone.", ("fc.",)),
    CheckpointFormat("PyTorch-BYOL", "encoder.", ("fc.",)),
    CheckpointFormat("SwAV / DistributedDataParallel", "module.", ("projection_head.", "prototypes.", "fc.")),
    CheckpointFormat("augbench run", "method.backbone.", ()),
    CheckpointFormat("torchvision / timm", "", ("fc.", "head.", "classifier.")),
)


@dataclass
class LoadReport:
    """What a checkpoint load did; `str(report)` is the summary printed to the user."""

    source: str
    architecture: str
    format: str = ""
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint shape vs model shape"
    unexpected: list[str] = field(default_factory=list)
    dropped_heads: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # keys outside the format's prefix: other branches, queues, …

    def __str__(self) -> str:
        if not self.format:
            return f"{self.source}: {self.architecture}, randomly initialised"
        parts = [f"{self.source}: loaded {self.loaded} tensors into {self.architecture} as {self.format}"]
        for label, keys in (("dropped heads", self.dropped_heads), ("ignored other branches", self.ignored),
                            ("unexpected", self.unexpected), ("missing", self.missing),
                            ("shape mismatch", self.mismatched)):
            if keys:
                parts.append(f"{label}: {len(keys)} ({_preview(keys)})")
        return "; ".join(parts)


@dataclass
class ExternalEncoder:
    encoder: nn.Module
    config: BackboneConfig
    report: LoadReport


def is_external(spec: str | Path) -> bool:
    """Whether `spec` is for this module rather than augbench's own encoder files (safetensors + config, runs)."""
    text = str(spec)
    if text.startswith(SPEC_PREFIXES):
        return True
    path = Path(text)
    if not path.exists():
        return "@" in text
    if not path.is_file():
        return False
    if path.suffix == ".safetensors":  # augbench's encoders carry their model's JSON; its exports are state dicts
        metadata = _safetensors_metadata(path)
        return "model" not in metadata or "format" in metadata
    if path.suffix == ".ckpt":
        return not (path.parent.parent / "config.yaml").is_file()
    return True


def load_external(spec: str | Path, strict: bool = True) -> ExternalEncoder:
    """The encoder `spec` names (see the module docstring), in eval mode, with its load report.

    `strict=False` accepts missing weights and shape mismatches (they stay
    randomly initialised and are listed in the report) instead of failing.
    """
    text = str(spec)
    architecture, file = parse_spec(text)
    if file is None:
        encoder, config = _build(architecture, {})
        report = LoadReport(text, architecture)
    else:
        checkpoint = _read(file)
        state = _state_dict(checkpoint, file)
        architecture = architecture or _architecture_of(checkpoint, state, file)
        encoder, config = _build(architecture, state)
        report = _load_into(encoder, state, file, architecture, strict)
    if report.unexpected:
        warnings.warn(str(report), stacklevel=2)
    else:
        logger.info("%s", report)
    return ExternalEncoder(encoder.eval(), config, report)


def parse_spec(text: str) -> tuple[str, Path | None]:
    """(architecture or "" to infer it, checkpoint file or None for random weights)."""
    if Path(text).is_file():
        return "", Path(text)
    architecture, at, location = text.partition("@")
    if at:
        if not Path(location).is_file():
            raise FileNotFoundError(f"{location}: checkpoint not found")
        return architecture, Path(location)
    if text.startswith(SPEC_PREFIXES):
        return text, None
    raise FileNotFoundError(f"{text}: checkpoint not found")


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(path, framework="pt") as file:
            return file.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None


def _read(path: Path) -> Mapping:
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, … by cause
        reason = weights_only_reason(error)
        raise CheckpointError(f"{path}: refused or unreadable as a weights-only checkpoint: {reason}") from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path}: holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


def _state_dict(checkpoint: Mapping, path: Path) -> dict[str, Tensor]:
    for key in CONTAINER_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state = {k: v for k, v in checkpoint.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(f"{path}: no tensors found (top-level keys {_preview(list(checkpoint))}; "
                              f"looked inside {list(CONTAINER_KEYS)})")
    return state


def _renamed(state: Mapping[str, Tensor], fmt: CheckpointFormat, children: tuple[str, ...] = RESNET_CHILDREN):
    """(renamed, ignored): the keys under `fmt.prefix` without it, Sequential indices named after `children`."""
    renamed, ignored = {}, []
    for key, value in state.items():
        if not key.startswith(fmt.prefix):
            ignored.append(key)
            continue
        name = key[len(fmt.prefix):]
        head, _, rest = name.partition(".")
        if head.isdigit() and int(head) < len(children) and rest:  # lightly: nn.Sequential(*resnet.children())
            name = f"{children[int(head)]}.{rest}"
        renamed[name] = value
    return renamed, ignored


def _as_resnet(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state renamed by the format that yields the most ResNet stage keys."""
    return max((_renamed(state, fmt)[0] for fmt in FORMATS), key=lambda s: sum(k.startswith("layer") for k in s))


def _architecture_of(checkpoint: Mapping, state: Mapping[str, Tensor], path: Path) -> str:
    """MoCo's recorded `arch`, else a ResNet inferred from the keys; else ask the user to name it."""
    arch = checkpoint.get("arch")
    if isinstance(arch, str) and arch in RESNET_LAYOUTS:
        return arch
    best = _as_resnet(state)
    blocks: dict[int, set[int]] = {}
    for key in best:
        match = re.match(r"layer([1-4])\.(\d+)\.", key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    block = Bottleneck if any(".conv3." in k for k in best) else BasicBlock
    layers = tuple(len(blocks.get(stage, ())) for stage in (1, 2, 3, 4))
    for name, layout in RESNET_LAYOUTS.items():
        if layout == (block, layers) and "conv1.weight" in best:
            return name
    raise CheckpointError(f"{path}: cannot tell the architecture from its keys ({_preview(list(state))}); "
                          "name it as ARCH@FILE, e.g. resnet50@FILE, torchvision:vit_b_16@FILE or timm:NAME@FILE")


def _build(architecture: str, state: Mapping[str, Tensor]) -> tuple[nn.Module, BackboneConfig]:
    library, _, name = architecture.rpartition(":")
    if library == "timm":
        try:
            config = BackboneConfig(name=architecture, cifar_stem=False)
            encoder = build_backbone(config)
        except ValueError as error:
            raise ConfigError(f"{architecture}: {error}") from None
        config.mean, config.std = encoder.mean, encoder.std
        return encoder, config
    if library not in ("", "torchvision"):
        raise ConfigError(f"{architecture}: unknown library {library!r}; use torchvision:NAME or timm:NAME")
    if name in RESNET_LAYOUTS:
        config = BackboneConfig(name=name, cifar_stem=False)
        stem = _as_resnet(state).get("conv1.weight") if state else None
        if stem is not None and stem.ndim == 4:  # the stem and width as trained: a 3×3 first conv is the CIFAR stem
            config.cifar_stem = stem.shape[-1] == 3
            config.width = stem.shape[0] / 64
        return build_backbone(config), config
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ConfigError(f"{architecture}: neither an augbench ResNet ({', '.join(RESNET_LAYOUTS)}) nor a "
                          "torchvision classification model; timm models are named timm:NAME")
    config = BackboneConfig(name=name, cifar_stem=False)
    return build_backbone(config), config


def _load_into(encoder: nn.Module, state: Mapping[str, Tensor], path: Path, architecture: str,
               strict: bool) -> LoadReport:
    # The module whose parameter names checkpoints use: torchvision/timm wrappers keep theirs in `.model`.
    target = encoder if isinstance(encoder, ResNet) else encoder.model
    children = RESNET_CHILDREN if isinstance(target, ResNet) else tuple(n for n, _ in target.named_children())
    expected = target.state_dict()
    scored = []
    for fmt in FORMATS:
        renamed, ignored = _renamed(state, fmt, children)
        fits = {k: v for k, v in renamed.items() if k in expected and v.shape == expected[k].shape}
        scored.append((len(fits), fmt, renamed, ignored, fits))
    count, fmt, renamed, ignored, fits = max(scored, key=lambda entry: entry[0])  # first format wins ties
    if count == 0:
        raise CheckpointError(f"{path}: no weights match {architecture}: the file has keys like "
                              f"{_preview(list(state))}, the model expects {_preview(list(expected))}; "
                              f"formats tried: {', '.join(repr(f.prefix or '(no prefix)') for f in FORMATS)}")
    report = LoadReport(str(path), architecture, f"{fmt.name} ({fmt.prefix or 'no prefix'})", count, ignored=ignored)
    for key, value in renamed.items():
        if key in fits:
            continue
        if key in expected:
            report.mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(expected[key].shape)}")
        elif key.startswith(fmt.heads):
            report.dropped_heads.append(fmt.prefix + key)
        else:
            report.unexpected.append(fmt.prefix + key)
    # Checkpoints from before torch 0.4.1 lack BN's batch counters, which evaluation never reads.
    report.missing = [k for k in expected if k not in renamed and not k.endswith("num_batches_tracked")]
    if strict and (report.missing or report.mismatched):
        raise CheckpointError(f"{report}. The encoder would be partly random; name the right architecture "
                              "(ARCH@FILE) or load with strict=False")
    target.load_state_dict(fits, strict=False)
    return report


def _preview(keys: list, count: int = 4) -> str:
    shown = ", ".join(str(k) for k in keys[:count])
    return shown + (f", … {len(keys) - count} more" if len(keys) > count else "")
