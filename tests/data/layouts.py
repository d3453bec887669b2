"""Tiny copies of the on-disk datasets in their native layouts (torchvision's `root` folders), written by tests.

Every image is a solid colour chosen by its class (`PALETTE[class]`), so a
loaded image's mean colour tells which class file it came from,
independently of the loader's labels.
"""

import pickle

import numpy as np
import scipy.io
from PIL import Image

PALETTE = np.array([[(37 * c) % 256, (91 * c + 60) % 256, (151 * c + 120) % 256] for c in range(10)], dtype=np.uint8)


def solid_image(path, colour, size=(24, 36)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.broadcast_to(colour, (*size, 3)).copy()).save(path, quality=98)


def cifar_images(labels):
    images = PALETTE[labels][:, :, None, None].repeat(32, 2).repeat(32, 3)  # (N, 3, 32, 32)
    return images.reshape(len(labels), -1)  # CIFAR rows: 3072 bytes, channel-major


def write_cifar10(root, per_batch=6, test=8):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_labels = []
    for index in range(1, 6):
        labels = rng.integers(0, 10, per_batch)
        all_labels.append(labels)
        batch = {"batch_label": f"training batch {index} of 5", "labels": labels.tolist(),
                 "data": cifar_images(labels), "filenames": [f"{i}.png" for i in range(per_batch)]}
        (folder / f"data_batch_{index}").write_bytes(pickle.dumps(batch, protocol=2))
    test_labels = np.arange(test) % 10
    (folder / "test_batch").write_bytes(pickle.dumps({"labels": test_labels.tolist(),
                                                      "data": cifar_images(test_labels)}, protocol=2))
    names = [f"class{c}" for c in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_vis": 3072}, protocol=2))
    return np.concatenate(all_labels), test_labels, names


def write_cifar100(root):
    """12 train and 12 test images of fine classes 0-9 (superclass = fine // 5); returns fine and coarse names."""
    folder = root / "cifar-100-python"
    folder.mkdir()
    fine = np.arange(12) % 10  # the palette has 10 colours; the other 90 classes stay unused
    for split in ("train", "test"):
        data = {"fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(), "data": cifar_images(fine)}
        (folder / split).write_bytes(pickle.dumps(data, protocol=2))
    fine_names, coarse_names = [f"fine{i}" for i in range(100)], [f"coarse{i}" for i in range(20)]
    meta = {"fine_label_names": fine_names, "coarse_label_names": coarse_names}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return fine_names, coarse_names


def _write_stl_images(path, labels):
    images = PALETTE[labels][:, :, None, None].repeat(96, 2).repeat(96, 3)
    images[:, :, :48, :] //= 2  # top half darker: tells rows from columns, which STL stores transposed
    images.transpose(0, 1, 3, 2).tofile(path)
    return images


def write_stl10(root):
    """20 labelled train, 10 test and 4 unlabelled images; returns the test images and labels and the class names."""
    folder = root / "stl10_binary"
    folder.mkdir()
    train_labels, test_labels = np.arange(20) % 10, np.arange(10)
    _write_stl_images(folder / "train_X.bin", train_labels)
    (train_labels + 1).astype(np.uint8).tofile(folder / "train_y.bin")
    test_images = _write_stl_images(folder / "test_X.bin", test_labels)
    (test_labels + 1).astype(np.uint8).tofile(folder / "test_y.bin")
    _write_stl_images(folder / "unlabeled_X.bin", np.arange(4))
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return test_images, test_labels, names


def write_tree(root, per_class=(5, 6, 4), suffix="png"):
    for label, count in enumerate(per_class):
        for index in range(count):
            size = (20 + 4 * index, 30 + 2 * label)  # varied sizes and aspect ratios
            solid_image(root / f"class_{label}" / f"{index}.{suffix}", PALETTE[label], size)


def write_imagenet(root, classes, per_class=(2, 1)):
    """ImageNet's `train/WNID/` and `val/WNID/` for `classes` plus two WNIDs outside CMC's hundred; `per_class`
    images of each in train and in val, each class in its palette colour (cycling past ten classes)."""
    for split, count in zip(("train", "val"), per_class):
        for label, wnid in enumerate([*classes, "n01440764", "n15075141"]):
            for index in range(count):
                solid_image(root / split / wnid / f"{index}.png", PALETTE[label % len(PALETTE)], (12, 14))


def write_flowers(root, images=12):
    """`images` (a multiple of 8) of 4 classes in turn: the first half train, then a quarter val, a quarter test."""
    folder = root / "flowers-102"
    labels = np.arange(images) % 4  # image_id i (1-based) has label labels[i - 1]
    for image_id, label in enumerate(labels, start=1):
        solid_image(folder / "jpg" / f"image_{image_id:05d}.jpg", PALETTE[label])
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": (labels + 1)[None]})
    ids = np.arange(1, images + 1)
    train, val, test = np.split(ids, [images // 2, images * 3 // 4])
    scipy.io.savemat(folder / "setid.mat", {"trnid": train[None], "valid": val[None], "tstid": test[None]})
    return {"train": len(train), "val": len(val), "test": len(test)}


def write_dtd(root):
    folder = root / "dtd" / "dtd"
    classes = ["banded", "cracked", "dotted"]
    lines = {"train": [], "val": [], "test": []}
    for label, name in enumerate(classes):
        for index, split in enumerate(["train", "train", "val", "test", "test"]):
            solid_image(folder / "images" / name / f"{name}_{index:04d}.jpg", PALETTE[label])
            lines[split].append(f"{name}/{name}_{index:04d}.jpg")
    lines["val"] = lines["val"][1:]  # the val file lacks class 0: class numbers must still agree across splits
    for split, entries in lines.items():
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        (folder / "labels" / f"{split}1.txt").write_text("\n".join(entries) + "\n")
    return {"train": 6, "val": 2, "test": 6}


def write_pets(root):
    folder = root / "oxford-iiit-pet"
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]  # (breed, species: 1 cat, 2 dog)
    lines = {"trainval": [], "test": []}
    for label, (breed, species) in enumerate(breeds):
        for index in range(1, 6):
            solid_image(folder / "images" / f"{breed}_{index}.jpg", PALETTE[label])
            split = "test" if index > 3 else "trainval"
            lines[split].append(f"{breed}_{index} {label + 1} {species} {index}")
    (folder / "annotations").mkdir(parents=True)
    for split, entries in lines.items():
        (folder / "annotations" / f"{split}.txt").write_text("\n".join(entries) + "\n")
    return {"train+val": 9, "test": 6}


def write_caltech(root, images=10):
    """Three classes and the background folder (the palette's fourth colour), `images` of each."""
    folder = root / "caltech101" / "101_ObjectCategories"
    for label, name in enumerate(["accordion", "airplanes", "anchor", "BACKGROUND_Google"]):
        for index in range(1, images + 1):
            solid_image(folder / name / f"image_{index:04d}.jpg", PALETTE[label])
    return {"all": 3 * images}


def write_eurosat(root):
    for label, name in enumerate(["AnnualCrop", "Forest", "River"]):
        for index in range(1, 11):
            solid_image(root / "eurosat" / "2750" / name / f"{name}_{index}.jpg", PALETTE[label], (64, 64))
    return {"all": 30}


def write_transfer_root(root):
    """One folder holding every dataset of the transfer suite, as torchvision's loaders would have left it;
    Flowers-102 with 10 train images per class, for its 5- and 10-shot tasks."""
    write_cifar10(root)
    write_cifar100(root)
    write_stl10(root)
    write_flowers(root, images=80)
    write_caltech(root, images=33)  # Kornblith's 30 train images per class, and 3 to test
    for write in (write_dtd, write_pets, write_eurosat):
        write(root)
