"""Encoders on disk: safetensors weights that carry the config to rebuild them.

An exported encoder is one `.safetensors` file whose metadata holds the
backbone config as JSON, so it loads with no pickle and no code execution.
A Lightning checkpoint (`.ckpt`) of a pretraining run also loads, with
`torch.load(weights_only=True)` and the run's `config.yaml` beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

import augbench
from augbench.errors import CheckpointError
from augbench.files import StorageError, check_writable, safe_load, write_atomic
from augbench.models.backbones import RESNET_LAYOUTS, BackboneConfig, ResNetBackbone, build_backbone
from augbench.models.external import is_external, load_external
from augbench.models.looc_encoder import LooCPlusPlusEncoder

ENCODER_FILE = "encoder.safetensors"
BACKBONE_PREFIX = "method.backbone."
LOOC_PLUS_PLUS_PREFIX = "method.trunk."


def save_encoder(encoder: nn.Module, config: BackboneConfig, path: Path, **metadata: str) -> Path:
    """Write atomically: a crash leaves the previous file (or none), never half a file."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    # An encoder that is more than the backbone (LooC++'s) says in `encoder_metadata` how to rebuild it.
    layout = getattr(encoder, "encoder_metadata", {})
    content = safetensors_bytes(tensors, metadata={"model": json.dumps(asdict(config)),
                                                        "augbench": augbench.__version__, **layout, **metadata})
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
    encoder, config, _ = read_encoder(path)
    return encoder, config


def read_encoder(path: str | Path, *, allow_unfinished: bool = True) -> tuple[nn.Module, BackboneConfig, dict]:
    """`load_encoder`'s encoder and config, and where its weights come from in training: a dict of `weights`
    ("final": the encoder a finished run wrote, or the last checkpoint of a finished run; "mid-training": any
    other checkpoint; "external": another codebase's file or a spec), `step` and `epoch` (of a checkpoint).

    `allow_unfinished=False` refuses a run directory whose run did not finish (its status.json says running,
    failed, preempted, …, or it has none) and so has no encoder file, only a checkpoint from mid-training.
    Every file is checked as it loads: its metadata must describe a model this augbench builds, every tensor
    must fit that model's shape and hold finite values; a CheckpointError names the file and the key.
    """
    if is_external(path):
        external = load_external(path)
        check_finite(external.encoder.state_dict(), str(path))
        return external.encoder, external.config, {"weights": "external", "step": None, "epoch": None}
    path = Path(path)
    if path.is_dir():
        candidates = [path / ENCODER_FILE, path / "checkpoints" / "last.ckpt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path}: no {ENCODER_FILE} or checkpoints/last.ckpt in this directory")
        state = _run_state(path)
        if found.suffix == ".ckpt" and state != "finished" and not allow_unfinished:
            described = f"state {state!r}" if state else f"no {RUN_STATUS_FILE}"
            raise CheckpointError(
                f"{path}: this run did not finish ({described}), so it has no {ENCODER_FILE}, only the mid-training "
                f"checkpoint {found}; finish it (`augbench pretrain` with its config resumes it) or evaluate those "
                "weights with --allow-unfinished (allow_unfinished=True), which records them as mid-training"
            )
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        config, state, layout, origin = _read_safetensors(path)
    else:
        config, state, layout, origin = _read_lightning_checkpoint(path)
    check_finite(state, str(path))
    encoder = _build_encoder(config, layout, path, origin["config_from"])
    _load_weights(encoder, state, config, path, origin.pop("config_from"))
    return encoder.eval(), config, origin


RUN_STATUS_FILE = "status.json"  # augbench.train.config.STATUS_FILE, not imported: models sit below train


