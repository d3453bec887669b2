"""Bad inputs made on the spot: image trees with directory links, damaged JPEGs, unfinished runs, encoder files
with wrong metadata or weights, and a pickle that would run a shell command."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skimage_data

from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.io import save_encoder

CLASSES = ("circle", "square", "triangle")


def image_tree(root: Path, per_class: int = 10, size: int = 16) -> Path:
    """root/CLASS/NN.png, every image different, so duplicates can be told apart by their pixels."""
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            value = np.full((size, size, 3), (label * 80 + index * 7) % 256, dtype=np.uint8)
            value[0, 0] = (label, index, 0)  # a fingerprint: class and index
            Image.fromarray(value).save(root / name / f"{index:02d}.png")
    return root


def looped_tree(root: Path) -> Path:
    """An image tree whose circle/ folder holds `loop -> ..`: a link back to the dataset's root."""
    image_tree(root)
    os.symlink("..", root / "circle" / "loop")
    return root


def tree_linking_into_another_class(root: Path) -> Path:
    image_tree(root)
    os.symlink("../square", root / "circle" / "more")
    return root


def tree_with_a_test_image_in_train(root: Path) -> Path:
    """root/train/CLASS/ and root/val/CLASS/, where val/circle/00.png is a link to train/circle/00.png."""
    image_tree(root / "train")
    image_tree(root / "val", per_class=3)
    (root / "val" / "circle" / "00.png").unlink()
    os.symlink("../../train/circle/00.png", root / "val" / "circle" / "00.png")
    return root


def photo_jpeg_bytes() -> bytes:
    """A 256-px photograph (scikit-image's astronaut) as a quality-90 JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()[::2, ::2]).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def zeroed_jpeg_bytes() -> bytes:
    """The photo with 200 bytes zeroed in the middle of its entropy-coded data: Pillow decodes it without an
    error, a third of its pixels off by more than 40 levels."""
    data = bytearray(photo_jpeg_bytes())
    middle = (data.find(b"\xff\xda") + len(data)) // 2
    data[middle : middle + 200] = bytes(200)
    return bytes(data)


def tree_with_a_zeroed_jpeg(root: Path) -> Path:
    image_tree(root)
    (root / "square" / "photo.jpg").write_bytes(zeroed_jpeg_bytes())
    return root


def tree_with_undecodable_class(root: Path) -> Path:
    """A two-class tree whose `b` images are all undecodable: any batch of the train split holds one."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for index in range(20):
            Image.fromarray(np.full((16, 16, 3), index * 9, dtype=np.uint8)).save(root / name / f"{index:02d}.png")
    for index in range(20):
        (root / "b" / f"{index:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    return root


TINY_MODEL = {"name": "resnet18", "cifar_stem": True, "width": 0.125}


def mini_suite(root: Path) -> Path:
    """A one-task suite (kNN on 16-px Shapes World): a second or two on a CPU."""
    dataset = {"name": "shapes_world", "image_size": 16, "train_size": 64, "val_size": 24, "test_size": 32}
    (root / "shape.yaml").write_text(yaml.safe_dump({"name": "shape", "dataset": dataset, "label": "shape",
                                                     "protocols": ["knn"]}))
    suite = root / "mini.yaml"
    suite.write_text(yaml.safe_dump({"name": "mini", "seed": 0, "tasks": ["shape.yaml"], "knn": {"k": 3}}))
    return suite


def run_directory(root: Path, state: str | None, step: int = 7, epoch: int = 1) -> Path:
    """A pretraining run's directory as augbench leaves it: config.yaml, status.json in `state` (none if None)
    and checkpoints/last.ckpt holding a tiny encoder's weights at `step`, `epoch`; no encoder file."""
    config = BackboneConfig(**TINY_MODEL)
    torch.manual_seed(0)
    backbone = build_backbone(config)
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"name": root.name, "model": TINY_MODEL,
                                                      "method": {"name": "simsiam"}}))
    if state is not None:
        (root / "status.json").write_text(json.dumps({"state": state}))
    state_dict = {f"method.backbone.{k}": v for k, v in backbone.state_dict().items()}
    torch.save({"state_dict": state_dict, "global_step": step, "epoch": epoch}, root / "checkpoints" / "last.ckpt")
    return root


def encoder_file(path: Path, fault: str) -> Path:
    """An augbench encoder file with one `fault`: none, wrong_shape, other_architecture, malformed_json,
    unknown_key, nan_weights, inf_weights, unknown_model."""
    config = BackboneConfig(**TINY_MODEL)
    torch.manual_seed(0)
    encoder = build_backbone(config)
    save_encoder(encoder, config, path)
    tensors = {k: v.detach().clone().contiguous() for k, v in encoder.state_dict().items()}
    model = dict(json.loads(json.dumps(TINY_MODEL)), zero_init_residual=False, mean=list(config.mean),
                 std=list(config.std))
    metadata = {"model": json.dumps(model), "augbench": "0.1.0"}
    if fault == "wrong_shape":
        tensors["layer1.0.conv1.weight"] = torch.zeros(8, 8, 1, 1)
    elif fault == "other_architecture":
        metadata["model"] = json.dumps({**model, "name": "resnet50"})
    elif fault == "malformed_json":
        metadata["model"] = metadata["model"][:-5]
    elif fault == "unknown_key":
        metadata["model"] = json.dumps({**model, "stem_channels": 48})
        metadata["augbench"] = "9.0.0"
    elif fault == "unknown_model":
        metadata["model"] = json.dumps({**model, "name": "resnet1B"})
    elif fault == "nan_weights":
        tensors["layer2.0.bn1.running_var"][3] = float("nan")
    elif fault == "inf_weights":
        tensors["conv1.weight"].view(-1)[0] = float("inf")
    elif fault != "none":
        raise ValueError(fault)
    save_file(tensors, path, metadata=metadata)
    return path


class RunsAShellCommand:
    """Unpickling it calls os.system (pickled as posix.system on Linux), the way a malicious checkpoint runs code."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def malicious_checkpoint(path: Path, witness: Path) -> Path:
    """A torch file that, loaded unsafely, runs `touch WITNESS`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": RunsAShellCommand(f"touch {witness}")}, path)
    return path
