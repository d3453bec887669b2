"""Datasets a user has on disk: CIFAR-10/100, STL-10, ImageFolder trees, Flowers-102, DTD, Pets, Caltech-101, EuroSAT.

Nothing is ever downloaded: `data.path` names a folder the user already
has, laid out as torchvision's loaders expect (the folder that holds, say,
`cifar-10-batches-py/`, or that folder itself). torchvision's dataset
classes list the files and labels; every image is then decoded by
`augbench.data.decode.decode_image` and resized on load to
`image_size`×`image_size` (shorter side to `image_size`, then a centre crop;
or `resize: stretch`), so a split becomes one in-memory `ImageDataset`; or,
with `lazy: true`, as it is read (`LazyImageDataset`). Before decoding, the
split's size in memory is estimated and refused above `max_memory_gb`
(default: half the machine's RAM) with the figure and a smaller
`image_size` that would fit.

Splits: a dataset's own train/val/test splits are used where it has them;
a missing validation split is carved from train (`val_fraction`, stratified
by class, seeded) and a missing test split likewise (`test_fraction`).
Every dataset has the label `class`; CIFAR-100 adds `superclass`, Pets
`species`.

An undecodable image stops loading with its path, or with
`skip_bad_images: true` is skipped, counted in the dataset's `skipped` list
and reported in a warning.
"""

from __future__ import annotations

import codecs
import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torchvision.datasets as tvd
import torchvision.transforms.v2.functional as TF
from omegaconf import MISSING
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from augbench.data.dataset import SPLITS, ImageDataset
from augbench.data.decode import decode_image
from augbench.errors import DataError, DataWarning

RESIZE_MODES = ("center_crop", "stretch")


@dataclass
class DiskConfig:
    """Settings shared by every on-disk dataset.

    `path`: the folder holding the dataset (required). `image_size`: side of
    the square images kept in memory. `resize`: `center_crop` (shorter side
    to `image_size`, then the central square) or `stretch` (both sides to
    `image_size`, aspect ratio lost). `val_fraction` / `test_fraction`: the
    share of the dataset's images held out when it has no such split of its
    own (both are fractions of the whole, as in the `digits` dataset).
    `num_workers`: decoding threads. `max_memory_gb`: refuse a split whose
    images would take more (null: half the machine's RAM). `lazy`: decode
    and resize each image when it is read (see `LazyImageDataset`) instead
    of on load. `strict_decoding`: a JPEG that libjpeg decodes only with a
    corrupt-data warning counts as undecodable (see `augbench.data.decode`);
    false accepts it with whatever pixels libjpeg fills in.
    """

    name: str = MISSING
    path: str = MISSING
    image_size: int = 96
    resize: str = "center_crop"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    skip_bad_images: bool = False
    num_workers: int = 8
    max_memory_gb: float | None = None
    lazy: bool = False
    strict_decoding: bool = True

    def __post_init__(self):
        if self.lazy and self.skip_bad_images:
            raise ValueError("lazy=true with skip_bad_images=true: a lazily read split cannot drop an image once its "
                             "length is fixed; load it eagerly (lazy=false) to skip bad images")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize={self.resize!r}: expected one of {RESIZE_MODES}")
        if self.image_size < 1:
            raise ValueError(f"image_size={self.image_size}: must be positive")
        for key in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)}: must lie in [0, 1)")


@dataclass
class Cifar10Config(DiskConfig):
    name: str = "cifar10"
    image_size: int = 32


@dataclass
class Cifar100Config(DiskConfig):
    name: str = "cifar100"
    image_size: int = 32


@dataclass
class Stl10Config(DiskConfig):
    """`train_split`: what the train split holds: the 5,000 labelled images (`train`), those plus the
    100,000 unlabelled ones (`train+unlabeled`, label -1, for pretraining) or only the unlabelled ones."""

    name: str = "stl10"
    train_split: str = "train"

    def __post_init__(self):
        super().__post_init__()
        if self.train_split not in ("train", "train+unlabeled", "unlabeled"):
            raise ValueError(f"train_split={self.train_split!r}: expected train, train+unlabeled or unlabeled")


@dataclass
class ImageFolderConfig(DiskConfig):
    """A tree `path/CLASS/IMAGE` (e.g. ImageNet). If `path/train_dir` and `path/test_dir` exist
    (ImageNet's `train/` and `val/`), they are the train and test splits; otherwise `path` itself is
    the tree and both held-out splits are carved from it. `classes`: the class folders to read (labels
    in their sorted order, as a tree of only those folders gives), e.g. `imagenet100`'s 100 from a full
    ImageNet tree, without a copy; empty, every folder."""

    name: str = "imagefolder"
    train_dir: str = "train"
    test_dir: str = "val"
    classes: list[str] = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        repeated = sorted({name for name in self.classes if self.classes.count(name) > 1})
        if repeated:
            raise ValueError(f"classes: {repeated} listed more than once")


