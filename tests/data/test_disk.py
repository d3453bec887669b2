"""On-disk datasets, each read from a tiny copy in the dataset's native layout (tests/data/layouts.py)."""

import pickle
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from augbench.config import ConfigError, shipped_config
from augbench.data import DATASETS, load_split
from augbench.data.disk import (
    IMAGENET100_CLASSES,
    Caltech101Config,
    Cifar10Config,
    Cifar100Config,
    DtdConfig,
    EuroSatConfig,
    Flowers102Config,
    ImageFolderConfig,
    ImageNet100Config,
    LazyImageDataset,
    PetsConfig,
    Stl10Config,
    load_from_disk,
)
from augbench.data.subsets import SubsetConfig, apply_subset, subset
from augbench.errors import DataError
from augbench.train.config import load_config, read_status
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES
from tests.data.layouts import (
    PALETTE,
    cifar_images,
    solid_image,
    write_caltech,
    write_cifar10,
    write_cifar100,
    write_dtd,
    write_eurosat,
    write_flowers,
    write_imagenet,
    write_pets,
    write_stl10,
    write_tree,
)


def _class_of(images: torch.Tensor) -> np.ndarray:
    """The palette entry nearest to each image's mean colour."""
    means = images.float().mean(dim=(2, 3)).numpy()  # (N, 3)
    return np.abs(means[:, None, :] - PALETTE[None].astype(float)).sum(axis=2).argmin(axis=1)


def _load_all(config):
    return {split: load_from_disk(config, split) for split in ("train", "val", "test")}


def _check(splits, size, classes, label="class"):
    for split, dataset in splits.items():
        assert dataset.images.dtype == torch.uint8 and dataset.images.shape[1:] == (3, size, size), split
        labels = dataset.labels[label]
        assert labels.dtype == torch.int64 and len(labels) == len(dataset.images)
        assert dataset.classes[label] == classes
        if len(labels):
            assert np.array_equal(_class_of(dataset.images), labels.numpy()), split


# --- CIFAR ----------------------------------------------------------------------------------------------------


def test_cifar10_reads_pickled_batches(tmp_path):
    train_labels, test_labels, names = write_cifar10(tmp_path)
    splits = _load_all(Cifar10Config(path=str(tmp_path)))
    _check(splits, 32, names)
    assert torch.equal(splits["test"].labels["class"], torch.from_numpy(test_labels))
    train_val = torch.cat([splits["train"].labels["class"], splits["val"].labels["class"]])
    assert len(splits["val"]) == 3 and len(train_val) == 30  # val_fraction 0.1 of the 30 train images
    assert sorted(train_val.tolist()) == sorted(train_labels.tolist())


def test_cifar10_path_may_name_the_batches_folder_itself_and_resizes(tmp_path):
    write_cifar10(tmp_path)
    test = load_from_disk(Cifar10Config(path=str(tmp_path / "cifar-10-batches-py"), image_size=16), "test")
    assert test.images.shape == (8, 3, 16, 16)
    assert np.array_equal(_class_of(test.images), test.labels["class"].numpy())


def test_cifar100_has_fine_and_coarse_labels(tmp_path):
    fine_names, coarse_names = write_cifar100(tmp_path)
    splits = _load_all(Cifar100Config(path=str(tmp_path)))
    _check(splits, 32, fine_names)
    for dataset in splits.values():
        assert dataset.classes["superclass"] == coarse_names
        assert torch.equal(dataset.labels["superclass"], dataset.labels["class"] // 5)


class _WritesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar10(tmp_path)
    target = tmp_path / "written_by_pickle"
    hostile = {"labels": [0], "data": cifar_images(np.array([0])), "payload": _WritesAFile(target)}
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps(hostile, protocol=2))
    with pytest.raises(DataError, match=rf"{re.escape(str(batch))}: not a readable CIFAR batch .*refusing"):
        load_from_disk(Cifar10Config(path=str(tmp_path)), "test")
    assert not target.exists()


