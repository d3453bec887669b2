"""Encoders on disk: safetensors weights that carry the config to rebuild them.

An exported encoder is one `.safetensors` file whose metadata holds the
backbone config as JSON, so it loads with no pickle and no code execution.
A Lightning checkpoint (`.ckpt`) of a pretraining run also loads, with
`torch.load(weights_only=True)` and the run's `config.yaml` beside it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from augbench.errors import CheckpointError
from augbench.models.backbones import BackboneConfig, build_backbone

ENCODER_FILE = "encoder.safetensors"
BACKBONE_PREFIX = "method.backbone."


def save_encoder(encoder: nn.Module, config: BackboneConfig, path: Path, **metadata: str) -> Path:
    """Write atomically: a crash leaves the previous file (or none), never half a file."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, partial, metadata={"model": json.dumps(asdict(config)), **metadata})
    os.replace(partial, path)
    return path


def load_encoder(path: str | Path) -> tuple[nn.Module, BackboneConfig]:
    """An encoder from a run directory, an exported `.safetensors` file or a run's `.ckpt`, in eval mode."""
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
        config, state = _read_safetensors(path)
    else:
        config, state = _read_lightning_checkpoint(path)
    encoder = build_backbone(config)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit model {config.name!r}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return encoder.eval(), config


def _read_safetensors(path: Path) -> tuple[BackboneConfig, dict[str, torch.Tensor]]:
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
        state = load_file(path)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    if "model" not in metadata:
        raise CheckpointError(f"{path}: safetensors file lacks the 'model' metadata that augbench writes")
    return BackboneConfig(**json.loads(metadata["model"])), state


def _read_lightning_checkpoint(path: Path) -> tuple[BackboneConfig, dict[str, torch.Tensor]]:
    config_file = path.parent.parent / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: a .ckpt needs its run's config.yaml at {config_file}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or EOFError by cause
        reason = f"{type(error).__name__}: {error}"
        raise CheckpointError(f"{path}: cannot load as a weights-only checkpoint ({reason})") from None
    model = yaml.safe_load(config_file.read_text())["model"]
    state = {k[len(BACKBONE_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(BACKBONE_PREFIX)}
    if not state:
        raise CheckpointError(f"{path}: no '{BACKBONE_PREFIX}*' weights in this checkpoint")
    return BackboneConfig(**model), state