# CMC's ImageNet-100 (Tian, Krishnan & Isola, 2020; github.com/HobbitLong/CMC, imagenet100.txt, in that file's
# order): the subset LooC and many other self-supervised studies pretrain and evaluate on.
IMAGENET100_CLASSES = (
    "n02869837", "n01749939", "n02488291", "n02107142", "n13037406", "n02091831", "n04517823", "n04589890",
    "n03062245", "n01773797", "n01735189", "n07831146", "n07753275", "n03085013", "n04485082", "n02105505",
    "n01983481", "n02788148", "n03530642", "n04435653", "n02086910", "n02859443", "n13040303", "n03594734",
    "n02085620", "n02099849", "n01558993", "n04493381", "n02109047", "n04111531", "n02877765", "n04429376",
    "n02009229", "n01978455", "n02106550", "n01820546", "n01692333", "n07714571", "n02974003", "n02114855",
    "n03785016", "n03764736", "n03775546", "n02087046", "n07836838", "n04099969", "n04592741", "n03891251",
    "n02701002", "n03379051", "n02259212", "n07715103", "n03947888", "n04026417", "n02326432", "n03637318",
    "n01980166", "n02113799", "n02086240", "n03903868", "n02483362", "n04127249", "n02089973", "n03017168",
    "n02093428", "n02804414", "n02396427", "n04418357", "n02172182", "n01729322", "n02113978", "n03787032",
    "n02089867", "n02119022", "n03777754", "n04238763", "n02231487", "n03032252", "n02138441", "n02104029",
    "n03837869", "n03494278", "n04136333", "n03794056", "n03492542", "n02018207", "n04067472", "n03930630",
    "n03584829", "n02123045", "n04229816", "n02100583", "n03642806", "n04336792", "n03259280", "n02116738",
    "n02108089", "n03424325", "n01855672", "n02090622",
)


@dataclass
class ImageNet100Config(ImageFolderConfig):
    """CMC's ImageNet-100, read from a full ImageNet tree without a copy: `path` holds `train/WNID/` and
    `val/WNID/` (ImageNet's validation images are the test split, val is carved from train), or holds that
    tree as `imagenet/`, so that one data folder ($AUGBENCH_DATA) serves it beside the torchvision datasets.
    Read lazily unless told otherwise: its 126,689 training images take 17.8 GB in memory at 224 px."""

    name: str = "imagenet100"
    image_size: int = 224
    classes: list[str] = field(default_factory=lambda: list(IMAGENET100_CLASSES))
    lazy: bool = True


@dataclass
class Flowers102Config(DiskConfig):
    name: str = "flowers102"


@dataclass
class DtdConfig(DiskConfig):
    """`partition`: which of DTD's ten official train/val/test partitions (1–10)."""

    name: str = "dtd"
    partition: int = 1


@dataclass
class PetsConfig(DiskConfig):
    name: str = "pets"


@dataclass
class Caltech101Config(DiskConfig):
    """Caltech-101 has no official split. `train_per_class`: that many seeded images of each class form train
    (val is then carved from them by `val_fraction`) and the rest test, as in Kornblith et al. (2019), who take
    30; 0 carves `val_fraction` / `test_fraction` of every class instead. `background`: keep
    BACKGROUND_Google as a class (the last), which their 102 classes and 3,060 / 6,084 split count."""

    name: str = "caltech101"
    train_per_class: int = 0
    background: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.train_per_class < 0:
            raise ValueError(f"train_per_class={self.train_per_class}: must be 0 (carve by fraction) or more")


@dataclass
class EuroSatConfig(DiskConfig):
    name: str = "eurosat"
    image_size: int = 64


@dataclass
class DiskImageDataset(ImageDataset):
    """An on-disk split in memory; `skipped` lists (path, reason) of the images left out as undecodable."""

    skipped: list[tuple[str, str]] = field(default_factory=list)


