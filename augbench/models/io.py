"""Encoders on disk: safetensors weights that carry the config to rebuild them.

An exported encoder is one `.safetensors` file whose metadata holds the
backbone config as JSON, so it loads with no pickle and no code execution.
A Lightning checkpoint (`.ckpt`) of a pretraining run also loads, with
`torch.load(weights_only=True)` and the run's `config.yaml` beside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from augbench.errors import CheckpointError
from augbench.files import StorageError, check_writable, write_atomic
from augbench.models.backbones import RESNET_LAYOUTS, BackboneConfig, ResNetBackbone, build_backbone
from augbench.models.external import is_external, load_external

ENCODER_FILE = "encoder.safetensors"
BACKBONE_PREFIX = "method.backbone."
LOOC_PLUS_PLUS_PREFIX = "method.trunk."


def save_encoder(encoder: nn.Module, config: BackboneConfig, path: Path, **metadata: str) -> Path:
    """Write atomically: a crash leaves the previous file (or none), never half a file."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    # An encoder that is more than the backbone (LooC++'s) says in `encoder_metadata` how to rebuild it.
    layout = getattr(encoder, "encoder_metadata", {})
    content = safetensors_bytes(tensors, metadata={"model": json.dumps(asdict(config)), **layout, **metadata})
    return _write_file(path, lambda file: file.write(content), "the encoder")


def _write_file(path: Path, save, what: str) -> Path:
    """write_atomic, its OSError (a full disk) reported as one line naming `path`.

    safetensors' own `save_file` writes in Rust, where a full disk becomes a
    SafetensorError with the OS error in its text; serialising to bytes and
    writing them here keeps the OSError.
    """
    try:
        return write_atomic(save, path)
    except OSError as error:
        raise StorageError(error.errno, f"could not write {what} ({error.strerror or error}); an earlier file at "
                           "this path, if any, is unchanged", str(path)) from None


def load_encoder(path: str | Path) -> tuple[nn.Module, BackboneConfig]:
    """An encoder from a run directory, an exported `.safetensors` file or a run's `.ckpt`, in eval mode.

    Also any spec of `augbench.models.external`: `torchvision:NAME`, `timm:NAME`, `ARCH@FILE`, or a checkpoint
    of another codebase (MoCo, SwAV, solo-learn, lightly, torchvision state dicts, …).
    """
    if is_external(path):
        external = load_external(path)
        return external.encoder, external.config
    path = Path(path)
    if path.is_dir():
        candidates = [path / ENCODER_FILE, path / "checkpoints" / "last.ckpt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path}: no {ENCODER_FILE} or checkpoints/last.ckpt in this directory")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        config, state, layout = _read_safetensors(path)
    else:
        config, state, layout = _read_lightning_checkpoint(path)
    encoder = _build_encoder(config, layout)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit model {config.name!r}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return encoder.eval(), config


def _build_encoder(config: BackboneConfig, layout: dict[str, str]) -> nn.Module:
    """The backbone, or the module `layout["representation"]` names around it."""
    backbone = build_backbone(config)
    if layout.get("representation", "backbone") == "backbone":
        return backbone
    # Imported here: models/ does not depend on methods/ except to rebuild a method's own encoder.
    from augbench.methods.looc import LooCPlusPlusEncoder

    return LooCPlusPlusEncoder(backbone, int(layout["spaces"]))


def _read_safetensors(path: Path) -> tuple[BackboneConfig, dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
        state = load_file(path)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    if "model" not in metadata:
        raise CheckpointError(f"{path}: safetensors file lacks the 'model' metadata that augbench writes")
    return BackboneConfig(**json.loads(metadata["model"])), state, metadata


def _read_lightning_checkpoint(path: Path) -> tuple[BackboneConfig, dict[str, torch.Tensor], dict[str, str]]:
    from augbench.train.checkpoint import safe_load  # train/ imports models/, so not at import time

    checkpoint = safe_load(path)  # before anything else: a pickle that would run code is refused, whatever surrounds it
    config_file = path.parent.parent / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: a .ckpt needs its run's config.yaml at {config_file}")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint of an augbench run (no 'state_dict')")
    run_config = yaml.safe_load(config_file.read_text())
    method = run_config.get("method", {})
    layout, prefix = {"representation": "backbone"}, BACKBONE_PREFIX
    if method.get("representation") == "looc++":
        layout = {"representation": "looc++", "spaces": str(len(method["augmentations"]) + 1)}
        prefix = LOOC_PLUS_PLUS_PREFIX
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{path}: no '{prefix}*' weights in this checkpoint")
    return BackboneConfig(**run_config["model"]), state, layout


EXPORT_FORMATS = ("torchvision", "timm")


def export_backbone(source: str | Path, format: str, output: str | Path) -> tuple[Path, BackboneConfig]:
    """Write the backbone of a run, encoder or checkpoint as a plain state dict another library loads.

    augbench's ResNets keep torchvision's parameter names, which timm's ResNets
    share: `torchvision.models.resnet50()` and `timm.create_model("resnet50")`
    load the file with `strict=True` once their classifier is removed
    (`model.fc = torch.nn.Identity()`, or timm's `num_classes=0`). The input
    normalisation augbench keeps inside the encoder is not in the file: feed
    images normalised with the returned config's mean and std (also in a
    `.safetensors` file's metadata). A `.safetensors` output is written as
    such, any other name with `torch.save`; either atomically.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format={format!r}: expected one of {EXPORT_FORMATS}")
    output = Path(output)
    check_writable(output.parent, "--output")
    encoder, config = load_encoder(source)
    if isinstance(encoder, ResNetBackbone):
        _check_exportable_resnet(source, config, format)
        state = encoder.state_dict()
    elif format == "torchvision" and hasattr(encoder, "model"):
        state = encoder.state_dict()  # a torchvision model under its own name, classifier removed
        state = {k.removeprefix("model."): v for k, v in state.items()}
    else:
        raise CheckpointError(f"{source}: a {type(encoder).__name__} ({config.name}) has no {format} counterpart; "
                              f"{format} export covers augbench's ResNets ({', '.join(RESNET_LAYOUTS)})")
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if output.suffix == ".safetensors":
        metadata = {"format": format, "model": config.name, "mean": json.dumps(config.mean),
                    "std": json.dumps(config.std)}
        content = safetensors_bytes(state, metadata=metadata)
        _write_file(output, lambda file: file.write(content), f"the {format} state dict")
    else:
        _write_file(output, lambda file: torch.save(state, file), f"the {format} state dict")
    return output, config


def _check_exportable_resnet(source: str | Path, config: BackboneConfig, format: str) -> None:
    reasons = []
    if config.cifar_stem:
        reasons.append("the CIFAR stem (a 3x3 stride-1 conv1 and no max-pool)")
    if config.width != 1.0:
        reasons.append(f"width {config.width} (stage widths {[round(64 * config.width * 2**i) for i in range(4)]})")
    if reasons:
        raise CheckpointError(
            f"{source}: this {config.name} has {' and '.join(reasons)}; {format}'s {config.name} has a 7x7 stride-2 "
            "conv1 with max-pool and stage widths [64, 128, 256, 512], so its weights cannot map onto it. "
            "Pretrain with model.cifar_stem=false model.width=1.0 to export."
        )
