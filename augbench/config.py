"""Config files: YAML with `base:` inheritance, OmegaConf dot-list overrides, typed validation.

A config is composed from sources in order (base files, the file, then
command-line overrides) onto a dataclass schema. Each source is merged on its
own, so an unknown key or a value of the wrong type is reported with the key
and the file (or "command line") it came from. Sections whose schema depends
on a kind key (the method's and the dataset's `name`, the views' `augment.views`)
are polymorphic: their dataclass is looked up from the kind as the sources set
it. A source that switches the kind starts the section afresh from the new
dataclass's defaults, unless that dataclass says what it starts from
(`composed_over`, below).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from augbench.errors import ConfigError

T = TypeVar("T")
COMMAND_LINE = "command line"


def shipped_config(relative_path: str) -> Path:
    """A file of configs/ as installed with augbench, e.g. shipped_config("methods/byol.yaml")."""
    return Path(str(importlib.resources.files("augbench.configs") / relative_path))


def changed_keys(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


@dataclass
class Source:
    name: str  # a file path, or "command line"
    values: DictConfig


def read_sources(paths: str | Path | Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> list[Source]:
    """The config files (each after its `base:` files) and then the dot-list overrides, in merge order."""
    if isinstance(paths, str | Path):
        paths = [paths]
    sources = [source for path in paths for source in _read_file(Path(path), ())]
    if overrides:
        sources.append(Source(COMMAND_LINE, parse_overrides(overrides)))
    return sources


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"{COMMAND_LINE}: override {item!r} is not of the form key=value (e.g. optim.lr=0.1)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        raise ConfigError(f"{COMMAND_LINE}: cannot parse overrides {list(overrides)}: {error}") from error


def _read_file(path: Path, chain: tuple[Path, ...]) -> list[Source]:
    if path.resolve() in chain:
        raise ConfigError(f"{path}: circular `base:` chain {' -> '.join(map(str, chain + (path,)))}")
    if not path.is_file():
        where = f" (base of {chain[-1]})" if chain else ""
        raise ConfigError(f"{path}: config file not found{where}")
    try:
        values = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(values, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got a {type(values).__name__}")
    bases = values.pop("base", None)
    sources: list[Source] = []
    for base in [bases] if isinstance(bases, str) else list(bases or []):
        sources += _read_file(path.parent / base, chain + (path.resolve(),))
    sources.append(Source(str(path), values))
    return sources


@dataclass(frozen=True)
class Polymorphic:
    """How `compose` finds the dataclass of a section that depends on its kind.

    `lookup(kind)` returns the dataclass or raises KeyError with the known
    kinds. The kind is the section's field `key`; a source that does not set
    it may imply it through `implied(section)` (None: it implies nothing; a
    ValueError: the section can no longer be read). Where no source gives a
    kind, `default(kinds)` chooses it from the kinds of the sections composed
    before this one (keyed by section), or else the schema's default is kept.
    """

    lookup: Callable[[str], type]
    key: str = "name"
    implied: Callable[[DictConfig], str | None] | None = None
    default: Callable[[Mapping[str, str]], str] | None = None

    def given(self, section: str, source: Source) -> str | None:
        """The kind that `source` gives section `section`, by its key or implied, if any."""
        values = OmegaConf.select(source.values, section, default=None)
        if not isinstance(values, DictConfig):
            return None
        if values.get(self.key) is not None:
            return values[self.key]
        if self.implied is None:
            return None
        try:
            return self.implied(values)
        except ValueError as error:
            raise ConfigError(f"{source.name}: {error}") from None


def compose(
    schema: type[T],
    sources: Sequence[Source],
    polymorphic: Mapping[str, Callable[[str], type] | Polymorphic] = {},
    moved: Mapping[str, str] = {},
) -> tuple[T, DictConfig]:
    """Merge `sources` onto `schema`; return the validated object and the resolved DictConfig.

    `polymorphic[section]` is a Polymorphic, or its `lookup` alone for a
    section whose kind is its `name`. When a source switches the kind that an
    earlier source set, from a dataclass `previous` to `new`, the section
    starts from `new`'s defaults (settings made for the previous kind do not
    apply to the new one), or, if `new` has a classmethod
    `composed_over(previous, values)` that returns values, from those: a
    method renamed within its family keeps what is composed so far
    (configs/fair/), a wrapper method takes it as its base method (HAI).
    `moved` maps a dotted key that no longer exists to where its setting lives
    now, for the error that names it.
    """
    specs = {key: spec if isinstance(spec, Polymorphic) else Polymorphic(spec) for key, spec in polymorphic.items()}
    merged = OmegaConf.structured(schema)
    kinds: dict[str, str] = {}  # each section's kind once every source is read, for the defaults of later ones
    given: dict[str, list[tuple[str, type] | None]] = {}  # per section, the kind each source gives it and its type
    for key, spec in specs.items():
        kind = spec.default(kinds) if spec.default is not None else merged[key][spec.key]
        merged[key] = OmegaConf.structured(_section_type(spec, key, kind, "defaults"))
        given[key] = []
        for source in sources:
            named_kind = spec.given(key, source)
            # Looked up here, naming its source, before a later section's default reads the kind.
            given[key].append(None if named_kind is None else
                              (named_kind, _section_type(spec, key, named_kind, source.name)))
            kind = named_kind or kind
        kinds[key] = kind
    named = set()  # the sections whose kind a source has set; the starting kind carries nothing over
    for index, source in enumerate(sources):
        for key, spec in specs.items():
            if given[key][index] is None:
                continue
            kind, new = given[key][index]
            if kind != merged[key][spec.key]:
                merged[key] = _switched(merged[key] if key in named else None, new, spec.key, kind)
            named.add(key)
        try:
            merged = OmegaConf.merge(merged, source.values)
        except OmegaConfBaseException as error:
            message = _moved(error.full_key, moved) or _first_line(error)
            raise ConfigError(f"{source.name}: {error.full_key}: {message}") from None
    names = ", ".join(s.name for s in sources) or "defaults"
    for field in fields(schema):  # validate section by section so an error names its section
        if is_dataclass(OmegaConf.get_type(merged, field.name)):
            _to_object(merged[field.name], f"{names}: {field.name}")
    return _to_object(merged, names), merged


def _section_type(spec: Polymorphic, key: str, kind: str, origin: str) -> type:
    try:
        return spec.lookup(kind)
    except KeyError as error:
        raise ConfigError(f"{origin}: {key}.{spec.key}={kind!r} is unknown; {error.args[0]}") from None


def _switched(section: DictConfig | None, new: type, kind_key: str, kind: str) -> DictConfig:
    """The section as it starts under the dataclass `new`, of kind `kind`, after `section` as composed so far (None:
    nothing composed)."""
    start = OmegaConf.structured(new)
    composed_over = getattr(new, "composed_over", None)
    values = composed_over(OmegaConf.get_type(section), section) if composed_over and section is not None else None
    if values is not None:
        start = OmegaConf.merge(start, values)
    start[kind_key] = kind
    return start


def _moved(full_key: str, moved: Mapping[str, str]) -> str | None:
    for old, new in moved.items():
        if full_key == old or full_key.startswith(old + "."):
            return f"moved to {new}"
    return None


def _to_object(config: DictConfig, where: str) -> Any:
    try:
        return OmegaConf.to_object(config)
    except MissingMandatoryValue as error:
        # OmegaConf's own message names the dataclass; a user needs the key to set.
        raise ConfigError(f"{where}: {error.key} is not set and has no default: give it in a config file or as "
                          f"{error.full_key}=VALUE") from None
    except (ValueError, TypeError, OmegaConfBaseException) as error:
        raise ConfigError(f"{where}: {_first_line(error)}") from None


def _first_line(error: Exception) -> str:
    message = getattr(error, "msg", None) or str(error)
    return message.splitlines()[0]


def check_device(device: str | None, key: str = "--device") -> None:
    """Refuse a torch device this machine does not have (`cuda` without a GPU, `cuda:3` with two), before any work."""
    if device is None:
        return
    import torch  # here, not at the top: composing a config needs no torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key} {device}: not a device; accepted: cpu, cuda, cuda:N, mps") from None
    if parsed.type == "cuda":
        found = torch.cuda.device_count()
        if not found:
            raise ConfigError(f"{key} {device}: this machine has no CUDA GPU that torch can use; accepted here: cpu")
        if parsed.index is not None and parsed.index >= found:
            raise ConfigError(f"{key} {device}: this machine has {found} CUDA GPU(s), cuda:0 to cuda:{found - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key} {device}: this machine has no Apple GPU (MPS); accepted here: cpu")


def to_yaml(config: Any) -> str:
    """YAML of a config object or DictConfig, as written next to every run."""
    return OmegaConf.to_yaml(OmegaConf.structured(config) if is_dataclass(config) else config)