class LazyImageDataset(Dataset):
    """A split brought to `image_size` as it is read, for datasets too large for memory at that size.

    It keeps its image files, or (CIFAR, STL-10) its images at their native
    size: CIFAR-10 is 180 MB at 32 px, and 9 GB in memory at 224.
    Pretraining reads batches through a DataLoader: its `trainer.num_workers`
    processes decode them while the model trains, or without workers
    `config.num_workers` threads decode each; memory holds only the batches
    in flight. Evaluation reads `batches` (frozen features once; SGD linear
    and fine-tuning every epoch, in a shuffled order), so it holds two
    batches of images, never the split; a subset (`take`) is lazy too. An
    undecodable file raises `DataError` with its path when it is read.
    `images` (what crop pairs and dense heads read) brings the whole split
    to size once, with the same memory check as an eager load.
    """

    def __init__(self, name: str, split: str, source: list[Path] | np.ndarray, labels: dict[str, Tensor],
                 classes: dict[str, list[str]], config: DiskConfig):
        """`source`: the image files, or the images (N, 3, H, W) uint8 at their native size."""
        self.name, self.split, self.labels, self.classes = name, split, labels, classes
        self.files, self.arrays = (source, None) if isinstance(source, list) else (None, source)
        # A plain DiskConfig: the registry's config classes are made at run time and would not pickle into
        # DataLoader worker processes started by spawn.
        self.config = DiskConfig(**{f.name: getattr(config, f.name) for f in fields(DiskConfig)})

    def __len__(self) -> int:
        return len(self.files if self.arrays is None else self.arrays)

    def __getitem__(self, index: int) -> dict:
        return self._items([index], self._read([index])())[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """A batch of items: what a DataLoader reads in place of `__getitem__` one index at a time.

        In the training process (`trainer.num_workers: 0`) `config.num_workers`
        threads decode the batch's files; in a DataLoader worker the workers
        already decode in parallel, so it decodes one file after another.
        """
        if get_worker_info() is not None or self.config.num_workers <= 1:
            return self._items(indices, self._read(indices)())
        with ThreadPoolExecutor(max_workers=self.config.num_workers) as pool:
            return self._items(indices, self._read(indices, pool)())

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @cached_property
    def images(self) -> Tensor:
        """(N, 3, S, S) uint8, every image brought to size."""
        _check_memory(len(self), self.config, self.split)
        if self.arrays is not None:
            return _fit_arrays(self.arrays, self.config)
        decoded, _ = _decode_files(self.files, self.config)
        size = self.image_size
        return torch.stack(decoded) if decoded else torch.empty(0, 3, size, size, dtype=torch.uint8)

    def batches(self, batch_size: int, order: Tensor | None = None) -> Iterator[Tensor]:
        """The split's images in order, or those at `order` (indices), (B, 3, S, S) uint8 `batch_size` at a time.

        `config.num_workers` threads decode files (Pillow releases the GIL),
        the next batch while the caller works on this one.
        """
        chunks = (torch.arange(len(self)) if order is None else order).split(batch_size)
        if "images" in vars(self):  # brought to size already: no file is read twice
            yield from (self.images[indices] for indices in chunks)
            return
        with ThreadPoolExecutor(max_workers=max(1, self.config.num_workers)) as pool:
            pending = self._read(chunks[0].tolist(), pool) if chunks else None
            for following in [*chunks[1:], None]:
                reading, pending = pending, None if following is None else self._read(following.tolist(), pool)
                yield reading()

    def take(self, indices: Tensor) -> LazyImageDataset:
        """The images and labels at `indices` (a long tensor), in that order, still unread."""
        source = [self.files[i] for i in indices.tolist()] if self.arrays is None else self.arrays[indices.numpy()]
        return LazyImageDataset(self.name, self.split, source,
                                {name: values[indices] for name, values in self.labels.items()}, dict(self.classes),
                                self.config)

    def _read(self, indices: Sequence[int], pool: ThreadPoolExecutor | None = None) -> Callable[[], Tensor]:
        """The images at `indices`, (B, 3, S, S) uint8, as a call that waits for them: files are decoded by
        `pool` (without one, here and now), native-size images are resized here and now."""
        if self.arrays is not None:
            images = _fit(torch.from_numpy(self.arrays[list(indices)]), self.config)
            return lambda: images
        if pool is None:
            images = torch.stack([self._decode(self.files[i]) for i in indices])
            return lambda: images
        futures = [pool.submit(self._decode, self.files[i]) for i in indices]
        return lambda: torch.stack([future.result() for future in futures])

    def _decode(self, path: Path) -> Tensor:
        try:
            return _decode_file(path, self.config)
        except DataError as error:
            raise DataError(f"{error} (a lazily read split cannot leave it out; to skip such files, load it with "
                            "lazy=false and skip_bad_images=true)") from None

    def _items(self, indices: Sequence[int], images: Tensor) -> list[dict]:
        return [{"image": image, "labels": {k: v[index] for k, v in self.labels.items()}}
                for image, index in zip(images, indices, strict=True)]


@dataclass
class _Samples:
    """One split before decoding: labels (N,) per label name, and either image files or in-memory images."""

    labels: dict[str, np.ndarray]
    files: list[Path] | None = None
    arrays: np.ndarray | None = None  # (N, 3, H, W) uint8

    def __len__(self) -> int:
        return len(next(iter(self.labels.values())))

    def take(self, indices: np.ndarray) -> _Samples:
        return _Samples(
            {name: values[indices] for name, values in self.labels.items()},
            None if self.files is None else [self.files[i] for i in indices],
            None if self.arrays is None else self.arrays[indices],
        )


@dataclass
class _Listing:
    splits: dict[str, _Samples]  # the dataset's own splits among train / val / test
    classes: dict[str, list[str]]


def _root(config: DiskConfig, base: str, layout: str) -> Path:
    """The torchvision `root` holding `base`; `config.path` may be that root or `base` itself."""
    path = Path(config.path).expanduser()
    expected = f"expected {layout}"
    if config.path in ("", MISSING):
        raise DataError(f"data.path: set it to the folder holding {config.name} ({expected})")
    if not path.is_dir():
        raise DataError(f"data.path={path}: no such directory ({config.name}: {expected})")
    if (path / base).is_dir():
        return path
    depth = len(Path(base).parts)
    if path.parts[-depth:] == Path(base).parts:
        return path.parents[depth - 1]
    raise DataError(f"data.path={path}: no {base}/ folder here ({config.name}: {expected})")


def _require(root: Path, relative_paths: list[str], config: DiskConfig, layout: str) -> None:
    missing = [p for p in relative_paths if not (root / p).exists()]
    if missing:
        raise DataError(f"data.path={config.path}: missing {', '.join(str(root / p) for p in missing)} "
                        f"({config.name}: expected {layout})")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, strings and numbers, and refuses every other global.

    CIFAR's batches are Python pickles. torchvision reads them with a plain
    `pickle.load`, which runs whatever code a tampered file names; this
    unpickler admits only what numpy arrays need, so a hostile file fails
    instead of executing.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
        ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays are allowed")
        return self._ALLOWED[(module, name)]


def _read_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as file:
            return _ArrayUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataError(f"{path}: not a readable CIFAR batch ({type(error).__name__}: {error})") from None


def _list_cifar(config: DiskConfig) -> _Listing:
    hundred = isinstance(config, Cifar100Config)
    reference = tvd.CIFAR100 if hundred else tvd.CIFAR10
    base = reference.base_folder
    files = {"train": [f for f, _ in reference.train_list], "test": [f for f, _ in reference.test_list]}
    meta = reference.meta["filename"]
    layout = f"{base}/{{{', '.join(files['train'] + files['test'] + [meta])}}} (the python version of the archive)"
    root = _root(config, base, layout)
    _require(root, [f"{base}/{f}" for f in files["train"] + files["test"] + [meta]], config, layout)
    label_keys = {"class": "fine_labels", "superclass": "coarse_labels"} if hundred else {"class": "labels"}
    splits = {}
    for split, names in files.items():
        batches = [_read_cifar_pickle(root / base / name) for name in names]
        images = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        labels = {label: np.concatenate([np.asarray(b[key], dtype=np.int64) for b in batches])
                  for label, key in label_keys.items()}
        splits[split] = _Samples(labels, arrays=images)
    names = _read_cifar_pickle(root / base / meta)
    classes = {"class": names[reference.meta["key"]]}
    if hundred:
        classes["superclass"] = names["coarse_label_names"]
    return _Listing(splits, classes)


class _Stl10OnDisk(tvd.STL10):
    def _check_integrity(self) -> bool:
        # Presence, not the download's md5: the files may be a re-packed or generated copy. Only the files this
        # split reads are required, so the 2.6 GB unlabelled file need not exist for the labelled splits.
        needed = {"train": [0, 1], "train+unlabeled": [0, 1, 2], "unlabeled": [2], "test": []}[self.split]
        names = [self.train_list[i][0] for i in needed]
        if self.split == "test":
            names += [name for name, _ in self.test_list]
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, name)) for name in names)