def test_cifar_folder_lacking_a_batch_names_it(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing .*data_batch_3 \(cifar10: expected cifar-10-batches-py/"):
        load_from_disk(Cifar10Config(path=str(tmp_path)), "train")


# --- STL-10 ---------------------------------------------------------------------------------------------------


def test_stl10_reads_binaries_and_adds_unlabelled_images(tmp_path):
    folder = tmp_path / "stl10_binary"
    test_images, test_labels, names = write_stl10(tmp_path)

    test = load_from_disk(Stl10Config(path=str(tmp_path)), "test")
    assert torch.equal(test.images, torch.from_numpy(test_images))
    assert torch.equal(test.labels["class"], torch.from_numpy(test_labels))
    assert test.classes["class"] == names
    labelled = load_from_disk(Stl10Config(path=str(tmp_path)), "train")
    assert len(labelled) == 18  # 2 of 20 held out for val
    pretraining = load_from_disk(Stl10Config(path=str(tmp_path), train_split="train+unlabeled"), "train")
    assert len(pretraining) == 22 and (pretraining.labels["class"] == -1).sum() == 4
    (folder / "unlabeled_X.bin").unlink()
    load_from_disk(Stl10Config(path=str(tmp_path)), "train")  # the labelled splits never read the unlabelled file
    with pytest.raises(DataError, match=r"missing .*unlabeled_X.bin"):
        load_from_disk(Stl10Config(path=str(tmp_path), train_split="unlabeled"), "train")


# --- ImageFolder ----------------------------------------------------------------------------------------------


def test_imagefolder_with_train_and_val_folders(tmp_path):
    write_tree(tmp_path / "train")
    write_tree(tmp_path / "val", per_class=(2, 2, 2), suffix="jpg")
    splits = _load_all(ImageFolderConfig(path=str(tmp_path), image_size=16))
    _check(splits, 16, ["class_0", "class_1", "class_2"])
    assert len(splits["test"]) == 6 and len(splits["train"]) + len(splits["val"]) == 15


def test_imagefolder_reads_only_the_chosen_class_folders(tmp_path):
    write_tree(tmp_path / "train")
    write_tree(tmp_path / "val", per_class=(2, 2, 2), suffix="jpg")
    config = ImageFolderConfig(path=str(tmp_path), image_size=8, classes=["class_2", "class_0"])
    splits = _load_all(config)
    for dataset in splits.values():
        assert dataset.classes["class"] == ["class_0", "class_2"]  # sorted, as a tree of just these folders gives
        # label 0 is class_0's colour and label 1 class_2's: class_1's images are never read
        assert np.array_equal(np.array([0, 2])[dataset.labels["class"].numpy()], _class_of(dataset.images))
    assert len(splits["test"]) == 4 and len(splits["train"]) + len(splits["val"]) == 5 + 4
    with pytest.raises(DataError, match=r"train: no folder for 1 of data.classes' 2 classes, e.g. \['class_9'\]"):
        load_from_disk(ImageFolderConfig(path=str(tmp_path), classes=["class_0", "class_9"]), "train")
    with pytest.raises(ValueError, match=r"classes: \['class_0'\] listed more than once"):
        ImageFolderConfig(path=str(tmp_path), classes=["class_0", "class_0"])


def test_imagenet100_is_cmcs_hundred_classes_read_from_a_full_tree(tmp_path):
    config, _ = load_config([shipped_config("methods/looc.yaml"), shipped_config("data/imagenet100.yaml")],
                            [f"data.path={tmp_path}", "data.image_size=8"])
    wnids = config.data.classes
    assert isinstance(config.data, ImageNet100Config) and len(set(wnids)) == 100
    assert wnids[0] == "n02869837" and wnids[-1] == "n02090622"  # CMC's imagenet100.txt, first and last line
    write_imagenet(tmp_path, wnids, per_class=(1, 1))  # with two of ImageNet's classes outside the hundred
    test = load_split(config.data, "test")
    assert test.classes["class"] == sorted(wnids)
    assert isinstance(test, LazyImageDataset) and len(test) == 100  # 17.8 GB in memory at 224 px, so lazy


def test_imagenet100_finds_the_tree_as_imagenet_under_a_data_folder_and_names_what_it_expected(tmp_path):
    write_imagenet(tmp_path / "imagenet", IMAGENET100_CLASSES)
    for path in (tmp_path, tmp_path / "imagenet"):
        test = load_from_disk(ImageNet100Config(path=str(path), image_size=8), "test")
        assert len(test) == 100 and test.classes["class"] == sorted(IMAGENET100_CLASSES)
        # label i is the i-th WNID in sorted order; write_imagenet coloured each class by its place in CMC's order
        colours = [IMAGENET100_CLASSES.index(wnid) % len(PALETTE) for wnid in sorted(IMAGENET100_CLASSES)]
        assert np.array_equal(np.array(colours)[test.labels["class"].numpy()], _class_of(test.images))
    with pytest.raises(DataError, match=r"data.path=.*absent: no such directory \(imagenet100: expected"):
        load_from_disk(ImageNet100Config(path=str(tmp_path / "absent")), "train")
    (tmp_path / "other" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has train/ but no val/"):
        load_from_disk(ImageNet100Config(path=str(tmp_path / "other")), "train")


def test_imagefolder_single_tree_is_carved_stratified_and_reproducibly(tmp_path):
    write_tree(tmp_path, per_class=(10, 10, 10))
    config = ImageFolderConfig(path=str(tmp_path), image_size=8, val_fraction=0.2, test_fraction=0.3)
    splits = _load_all(config)
    _check(splits, 8, ["class_0", "class_1", "class_2"])
    assert [len(splits[s]) for s in ("train", "val", "test")] == [14, 7, 9]  # fractions of all 30, rounded up
    assert torch.bincount(splits["test"].labels["class"]).tolist() == [3, 3, 3]
    assert torch.equal(load_from_disk(config, "val").labels["class"], splits["val"].labels["class"])


def test_resize_modes(tmp_path):
    half = np.zeros((20, 40, 3), dtype=np.uint8)
    half[:, :20] = (255, 0, 0)
    half[:, 20:] = (0, 0, 255)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(half).save(tmp_path / name / "0.png")
        Image.fromarray(half).save(tmp_path / name / "1.png")
    base = {"path": str(tmp_path), "image_size": 10, "val_fraction": 0.0, "test_fraction": 0.5}
    cropped = load_from_disk(ImageFolderConfig(**base), "train").images[0]
    stretched = load_from_disk(ImageFolderConfig(**base, resize="stretch"), "train").images[0]
    # Shorter side 20 → 10, long side 40 → 20, centre 10 columns: left half red, right half blue.
    assert cropped[:, :, :4].float().mean(dim=(1, 2)).tolist() == [255, 0, 0]
    assert cropped[:, :, 6:].float().mean(dim=(1, 2)).tolist() == [0, 0, 255]
    assert stretched[:, :, :4].float().mean(dim=(1, 2)).tolist() == [255, 0, 0]
    assert stretched[:, :, 6:].float().mean(dim=(1, 2)).tolist() == [0, 0, 255]


def test_bad_image_stops_with_its_path_or_is_skipped_and_counted(tmp_path):
    write_tree(tmp_path / "train")
    write_tree(tmp_path / "val", per_class=(2, 2, 2))
    bad = tmp_path / "val" / "class_1" / "0.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}: cannot decode image .*skip_bad_images=true"):
        load_from_disk(ImageFolderConfig(path=str(tmp_path), image_size=8), "test")
    with pytest.warns(UserWarning, match=r"skipped 1 undecodable image\(s\) of 6"):
        test = load_from_disk(ImageFolderConfig(path=str(tmp_path), image_size=8, skip_bad_images=True), "test")
    assert len(test) == 5 and test.skipped[0][0] == str(bad)
    assert test.labels["class"].tolist() == [0, 0, 1, 2, 2]
    assert np.array_equal(_class_of(test.images), test.labels["class"].numpy())


def test_missing_empty_and_incomplete_folders_are_named(tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(DataError, match=rf"data.path={re.escape(str(absent))}: no such directory"):
        load_from_disk(ImageFolderConfig(path=str(absent)), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*class folder"):
        load_from_disk(ImageFolderConfig(path=str(tmp_path / "empty")), "train")
    (tmp_path / "tree" / "cat").mkdir(parents=True)
    (tmp_path / "tree" / "dog").mkdir()
    solid_image(tmp_path / "tree" / "cat" / "0.png", PALETTE[0])
    with pytest.raises(DataError, match=r"no valid file for the classes.*dog"):
        load_from_disk(ImageFolderConfig(path=str(tmp_path / "tree")), "train")
    write_tree(tmp_path / "only_train" / "train")
    with pytest.raises(DataError, match=r"has train/ but no val/"):
        load_from_disk(ImageFolderConfig(path=str(tmp_path / "only_train")), "train")
    with pytest.raises(DataError, match=r"data.path=.*no cifar-10-batches-py/ folder here"):
        load_from_disk(Cifar10Config(path=str(tmp_path)), "train")


def test_memory_estimate_refuses_a_split_too_large(tmp_path):
    write_tree(tmp_path, per_class=(10, 10, 10))
    config = ImageFolderConfig(path=str(tmp_path), image_size=512, max_memory_gb=0.005, test_fraction=0.5)
    with pytest.raises(DataError, match=r"the train split's 12 images take 0.00879 GB .* image_size=512, more than "
                                        r"max_memory_gb=0.005; set data.image_size=386 or less"):
        load_from_disk(config, "train")


# --- Flowers-102, DTD, Pets, Caltech-101, EuroSAT ------------------------------------------------------------


FILE_DATASETS = [
    (Flowers102Config, write_flowers, ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea"]),
    (DtdConfig, write_dtd, ["banded", "cracked", "dotted"]),
    (PetsConfig, write_pets, ["Abyssinian", "American Bulldog", "Bengal"]),
    (Caltech101Config, write_caltech, ["accordion", "airplanes", "anchor"]),
    (EuroSatConfig, write_eurosat, ["AnnualCrop", "Forest", "River"]),
]


@pytest.mark.parametrize(("config_type", "write", "classes"), FILE_DATASETS, ids=lambda v: getattr(v, "__name__", ""))
def test_file_datasets_in_their_native_layout(tmp_path, config_type, write, classes):
    counts = write(tmp_path)
    splits = _load_all(config_type(path=str(tmp_path), image_size=12))
    for split, dataset in splits.items():
        assert dataset.images.shape[1:] == (3, 12, 12), split
        assert np.array_equal(_class_of(dataset.images), dataset.labels["class"].numpy()), split
        assert dataset.classes["class"][: len(classes)] == classes  # Flowers names all 102 classes
    sizes = {split: len(dataset) for split, dataset in splits.items()}
    if "all" in counts:
        assert sum(sizes.values()) == counts["all"] and min(sizes.values()) > 0
    elif "train+val" in counts:
        assert sizes["train"] + sizes["val"] == counts["train+val"] and sizes["test"] == counts["test"]
    else:
        assert sizes == counts


def test_caltech101_takes_a_fixed_number_of_images_per_class_and_can_keep_the_background(tmp_path):
    write_caltech(tmp_path, images=12)

    def split(seed=0):
        config = Caltech101Config(path=str(tmp_path), image_size=8, train_per_class=5, background=True,
                                  val_fraction=0.2, seed=seed, lazy=True)
        return _load_all(config)

    splits = split()
    assert splits["train"].classes["class"] == ["accordion", "airplanes", "anchor", "BACKGROUND_Google"]
    train_and_val = torch.cat([splits["train"].labels["class"], splits["val"].labels["class"]])
    assert torch.bincount(train_and_val).tolist() == [5, 5, 5, 5]
    assert torch.bincount(splits["test"].labels["class"]).tolist() == [7, 7, 7, 7]
    files = [set(dataset.files) for dataset in splits.values()]
    assert len(set.union(*files)) == sum(map(len, files)) == 48
    for dataset in splits.values():
        assert np.array_equal(_class_of(dataset.images), dataset.labels["class"].numpy())
    assert split()["test"].files == splits["test"].files and split(seed=1)["test"].files != splits["test"].files


def test_caltech101_with_too_few_images_for_train_per_class_names_the_class(tmp_path):
    write_caltech(tmp_path, images=5)
    with pytest.raises(DataError, match=r"class 'accordion' has 5 images, too few for data.train_per_class=5"):
        load_from_disk(Caltech101Config(path=str(tmp_path), train_per_class=5), "train")


def test_pets_species_label(tmp_path):
    write_pets(tmp_path)
    test = load_from_disk(PetsConfig(path=str(tmp_path), image_size=8), "test")
    assert test.classes["species"] == ["Cat", "Dog"]
    assert torch.equal(test.labels["species"], (test.labels["class"] == 1).long())


def test_flowers_lacking_its_label_file_names_it(tmp_path):
    write_flowers(tmp_path)
    (tmp_path / "flowers-102" / "setid.mat").unlink()
    with pytest.raises(DataError, match=r"missing .*flowers-102/setid.mat \(flowers102: expected"):
        load_from_disk(Flowers102Config(path=str(tmp_path)), "train")


# --- lazy decoding --------------------------------------------------------------------------------------------


def test_lazy_split_decodes_on_read_and_equals_the_eager_one(tmp_path):
    write_tree(tmp_path / "train")
    write_tree(tmp_path / "val", per_class=(2, 2, 2))
    eager = load_from_disk(ImageFolderConfig(path=str(tmp_path), image_size=8), "train")
    lazy = load_from_disk(ImageFolderConfig(path=str(tmp_path), image_size=8, lazy=True), "train")
    assert isinstance(lazy, LazyImageDataset) and "images" not in vars(lazy)  # nothing decoded yet
    assert len(lazy) == len(eager) and lazy.image_size == 8 and lazy.classes == eager.classes
    batch = next(iter(DataLoader(lazy, batch_size=len(lazy))))  # decoded by threads in this process
    assert torch.equal(batch["image"], eager.images)
    assert torch.equal(batch["labels"]["class"], eager.labels["class"])
    in_a_worker = torch.cat([b["image"] for b in DataLoader(lazy, batch_size=5, num_workers=1)])  # one by one
    assert torch.equal(in_a_worker, eager.images)
    assert torch.equal(lazy.images, eager.images)  # what frozen-feature evaluation reads
    bad = lazy.files[3]
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}: cannot decode image"):
        lazy[3]
    with pytest.raises(ValueError, match=r"lazy=true with skip_bad_images=true"):
        ImageFolderConfig(path=str(tmp_path), lazy=True, skip_bad_images=True)


def test_lazy_split_streams_in_batches_and_its_subsets_stay_undecoded(tmp_path):
    write_tree(tmp_path, per_class=(5, 6, 4))
    config = ImageFolderConfig(path=str(tmp_path), image_size=8, val_fraction=0, test_fraction=0, num_workers=3)
    eager = load_from_disk(config, "train")
    lazy = load_from_disk(replace(config, lazy=True), "train")
    batches = list(lazy.batches(4))
    assert [len(batch) for batch in batches] == [4, 4, 4, 3]
    assert torch.equal(torch.cat(batches), eager.images) and "images" not in vars(lazy)
    picked = subset(lazy, np.array([7, 0, 14, 3]))
    assert isinstance(picked, LazyImageDataset) and "images" not in vars(picked)
    assert torch.equal(picked.images, eager.images[[7, 0, 14, 3]])
    assert torch.equal(picked.labels["class"], eager.labels["class"][[7, 0, 14, 3]])
    assert torch.equal(picked.images, subset(eager, np.array([7, 0, 14, 3])).images)
    skewed = apply_subset(lazy, SubsetConfig(kind="balanced", per_class=2))
    assert isinstance(skewed, LazyImageDataset) and skewed.labels["class"].bincount().tolist() == [2, 2, 2]
    bad = lazy.files[9]
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}: cannot decode image.*lazy=false and skip_bad_imag"):
        list(lazy.batches(4))


def test_lazy_cifar_keeps_its_native_images_and_brings_them_to_size_as_they_are_read(tmp_path):
    write_cifar10(tmp_path)
    config = Cifar10Config(path=str(tmp_path), image_size=48)
    eager = load_from_disk(config, "train")
    lazy = load_from_disk(replace(config, lazy=True), "train")
    assert isinstance(lazy, LazyImageDataset) and lazy.arrays.shape[1:] == (3, 32, 32) and lazy.files is None
    assert torch.equal(torch.cat(list(lazy.batches(7))), eager.images) and "images" not in vars(lazy)
    assert torch.equal(next(iter(DataLoader(lazy, batch_size=len(lazy))))["image"], eager.images)
    picked = subset(lazy, np.array([5, 1, 20]))
    assert isinstance(picked, LazyImageDataset) and torch.equal(picked.images, eager.images[[5, 1, 20]])
    assert torch.equal(lazy.images, eager.images)


def test_pretraining_reads_a_lazy_image_folder(tmp_path):
    write_tree(tmp_path / "data", per_class=(12, 12, 12))
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.")]
    overrides = [*tiny, f"output_dir={tmp_path / 'runs'}", "data.name=imagefolder", f"data.path={tmp_path / 'data'}",
                 "data.image_size=32", "data.lazy=true"]
    config, _ = load_config(shipped_config("methods/simclr.yaml"), overrides)
    run = pretrain(config)
    assert read_status(run.directory)["state"] == "finished" and read_status(run.directory)["steps"] == 1


# --- registry and configs -------------------------------------------------------------------------------------


def test_pretraining_config_names_an_on_disk_dataset(tmp_path):
    write_cifar10(tmp_path)
    config, _ = load_config(overrides=["data.name=cifar10", f"data.path={tmp_path}", "data.val_fraction=0.2"])
    assert isinstance(config.data, Cifar10Config) and config.data.val_fraction == 0.2
    assert len(load_split(config.data, "train")) == 24
    assert set(DATASETS) >= {"cifar10", "cifar100", "stl10", "imagefolder", "imagenet100", "flowers102", "dtd",
                             "pets", "caltech101", "eurosat"}
    with pytest.raises(ConfigError, match=r"path"):
        load_config(overrides=["data.name=cifar10"])
    with pytest.raises(ConfigError, match=r"resize='squash': expected one of"):
        load_config(overrides=["data.name=cifar10", f"data.path={tmp_path}", "data.resize=squash"])
