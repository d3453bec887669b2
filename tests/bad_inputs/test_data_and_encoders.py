"""Bad data, encoder files and evaluations through the real command line: each row is an input and what
`augbench` must answer, its exit code and the fragments its one message line holds (docs/failures.md,
"Data, encoders and evaluation", lists the same cases)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from augbench.cli import main
from tests.bad_inputs import inputs


@dataclass
class Case:
    build: Callable[[Path], list[str]]  # makes the bad input under tmp_path, returns the command's arguments
    exit: int
    fragments: tuple[str, ...]  # each on the message line
    line: str = "error:"  # the line that must hold them starts with this
    absent: tuple[str, ...] = ("Traceback", "Original Traceback")


def _data(tree: Callable[[Path], Path], *overrides: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        root = tree(tmp / "images")
        return ["data", "imagefolder", "--output", str(tmp / "grid.png"), f"path={root}", "image_size=16",
                "num_workers=1", *overrides]
    return build


def _evaluate(make: Callable[[Path], Path], *options: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        return ["evaluate", str(make(tmp)), "--suite", str(inputs.mini_suite(tmp)), "--device", "cpu", *options]
    return build


def _encoder(fault: str) -> Callable[[Path], list[str]]:
    return _evaluate(lambda tmp: inputs.encoder_file(tmp / "encoder.safetensors", fault))


def _pretrain(*overrides: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        return ["pretrain", "configs/methods/simsiam.yaml", f"output_dir={tmp}", "trainer.progress_bar=false",
                *overrides]
    return build


def _worker_error(tmp: Path) -> list[str]:
    root = inputs.tree_with_undecodable_class(tmp / "images")
    return _pretrain("data.name=imagefolder", f"data.path={root}", "data.lazy=true", "data.image_size=16",
                     "model.width=0.125", "trainer.batch_size=16", "trainer.max_steps=1", "trainer.max_epochs=1",
                     "trainer.num_workers=1")(tmp)


def _malicious_run(tmp: Path) -> Path:
    run = inputs.run_directory(tmp / "run", "finished")
    inputs.malicious_checkpoint(run / "checkpoints" / "last.ckpt", tmp / "witness")
    return run / "checkpoints" / "last.ckpt"


CASES = {
    # 1. directory links in an image folder
    "symlink loop (circle/loop -> ..) is not followed": Case(
        _data(inputs.looped_tree), 0, ("not following the directory link", "circle/loop -> ..", "a loop back to"),
        line="warning:"),
    "link into another class folder would relabel its images": Case(
        _data(inputs.tree_linking_into_another_class), 2,
        ("circle/more -> ../square", "leads into class folder 'square'", "labelled 'circle' as well as 'square'")),
    "one file in both train/ and val/": Case(
        _data(inputs.tree_with_a_test_image_in_train), 2, ("are one file", "in both train/ and val/")),
    # 2. evaluating a run that did not finish
    "evaluate a failed run": Case(
        _evaluate(lambda tmp: inputs.run_directory(tmp / "run", "failed")), 2,
        ("run: this run did not finish (state 'failed')", "checkpoints/last.ckpt", "--allow-unfinished")),
    "evaluate a running run": Case(
        _evaluate(lambda tmp: inputs.run_directory(tmp / "run", "running")), 2,
        ("did not finish (state 'running')", "--allow-unfinished")),
    "evaluate a run without status.json": Case(
        _evaluate(lambda tmp: inputs.run_directory(tmp / "run", None)), 2,
        ("did not finish (no status.json)",)),
    "evaluate a failed run with --allow-unfinished": Case(
        _evaluate(lambda tmp: inputs.run_directory(tmp / "run", "failed", step=7, epoch=1), "--allow-unfinished"),
        0, ("weights of step 7 (epoch 1), from mid-training",), line="these are"),
    # 3. a JPEG with 200 zeroed bytes mid-stream
    "zeroed bytes in a JPEG stop loading": Case(
        _data(inputs.tree_with_a_zeroed_jpeg), 2,
        ("square/photo.jpg: corrupt JPEG (Corrupt JPEG data", "skip_bad_images=true")),
    "zeroed bytes in a JPEG, skip_bad_images=true": Case(
        _data(inputs.tree_with_a_zeroed_jpeg, "skip_bad_images=true"), 0,
        ("skipped 1 undecodable image(s)", "photo.jpg: corrupt JPEG"), line="warning:"),
    # 4. degenerate model settings
    "model.width=0": Case(_pretrain("model.width=0", "--print-config"), 2,
                          ("model: width=0.0: must be at least 0.125",)),
    "model.width=-1": Case(_pretrain("model.width=-1", "--print-config"), 2, ("width=-1.0: must be at least",)),
    "model.width=nan": Case(_pretrain("model.width=nan", "--print-config"), 2, ("width=nan: must be at least",)),
    "model.std with a zero": Case(_pretrain("model.std=[0.2,0,0.2]", "--print-config"), 2,
                                  ("model: std=[0.2, 0.0, 0.2]: every value must be positive",)),
    # 8. encoder files
    "encoder: a tensor of the wrong shape": Case(
        _encoder("wrong_shape"), 2, ("encoder.safetensors: tensor 'layer1.0.conv1.weight' has shape [8, 8, 1, 1]",
                                     "needs [8, 8, 3, 3]")),
    "encoder: metadata names another architecture": Case(
        _encoder("other_architecture"), 2, ("encoder.safetensors: tensor", "model 'resnet50' (width 0.125",
                                            "not of the model the file describes")),
    "encoder: malformed metadata JSON": Case(
        _encoder("malformed_json"), 2, ("encoder.safetensors: metadata 'model' is not valid JSON",)),
    "encoder: metadata key from a newer version": Case(
        _encoder("unknown_key"), 2, ("encoder.safetensors: metadata 'model' has the key 'stem_channels'",
                                     "written by augbench 9.0.0")),
    "encoder: metadata names a model that does not exist": Case(
        _encoder("unknown_model"), 2, ("encoder.safetensors: metadata 'model': name='resnet1B' is unknown",)),
    "encoder: NaN weights": Case(
        _encoder("nan_weights"), 2, ("encoder.safetensors: tensor 'layer2.0.bn1.running_var' has 1 NaN or infinite",)),
    "encoder: infinite weights": Case(
        _encoder("inf_weights"), 2, ("encoder.safetensors: tensor 'conv1.weight' has 1 NaN or infinite",)),
    # 12. a DataError in a DataLoader worker
    "undecodable image read in a DataLoader worker": Case(
        _worker_error, 2, ("cannot decode image", "(a lazily read split cannot leave it out")),
    # 16. a pickle that would run a shell command
    "malicious run checkpoint": Case(
        _evaluate(_malicious_run), 2, ("last.ckpt: refused to load as a weights-only checkpoint",
                                       "GLOBAL posix.system"),
        absent=("Traceback", "Re-running", "will likely succeed", "weights_only` set to `False")),
    "malicious checkpoint of another codebase": Case(
        _evaluate(lambda tmp: inputs.malicious_checkpoint(tmp / "moco.pth", tmp / "witness")), 2,
        ("moco.pth: refused or unreadable as a weights-only checkpoint", "GLOBAL posix.system"),
        absent=("Traceback", "Re-running", "will likely succeed", "weights_only` set to `False")),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_bad_input_gets_its_exit_code_and_one_line_message(case: Case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the repository, for configs/ paths
    argv = case.build(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    captured = capsys.readouterr()
    # The command line shows augbench's warnings through warnings.formatwarning, which main() sets.
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    output = captured.out + captured.err + shown
    assert code == case.exit, output
    lines = [line for line in output.splitlines() if line.startswith(case.line)]
    assert any(all(fragment in line for fragment in case.fragments) for line in lines), output
    for text in case.absent:
        assert text not in output
    assert not (tmp_path / "witness").exists()  # no pickle ran its command


def test_mid_training_weights_are_recorded_in_every_record(tmp_path, capsys):
    run = inputs.run_directory(tmp_path / "run", "failed", step=7, epoch=1)
    assert main(["evaluate", str(run), "--suite", str(inputs.mini_suite(tmp_path)), "--device", "cpu",
                 "--allow-unfinished"]) == 0
    records = pd.read_csv(run / "evaluation_mini.csv")
    assert set(records.weights) == {"mid-training"}
    assert set(records.weights_step) == {7} and set(records.weights_epoch) == {1}


def test_a_symlink_loop_lists_each_image_once_and_none_in_two_splits(tmp_path):
    from augbench.data.disk import ImageFolderConfig, load_from_disk

    config = ImageFolderConfig(path=str(inputs.looped_tree(tmp_path / "images")), image_size=16, num_workers=1)
    with pytest.warns(UserWarning, match=r"not following the directory link .*circle/loop -> \.\."):
        splits = {split: load_from_disk(config, split) for split in ("train", "val", "test")}
    assert sum(len(split) for split in splits.values()) == 3 * 10
    fingerprints = {name: {tuple(image[:, 0, 0].tolist()) for image in split.images} for name, split in splits.items()}
    assert sum(len(found) for found in fingerprints.values()) == 30  # 30 different images, none in two splits
    for split in splits.values():  # every image keeps the label of its own folder
        assert all(int(label) == image[0, 0, 0] for image, label in zip(split.images, split.labels["class"]))


def test_one_file_reached_twice_in_one_class_is_listed_once(tmp_path):
    import os

    from augbench.data.disk import ImageFolderConfig, load_from_disk

    root = inputs.image_tree(tmp_path / "images")
    os.symlink("00.png", root / "circle" / "copy.png")
    os.symlink(".", root / "square" / "again")  # a loop onto itself
    config = ImageFolderConfig(path=str(root), image_size=16, num_workers=1, val_fraction=0.0, test_fraction=0.0)
    with pytest.warns(UserWarning) as caught:
        train = load_from_disk(config, "train")
    assert len(train) == 30
    messages = [str(w.message) for w in caught]
    assert any("1 image file(s) are reached through two paths" in m and "copy.png" in m for m in messages)
    assert any("square/again -> ." in m for m in messages)


def test_a_data_error_in_a_dataloader_worker_keeps_its_one_line_message(tmp_path):
    from torch.utils.data import DataLoader

    from augbench.data.disk import ImageFolderConfig, load_from_disk
    from augbench.errors import DataError

    root = inputs.tree_with_undecodable_class(tmp_path / "images")
    split = load_from_disk(ImageFolderConfig(path=str(root), image_size=16, lazy=True), "train")
    with pytest.raises(DataError) as raised:
        for _ in DataLoader(split, batch_size=8, num_workers=1):
            pass
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{root}/b/") and "cannot decode image" in message
    assert "Caught DataError in DataLoader worker process 0" in raised.value.worker_traceback


def test_a_worker_error_text_of_another_type_or_shape_is_left_as_it_is():
    from augbench.errors import CheckpointError, DataError

    text = ("Caught DataError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\n    raise DataError(m)\naugbench.errors.DataError: a.png: bad\n'
            "second line of the message\n")
    assert str(DataError(text)) == "a.png: bad\nsecond line of the message"
    assert str(CheckpointError(text)) == text  # the worker raised a DataError, not this
    assert str(DataError("a plain message")) == "a plain message"


def test_an_encoder_module_with_nan_weights_is_refused_before_any_task(tmp_path):
    import torch

    from augbench.errors import CheckpointError
    from augbench.evaluate.evaluate import evaluate
    from augbench.models.backbones import BackboneConfig, build_backbone

    encoder = build_backbone(BackboneConfig(**inputs.TINY_MODEL))
    with torch.no_grad():
        encoder.layer4[1].bn2.weight[0] = float("nan")
    with pytest.raises(CheckpointError, match=r"module:ResNetBackbone: tensor 'layer4.1.bn2.weight' has 1 NaN"):
        evaluate(encoder, inputs.mini_suite(tmp_path), device="cpu", progress=False)


def test_a_checkpoint_of_a_finished_run_is_final_and_any_other_mid_training(tmp_path):
    from augbench.models.io import read_encoder

    finished = inputs.run_directory(tmp_path / "finished", "finished", step=40, epoch=4)
    assert read_encoder(finished, allow_unfinished=False)[2] == {"weights": "final", "step": 40, "epoch": 4}
    failed = inputs.run_directory(tmp_path / "failed", "failed", step=12, epoch=1)
    assert read_encoder(failed / "checkpoints" / "last.ckpt")[2]["weights"] == "mid-training"
    (finished / "checkpoints" / "epoch=2.ckpt").write_bytes((finished / "checkpoints" / "last.ckpt").read_bytes())
    assert read_encoder(finished / "checkpoints" / "epoch=2.ckpt")[2]["weights"] == "mid-training"


def test_an_exported_state_dict_evaluates_as_another_codebase_s_checkpoint(tmp_path):
    from augbench.models.backbones import BackboneConfig, build_backbone
    from augbench.models.io import export_backbone, read_encoder, save_encoder

    config = BackboneConfig(name="resnet18", cifar_stem=False)
    source = save_encoder(build_backbone(config), config, tmp_path / "encoder.safetensors")
    exported, _ = export_backbone(source, "timm", tmp_path / "resnet18.safetensors")
    _, loaded, origin = read_encoder(exported)
    assert loaded.name == "resnet18" and origin["weights"] == "external"