def _list_stl10(config: Stl10Config) -> _Listing:
    base = tvd.STL10.base_folder
    layout = f"{base}/{{train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt[, unlabeled_X.bin]}}"
    root = _root(config, base, layout)
    needed = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
    if config.train_split != "train":
        needed.append("unlabeled_X.bin")
    _require(root, [f"{base}/{name}" for name in needed], config, layout)

    def read(split: str) -> tuple[_Samples, tvd.STL10]:
        try:
            stl = _Stl10OnDisk(str(root), split=split)
        except ValueError as error:  # numpy's reshape of a file of the wrong length
            raise DataError(f"{root / base}: {split} files have the wrong size for 96×96 images ({error})") from None
        return _Samples({"class": np.asarray(stl.labels, dtype=np.int64)}, arrays=stl.data), stl

    (labelled, stl), (test, _) = read("train"), read("test")
    train, val = _carve(labelled, config.val_fraction, config.seed)
    if config.train_split != "train":
        unlabelled, _ = read("unlabeled")
        train = unlabelled if config.train_split == "unlabeled" else _concatenate(train, unlabelled)
    classes = getattr(stl, "classes", None) or [str(i) for i in range(10)]
    return _Listing({"train": train, "val": val, "test": test}, {"class": list(classes)})


class _ChosenClasses(tvd.ImageFolder):
    """torchvision's ImageFolder over only the class folders `classes` (all of them when empty): the others are
    never listed, which matters when 100 classes are read from ImageNet's 1,000. Its files are listed by
    `_list_class_files`, which follows directory links as torchvision does but never twice; `real_paths[i]` is
    the file `samples[i]` names, links resolved."""

    def __init__(self, root: Path, classes: list[str]):
        self.chosen = sorted(classes)
        self.real_paths: list[str] = []
        super().__init__(str(root), loader=str)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        if not self.chosen:
            return super().find_classes(directory)
        missing = [name for name in self.chosen if not (Path(directory) / name).is_dir()]
        if missing:
            raise DataError(f"{directory}: no folder for {len(missing)} of data.classes' {len(self.chosen)} "
                            f"classes, e.g. {_preview(missing)}")
        return self.chosen, {name: index for index, name in enumerate(self.chosen)}

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], extensions=None, is_valid_file=None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        extensions = extensions or tvd.folder.IMG_EXTENSIONS
        samples, self.real_paths = _list_class_files(Path(directory), class_to_idx, extensions, allow_empty)
        return samples