def _run_state(run_dir: Path) -> str | None:
    """The `state` in a run directory's status.json, or None without a readable one."""
    try:
        return json.loads((run_dir / RUN_STATUS_FILE).read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        return None


def check_finite(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise CheckpointError naming `where` and the first tensor with a NaN or infinite value."""
    bad = [name for name, tensor in tensors.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        tensor = tensors[bad[0]]
        count = int((~torch.isfinite(tensor)).sum())
        raise CheckpointError(
            f"{where}: tensor {bad[0]!r} has {count} NaN or infinite value(s) of {tensor.numel()} ({len(bad)} "
            f"tensor(s) have such values): the weights of a run that diverged, or of a damaged file, give no features"
        )


def _build_encoder(config: BackboneConfig, layout: dict[str, str], path: Path, config_from: str) -> nn.Module:
    """The backbone, or the module `layout["representation"]` names around it."""
    representation = layout.get("representation", "backbone")
    if representation not in ("backbone", "looc++"):
        raise CheckpointError(f"{path}: metadata 'representation' is {representation!r}, which this augbench "
                              f"({augbench.__version__}) does not know (it knows 'backbone' and 'looc++')")
    try:
        backbone = build_backbone(config)
    except (ValueError, RuntimeError) as error:  # an unknown model name; timm's "Unknown model"
        raise CheckpointError(f"{path}: {config_from} names a model this augbench cannot build: "
                              f"{str(error).splitlines()[0]}") from None
    if representation == "backbone":
        return backbone
    spaces = layout.get("spaces", "")
    if not spaces.isdigit() or int(spaces) < 1:
        raise CheckpointError(f"{path}: metadata 'spaces' is {spaces!r}; a LooC++ encoder needs a positive count")
    return LooCPlusPlusEncoder(backbone, int(spaces))


def _load_weights(encoder: nn.Module, state: dict[str, torch.Tensor], config: BackboneConfig, path: Path,
                  config_from: str) -> None:
    """Load `state` into `encoder`, or raise CheckpointError naming the first tensor that does not fit."""
    expected = encoder.state_dict()
    model = f"{config.name!r}" + (f" (width {config.width}, {'CIFAR' if config.cifar_stem else 'ImageNet'} stem)"
                                  if config.name in RESNET_LAYOUTS else "")
    wrong = [name for name, tensor in state.items() if name in expected and tensor.shape != expected[name].shape]
    if wrong:
        got, wanted = list(state[wrong[0]].shape), list(expected[wrong[0]].shape)
        raise CheckpointError(f"{path}: tensor {wrong[0]!r} has shape {got}, but model {model}, as {config_from} "
                              f"says, needs {wanted} ({len(wrong)} of {len(state)} tensors differ): the weights are "
                              "not of the model the file describes")
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit model {model}, as {config_from} says: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    encoder.load_state_dict(state)


def _read_safetensors(path: Path) -> tuple[BackboneConfig, dict[str, torch.Tensor], dict[str, str], dict]:
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
        state = load_file(path)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    if "model" not in metadata:
        raise CheckpointError(f"{path}: safetensors file lacks the 'model' metadata that augbench writes")
    config = _config_from_metadata(path, metadata)
    return config, state, metadata, {"weights": "final", "step": None, "epoch": None, "config_from": "its metadata"}


def _config_from_metadata(path: Path, metadata: dict[str, str]) -> BackboneConfig:
    """The BackboneConfig in the JSON of metadata 'model', or a CheckpointError naming the file and the key."""
    try:
        values = json.loads(metadata["model"])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: metadata 'model' is not valid JSON ({error.msg} at character {error.pos}); "
                              "the file is damaged or was not written by augbench") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: metadata 'model' holds a JSON {type(values).__name__}, not the object of "
                              "model settings augbench writes")
    known = {field.name for field in fields(BackboneConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        writer = f"augbench {metadata['augbench']}" if "augbench" in metadata else "another version of augbench"
        raise CheckpointError(f"{path}: metadata 'model' has the key {unknown[0]!r}, which augbench "
                              f"{augbench.__version__} does not know (the file was written by {writer}); load it "
                              "with the version that wrote it")
    try:
        return BackboneConfig(**values)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: metadata 'model': {str(error).splitlines()[0]}") from None


def _read_lightning_checkpoint(path: Path) -> tuple[BackboneConfig, dict[str, torch.Tensor], dict[str, str], dict]:

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
        # Z0 and a space per augmentation of the views (runs of earlier versions hold the same list there too).
        layout = {"representation": "looc++", "spaces": str(len(run_config["augment"]["augmentations"]) + 1)}
        prefix = LOOC_PLUS_PLUS_PREFIX
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{path}: no '{prefix}*' weights in this checkpoint")
    try:
        config = BackboneConfig(**run_config["model"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{config_file}: model: {str(error).splitlines()[0]}") from None
    # The last checkpoint of a finished run holds the weights its encoder file has; any other is from mid-training.
    final = path.name == "last.ckpt" and _run_state(path.parent.parent) == "finished"
    origin = {"weights": "final" if final else "mid-training", "step": checkpoint.get("global_step"),
              "epoch": checkpoint.get("epoch"), "config_from": f"{config_file.name}'s model section"}
    return config, state, layout, origin


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