def _list_class_files(directory: Path, class_to_idx: dict[str, int], extensions: tuple[str, ...],
                      allow_empty: bool = False) -> tuple[list[tuple[str, int]], list[str]]:
    """The image files under each class folder, as (path, class index), and each file's real path.

    The order is torchvision's `make_dataset`'s (classes sorted, then folders by path, then file names), and
    so are the labels: a file is labelled by the class folder it is reached from. Directory links are followed,
    as torchvision's `os.walk(followlinks=True)` does, but never into a folder already listed: a link back to
    a folder that contains it (`circle/loop -> ..`) would list the same images again and again, labelled by
    whichever class folder the loop was entered from, until the path grows too long. Such a link, or a second
    link to a folder already listed, is not followed, with a warning naming it. A link that would bring
    another class's images under this class, or one file reached from two class folders, would change labels:
    a DataError names both paths. A file reached twice within one class is listed once, with a warning.
    """
    root_real = os.path.realpath(directory)
    class_dirs = {name: os.path.realpath(directory / name) for name in sorted(class_to_idx)}
    for (first, first_real), (second, second_real) in _pairs(class_dirs):
        if _within(first_real, second_real) or _within(second_real, first_real):
            raise DataError(f"{directory / first} and {directory / second} lead to the same files ({first_real}, "
                            f"{second_real}): their images would be labelled {first!r} and {second!r} alike")
    owners: dict[str, tuple[str, str]] = {}  # real file path -> (listed path, class)
    samples, real_paths, duplicates = [], [], []
    for name, real_dir in class_dirs.items():
        if not os.path.isdir(directory / name):
            continue
        folders = []  # (path, real path, file entries)
        listed = {real_dir}
        stack = [(str(directory / name), real_dir, (real_dir,))]
        while stack:
            top, top_real, ancestors = stack.pop()
            try:
                with os.scandir(top) as scan:
                    entries = list(scan)
            except OSError:  # unreadable: os.walk passes over it too
                continue
            files = []
            for entry in entries:
                if not _is_dir(entry):
                    files.append(entry)
                    continue
                real = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(top_real, entry.name)
                other = next((c for c, d in class_dirs.items() if c != name and _within(real, d)), None)
                if real in ancestors or _within(root_real, real):
                    _warn_link(entry.path, real, f"a loop back to {real}, which holds it; its images would be "
                                                 f"listed again under {name!r} without end")
                elif other is not None:
                    raise DataError(f"{entry.path} -> {os.readlink(entry.path)}: leads into class folder {other!r} "
                                    f"({real}), so its images would be labelled {name!r} as well as {other!r}; "
                                    "remove the link or move the images")
                elif real in listed:
                    _warn_link(entry.path, real, f"leads to {real}, whose images are already listed under {name!r}")
                else:
                    listed.add(real)
                    stack.append((entry.path, real, (*ancestors, real)))
            folders.append((top, top_real, files))
        for top, top_real, files in sorted(folders, key=lambda folder: folder[0]):
            for entry in sorted(files, key=lambda file: file.name):
                path = os.path.join(top, entry.name)
                if not tvd.folder.has_file_allowed_extension(path, extensions):
                    continue
                real = os.path.realpath(path) if entry.is_symlink() else os.path.join(top_real, entry.name)
                if real in owners:
                    first, first_class = owners[real]
                    if first_class != name:
                        raise DataError(f"{path} and {first} are one file ({real}) in class folders {first_class!r} "
                                        f"and {name!r}: it cannot have both labels; remove one of them")
                    duplicates.append((path, first))
                    continue
                owners[real] = (path, name)
                samples.append((path, class_to_idx[name]))
                real_paths.append(real)
    if duplicates:
        path, first = duplicates[0]
        warnings.warn(f"{directory}: {len(duplicates)} image file(s) are reached through two paths (e.g. {path} is "
                      f"{first}); each is listed once", DataWarning, stacklevel=2)
    empty = sorted(set(class_to_idx) - {owner for _, owner in owners.values()})
    if empty and not allow_empty:
        raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}. "
                                f"Supported extensions are: {', '.join(extensions)}")
    return samples, real_paths


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links, as os.walk(followlinks=True) does; a broken link is a file
    except OSError:
        return False


def _within(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies inside it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _pairs(items: dict[str, str]) -> Iterator[tuple[tuple[str, str], tuple[str, str]]]:
    listed = list(items.items())
    for i, first in enumerate(listed):
        for second in listed[i + 1 :]:
            yield first, second


def _warn_link(link: str, real: str, why: str) -> None:
    warnings.warn(f"not following the directory link {link} -> {os.readlink(link)}: {why}", DataWarning,
                  stacklevel=3)


def _image_folder_samples(directory: Path, config: ImageFolderConfig) -> tuple[_Samples, list[str], list[str]]:
    """The samples under `directory`, its class names, and each sample's real path."""
    try:
        folder = _ChosenClasses(directory, config.classes)
    except FileNotFoundError as error:  # torchvision: "Couldn't find any class folder" / "Found no valid file"
        raise DataError(f"data.path={config.path}: {error} (expected {directory}/CLASS/IMAGE files)") from None
    files = [Path(path) for path, _ in folder.samples]
    samples = _Samples({"class": np.asarray(folder.targets, dtype=np.int64)}, files=files)
    return samples, folder.classes, folder.real_paths


def _list_image_folder(config: ImageFolderConfig) -> _Listing:
    path = Path(config.path).expanduser()
    if config.path in ("", MISSING) or not path.is_dir():
        raise DataError(f"data.path={path}: no such directory ({config.name}: expected PATH/CLASS/IMAGE or "
                        f"PATH/{config.train_dir}/CLASS/IMAGE and PATH/{config.test_dir}/CLASS/IMAGE)")
    split_dirs = [(path / config.train_dir).is_dir(), (path / config.test_dir).is_dir()]
    if all(split_dirs):
        train, classes, train_real = _image_folder_samples(path / config.train_dir, config)
        test, test_classes, test_real = _image_folder_samples(path / config.test_dir, config)
        if test_classes != classes:
            raise DataError(f"{path / config.test_dir}: its class folders {_preview(test_classes)} differ from "
                            f"{path / config.train_dir}'s {_preview(classes)}")
        shared = set(train_real) & set(test_real)
        if shared:
            example = next(real for real in test_real if real in shared)
            raise DataError(f"{train.files[train_real.index(example)]} and {test.files[test_real.index(example)]} are "
                            f"one file ({example}), and {len(shared)} such file(s) are in both {config.train_dir}/ "
                            f"and {config.test_dir}/: test images must not be trained on; remove them from one side")
        return _Listing({"train": train, "test": test}, {"class": classes})
    if any(split_dirs):
        present, absent = (config.train_dir, config.test_dir) if split_dirs[0] else (config.test_dir, config.train_dir)
        raise DataError(f"data.path={path}: has {present}/ but no {absent}/ (set train_dir / test_dir, or point "
                        "data.path at a single PATH/CLASS/IMAGE tree)")
    samples, classes, _ = _image_folder_samples(path, config)
    return _Listing({"train": samples}, {"class": classes})


def _list_imagenet100(config: ImageNet100Config) -> _Listing:
    path = Path(config.path).expanduser()
    given = config.path not in ("", MISSING)
    if given and not (path / config.train_dir).is_dir() and (path / "imagenet" / config.train_dir).is_dir():
        config = replace(config, path=str(path / "imagenet"))
    return _list_image_folder(config)


def _preview(names: list[str], count: int = 5) -> str:
    return str(names[:count])[:-1] + (", …]" if len(names) > count else "]")


class _Flowers102OnDisk(tvd.Flowers102):
    def _check_integrity(self) -> bool:
        # Presence, not the download's md5: the label files may be a re-packed or generated copy.
        return self._images_folder.is_dir() and all(
            (self._base_folder / self._file_dict[key][0]).is_file() for key in ("label", "setid")
        )


def _list_flowers102(config: DiskConfig) -> _Listing:
    layout = "flowers-102/{jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat}"
    root = _root(config, "flowers-102", layout)
    _require(root, ["flowers-102/jpg", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"], config, layout)
    splits = {}
    for split in SPLITS:
        flowers = _Flowers102OnDisk(str(root), split=split, loader=str)
        files, labels = zip(*(flowers[i] for i in range(len(flowers)))) if len(flowers) else ((), ())
        splits[split] = _Samples({"class": np.asarray(labels, dtype=np.int64)}, files=[Path(f) for f in files])
    return _Listing(splits, {"class": list(tvd.Flowers102.classes)})


def _list_dtd(config: DtdConfig) -> _Listing:
    layout = f"dtd/dtd/{{images/CLASS/IMAGE, labels/{{train,val,test}}{config.partition}.txt}}"
    root = _root(config, "dtd", layout)
    _require(root, ["dtd/dtd/images"] + [f"dtd/dtd/labels/{s}{config.partition}.txt" for s in SPLITS], config, layout)
    per_split = {split: tvd.DTD(str(root), split=split, partition=config.partition, loader=str) for split in SPLITS}
    # torchvision numbers DTD's classes per split file; number them over all three so they agree.
    classes = sorted({name for dtd in per_split.values() for name in dtd.classes})
    splits = {}
    for split, dtd in per_split.items():
        files, labels = zip(*(dtd[i] for i in range(len(dtd)))) if len(dtd) else ((), ())
        global_labels = [classes.index(dtd.classes[label]) for label in labels]
        splits[split] = _Samples({"class": np.asarray(global_labels, dtype=np.int64)}, files=[Path(f) for f in files])
    return _Listing(splits, {"class": classes})


def _list_pets(config: DiskConfig) -> _Listing:
    layout = "oxford-iiit-pet/{images/*.jpg, annotations/{trainval,test}.txt}"
    root = _root(config, "oxford-iiit-pet", layout)
    _require(root, ["oxford-iiit-pet/images"] + [f"oxford-iiit-pet/annotations/{s}.txt" for s in ("trainval", "test")],
             config, layout)
    splits, classes = {}, {}
    for split, native in (("train", "trainval"), ("test", "test")):
        pets = tvd.OxfordIIITPet(str(root), split=native)
        # OxfordIIITPet has no `loader` argument: its file and label lists are read directly, not decoded.
        labels = {"class": np.asarray(pets._labels, dtype=np.int64),
                  "species": np.asarray(pets._bin_labels, dtype=np.int64)}
        splits[split] = _Samples(labels, files=list(pets._images))
        if split == "train":
            classes = {"class": list(pets.classes), "species": list(pets.bin_classes)}
    return _Listing(splits, classes)


def _list_caltech101(config: Caltech101Config) -> _Listing:
    layout = "caltech101/101_ObjectCategories/{CLASS/image_NNNN.jpg, BACKGROUND_Google/}"
    root = _root(config, "caltech101", layout)
    _require(root, ["caltech101/101_ObjectCategories/BACKGROUND_Google"], config, layout)
    caltech = tvd.Caltech101(str(root))
    images = Path(caltech.root) / "101_ObjectCategories"
    files = [images / caltech.categories[label] / f"image_{number:04d}.jpg"
             for label, number in zip(caltech.y, caltech.index)]
    labels, classes = list(caltech.y), list(caltech.categories)
    if config.background:  # torchvision's Caltech101 leaves this folder out
        background = sorted((images / "BACKGROUND_Google").glob("image_*.jpg"))
        files += background
        labels += [len(classes)] * len(background)
        classes.append("BACKGROUND_Google")
    samples = _Samples({"class": np.asarray(labels, dtype=np.int64)}, files=files)
    if not config.train_per_class:
        return _Listing({"train": samples}, {"class": classes})
    return _Listing(dict(zip(("train", "test"), _per_class_split(samples, config, classes))), {"class": classes})


def _per_class_split(samples: _Samples, config: Caltech101Config, classes: list[str]) -> tuple[_Samples, _Samples]:
    """(train, test): `config.train_per_class` seeded images of each class, and the rest."""
    labels = samples.labels["class"]
    generator = np.random.default_rng(config.seed)
    train = []
    for label, name in enumerate(classes):
        members = np.flatnonzero(labels == label)
        if len(members) <= config.train_per_class:
            raise DataError(f"data.path={config.path}: caltech101 class {name!r} has {len(members)} images, too few "
                            f"for data.train_per_class={config.train_per_class} and a test image")
        train.append(generator.choice(members, config.train_per_class, replace=False))
    train_indices = np.sort(np.concatenate(train))
    return samples.take(train_indices), samples.take(np.setdiff1d(np.arange(len(samples)), train_indices))


def _list_eurosat(config: DiskConfig) -> _Listing:
    root = _root(config, "eurosat/2750", "eurosat/2750/CLASS/IMAGE.jpg")
    eurosat = tvd.EuroSAT(str(root), loader=str)
    files = [Path(path) for path, _ in eurosat.samples]
    return _Listing({"train": _Samples({"class": np.asarray(eurosat.targets, dtype=np.int64)}, files=files)},
                    {"class": list(eurosat.classes)})


_LISTERS: dict[type, Callable[..., _Listing]] = {
    Cifar10Config: _list_cifar,
    Cifar100Config: _list_cifar,
    Stl10Config: _list_stl10,
    ImageFolderConfig: _list_image_folder,
    ImageNet100Config: _list_imagenet100,
    Flowers102Config: _list_flowers102,
    DtdConfig: _list_dtd,
    PetsConfig: _list_pets,
    Caltech101Config: _list_caltech101,
    EuroSatConfig: _list_eurosat,
}

DISK_DATASETS: dict[str, tuple[type, tuple[str, ...]]] = {
    "cifar10": (Cifar10Config, ("class",)),
    "cifar100": (Cifar100Config, ("class", "superclass")),
    "stl10": (Stl10Config, ("class",)),
    "imagefolder": (ImageFolderConfig, ("class",)),
    "imagenet100": (ImageNet100Config, ("class",)),
    "flowers102": (Flowers102Config, ("class",)),
    "dtd": (DtdConfig, ("class",)),
    "pets": (PetsConfig, ("class", "species")),
    "caltech101": (Caltech101Config, ("class",)),
    "eurosat": (EuroSatConfig, ("class",)),
}


def _carve(samples: _Samples, fraction: float, seed: int) -> tuple[_Samples, _Samples]:
    """(rest, held out): `fraction` of `samples` held out, stratified by class where every class allows it."""
    indices = np.arange(len(samples))
    if fraction == 0:
        return samples, samples.take(indices[:0])
    labels = samples.labels["class"]
    try:
        rest, held_out = train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError:  # a class with one image, or fewer held-out images than classes: split unstratified
        rest, held_out = train_test_split(indices, test_size=fraction, random_state=seed)
    return samples.take(np.sort(rest)), samples.take(np.sort(held_out))


def _concatenate(first: _Samples, second: _Samples) -> _Samples:
    labels = {name: np.concatenate([first.labels[name], np.full(len(second), -1)]) for name in first.labels}
    return _Samples(labels, arrays=np.concatenate([first.arrays, second.arrays]))


def _memory_limit_bytes(config: DiskConfig) -> float:
    if config.max_memory_gb is not None:
        return config.max_memory_gb * 2**30
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2


def _check_memory(count: int, config: DiskConfig, split: str) -> None:
    size = config.image_size
    needed = count * 3 * size * size
    limit = _memory_limit_bytes(config)
    if needed > limit:
        fitting = int((limit / (3 * count)) ** 0.5)
        raise DataError(
            f"data.path={config.path}: the {split} split's {count:,} images take {needed / 2**30:.3g} GB in memory at "
            f"image_size={size}, more than max_memory_gb={limit / 2**30:.3g}; set data.image_size={fitting} or less, "
            "or raise data.max_memory_gb"
        )


def _fit(images: Tensor, config: DiskConfig) -> Tensor:
    """(…, 3, H, W) uint8 → (…, 3, S, S): shorter side to S then the central square, or both sides to S."""
    size = config.image_size
    if images.shape[-2:] == (size, size):
        return images
    if config.resize == "stretch":
        return TF.resize(images, [size, size], antialias=True)
    return TF.center_crop(TF.resize(images, [size], antialias=True), [size, size])


def _fit_arrays(arrays: np.ndarray, config: DiskConfig) -> Tensor:
    """(N, 3, H, W) uint8 native-size images → (N, 3, S, S), a few thousand at a time."""
    images = torch.from_numpy(np.ascontiguousarray(arrays))
    images = torch.cat([_fit(chunk, config) for chunk in images.split(4096)]) if len(images) else images
    return images.reshape(-1, 3, config.image_size, config.image_size).contiguous()


def _decode_file(path: Path, config: DiskConfig) -> Tensor:
    return _fit(decode_image(path, min_size=config.image_size, strict=config.strict_decoding), config)


def _decode_files(files: list[Path], config: DiskConfig) -> tuple[list[Tensor | None], list[tuple[str, str]]]:
    def decode(path: Path) -> Tensor | DataError:
        try:
            return _decode_file(path, config)
        except DataError as error:
            return error

    with ThreadPoolExecutor(max_workers=max(1, config.num_workers)) as pool:  # Pillow releases the GIL to decode
        decoded = list(pool.map(decode, files))
    skipped = []
    for path, result in zip(files, decoded):
        if isinstance(result, DataError):
            if not config.skip_bad_images:
                raise DataError(f"{result} (set data.skip_bad_images=true to skip such files)")
            skipped.append((str(path), str(result)))
    return [None if isinstance(r, DataError) else r for r in decoded], skipped


def _materialise(samples: _Samples, config: DiskConfig, split: str, classes: dict) -> DiskImageDataset:
    _check_memory(len(samples), config, split)
    size = config.image_size
    labels = {name: torch.from_numpy(np.asarray(values, dtype=np.int64)) for name, values in samples.labels.items()}
    skipped: list[tuple[str, str]] = []
    if samples.arrays is not None:
        images = _fit_arrays(samples.arrays, config)
    else:
        decoded, skipped = _decode_files(samples.files, config)
        keep = torch.tensor([image is not None for image in decoded], dtype=torch.bool)
        kept = [image for image in decoded if image is not None]
        images = torch.stack(kept) if kept else torch.empty(0, 3, size, size, dtype=torch.uint8)
        labels = {name: values[keep] for name, values in labels.items()}
        if skipped:
            warnings.warn(f"{config.name} {split}: skipped {len(skipped)} undecodable image(s) of {len(decoded)}, "
                          f"first {skipped[0][1]}", DataWarning, stacklevel=3)
    return DiskImageDataset(config.name, split, images.contiguous(), labels, classes, skipped=skipped)


def load_from_disk(config: DiskConfig, split: str) -> DiskImageDataset | LazyImageDataset:
    """The `split` ("train", "val" or "test") of the on-disk dataset `config` describes.

    In memory, or with `lazy: true` a `LazyImageDataset` of the image files, or of CIFAR's and STL-10's images
    at their native size.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    try:
        lister = next(_LISTERS[kind] for kind in type(config).__mro__ if kind in _LISTERS)
        listing = lister(config)
    except (FileNotFoundError, RuntimeError) as error:  # torchvision's "Dataset not found", "Found no valid file", …
        raise DataError(f"data.path={config.path}: {config.name}: {error}") from None
    splits = dict(listing.splits)
    val_share = config.val_fraction
    if "test" not in splits:
        splits["train"], splits["test"] = _carve(splits["train"], config.test_fraction, config.seed)
        val_share = config.val_fraction / (1 - config.test_fraction)  # both fractions are of the whole
    if "val" not in splits:
        if val_share >= 1:
            raise DataError(f"data.val_fraction={config.val_fraction} + data.test_fraction={config.test_fraction} "
                            "leave no training images")
        splits["train"], splits["val"] = _carve(splits["train"], val_share, config.seed)
    if len(splits["train"]) == 0:
        raise DataError(f"data.path={config.path}: the {config.name} train split is empty")
    samples = splits[split]
    if config.lazy:
        labels = {name: torch.from_numpy(np.asarray(values, dtype=np.int64)) for name, values in samples.labels.items()}
        source = samples.files if samples.files is not None else samples.arrays
        return LazyImageDataset(config.name, split, source, labels, listing.classes, config)
    return _materialise(samples, config, split, listing.classes)


__all__ = ["DISK_DATASETS", "DiskConfig", "DiskImageDataset", "LazyImageDataset", "load_from_disk"]
