"""`augbench benchmark CONFIG`: a grid of methods × pretraining datasets × seeds × suites, resumable.

A benchmark config (configs/benchmarks/*.yaml) names

    methods:   {label: {config: <configs/methods name or YAML path>, overrides: [dot-list]}}
    datasets:  {label: <a `data:` section, e.g. {name: shapes_world, backgrounds: [flat]}>}
    seeds, suites, and `pretrain:` / `evaluate:` settings shared by every cell;
    small:     the same keys, merged over the config by `--small` (a method or
               dataset set to null there is left out of the small grid).

A cell is (method, dataset, seed, suite). Beside the grid's methods, every
grid evaluates the randomly initialised encoder of each architecture its runs
use (`random`, or `random_1`, `random_2`, … when they use several), once per
seed and suite, as cells of the pretraining dataset `none`: the baseline every
report compares results with (`random_baseline: false` leaves it out). Running
a trained cell pretrains the run
(method, dataset, seed) unless it already finished (an unfinished run resumes
from its last checkpoint), then evaluates its encoder on the suite and writes
the numbers to the results store (`augbench.analysis.store`: a SQLite file in
the benchmark directory, or `store=postgresql://...`) in the same transaction
that marks the cell finished. Runners claim cells from the store's work queue
(`augbench.analysis.queue`) under a lease they renew from a heartbeat thread,
so several runners share a grid without running a cell twice, and a killed
runner's cell is taken over. The runners are this process (`executor=local`)
or jobs of a scheduler (`augbench.executors`: SLURM through submitit, Ray).

Every method, dataset, suite and task the grid names is composed before
anything trains, so a typo fails at once with the name at fault.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf
from rich.console import Console

import augbench
from augbench.analysis.queue import CellQueue, owner_id
from augbench.analysis.store import (
    DATABASE_FILE,
    NO_PRETRAINING,
    RANDOM,
    UNCATEGORISED,
    ResultsStore,
    evaluation_records,
    is_random_label,
    is_server_url,
)
from augbench.config import (
    COMMAND_LINE,
    Source,
    check_device,
    compose,
    parse_overrides,
    read_sources,
    shipped_config,
    to_yaml,
)
from augbench.errors import ConfigError, PreemptedError
from augbench.files import check_writable
from augbench.models.backbones import BackboneConfig
from augbench.models.io import ENCODER_FILE
from augbench.train.config import CONFIG_FILE, MOVED_KEYS, SECTIONS, PretrainConfig, config_changes, read_status


@dataclass
class MethodEntry:
    """`config`: a name of configs/methods/ or a YAML path (relative to the benchmark file); "" = the label."""

    config: str = ""
    overrides: list[str] = field(default_factory=list)


@dataclass
class SlurmSettings:
    """`--executor slurm`: one job array, a job per pretraining run (its suites' cells in turn); a preempted or
    timed-out job is requeued and resumes its run from the last checkpoint. `cluster: local` runs the jobs as
    local processes (submitit's local executor, for a workstation or a test)."""

    partition: str = ""
    gpus_per_node: int = 0
    cpus_per_task: int = 4
    mem_gb: float = 0  # 0: the partition's default
    timeout_min: int = 240
    array_parallelism: int = 64
    max_requeues: int = 3
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # more sbatch options, e.g. {account: x}
    folder: str = ""  # job scripts and logs; default: <output_dir>/slurm
    cluster: str = "slurm"

    def __post_init__(self):
        if self.cluster not in ("slurm", "local"):
            raise ValueError(f"slurm.cluster={self.cluster!r}: expected slurm or local")


@dataclass
class RaySettings:
    """`--executor ray`: a Ray task per pretraining run (its suites' cells in turn) with these resources;
    a task whose worker died is retried (`max_retries`) and resumes its run from the last checkpoint."""

    address: str = ""  # a Ray cluster (ray://host:10001 or auto); "" uses RAY_ADDRESS, else starts a local one
    num_cpus: float = 1
    num_gpus: float = 0
    max_retries: int = 3


@dataclass
class BenchmarkConfig:
    """A study. `comparisons` are [baseline, variant] method pairs whose paired differences the report shows
    (default: each method against the one before it), `dataset_comparisons` the same for pretraining datasets
    (with ViRB's ANOVA; default none); `reference_task` is the task every other is correlated with; `protocol`
    the protocol the report's analysis reads."""

    name: str = "benchmark"
    output_dir: str = ""  # default: runs/benchmarks/<name>[-small]
    methods: dict[str, MethodEntry | None] = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    suites: list[str] = field(default_factory=lambda: ["quick"])
    pretrain: Any = field(default_factory=dict)
    evaluate: list[str] = field(default_factory=list)
    reference_task: str = "shape"
    protocol: str = "linear"
    comparisons: list[list[str]] = field(default_factory=list)
    dataset_comparisons: list[list[str]] = field(default_factory=list)
    random_baseline: bool = True
    lease_seconds: float = 300.0
    store: str = ""  # default: <output_dir>/results.sqlite; or postgresql://user@host/db for a grid across machines
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    ray: RaySettings = field(default_factory=RaySettings)
    small: Any = None

    def __post_init__(self):
        # null entries are how a `small:` section removes a method or dataset from the grid
        self.methods = {k: v for k, v in self.methods.items() if v is not None}
        self.datasets = {k: v for k, v in self.datasets.items() if v is not None}
        for key in ("methods", "datasets", "seeds", "suites"):
            if not getattr(self, key):
                raise ValueError(f"{key}: the grid needs at least one")
        reserved = [label for label in self.methods if is_random_label(label)]
        if self.random_baseline and reserved:
            raise ValueError(f"methods: {reserved} are the random-encoder baselines' labels (random, random_N); "
                             "rename the method, or set random_baseline: false")
        for key, labels, kind in (("comparisons", self.methods, "method"),
                                  ("dataset_comparisons", self.datasets, "dataset")):
            for pair in getattr(self, key):
                unknown = [label for label in pair if label not in labels]
                if len(pair) != 2 or unknown:
                    raise ValueError(f"{key}: {list(pair)} must be two {kind} labels of `{kind}s` "
                                     f"(unknown: {unknown}; known: {list(labels)})")


@dataclass
class Cell:
    method: str
    dataset: str
    seed: int
    suite: str

    @property
    def run_name(self) -> str:
        return f"{self.method}__{self.dataset}__seed{self.seed}"

    @property
    def cell_id(self) -> str:
        return f"{self.run_name}__{Path(self.suite).stem}"

    def record(self) -> dict:
        return {"cell_id": self.cell_id, "method": self.method, "dataset": self.dataset, "seed": self.seed,
                "suite": Path(self.suite).stem, "run_name": self.run_name}


@dataclass
class Grid:
    """A validated benchmark: its config, directory, cells, and the composed config of each pretraining run."""

    config: BenchmarkConfig
    source: Path
    directory: Path
    cells: list[Cell]
    runs: dict[str, PretrainConfig]
    suites: dict[str, Path]
    categories: dict[str, str]
    small: bool
    # The random encoders: run name (random__none__seedN) → its architecture, and each method's baseline label.
    baselines: dict[str, BackboneConfig] = field(default_factory=dict)
    baseline_of: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> str:
        """The results store: `store=` (a PostgreSQL URL or a file), else results.sqlite in the directory."""
        return self.config.store or str(self.directory / DATABASE_FILE)

    def store_exists(self) -> bool:
        return is_server_url(self.store) or Path(self.store).is_file()


def load_benchmark(path: str | Path, small: bool = False, overrides: Sequence[str] = ()) -> BenchmarkConfig:
    """Compose a benchmark config; with `small`, its `small:` section is merged over it."""
    path = Path(path)
    sources = read_sources(path)
    if small:
        base, _ = compose(BenchmarkConfig, sources)
        if base.small is None:
            raise ConfigError(f"{path}: small: --small asks for this section, but the config has none")
        sources.append(Source(f"{path}: small", OmegaConf.create(base.small)))
    if overrides:
        sources.append(Source(COMMAND_LINE, parse_overrides(overrides)))
    config, _ = compose(BenchmarkConfig, sources)
    return config


def plan(path: str | Path, small: bool = False, overrides: Sequence[str] = ()) -> Grid:
    """Validate every method, dataset, suite and task of a benchmark; return its grid. Nothing is trained."""
    path = Path(path)
    config = load_benchmark(path, small, overrides)
    directory = Path(config.output_dir or f"runs/benchmarks/{config.name}{'-small' if small else ''}")
    suites = {Path(s).stem: _suite_path(s, path) for s in config.suites}
    categories = {}
    for suite_path in suites.values():
        categories.update(_suite_categories(suite_path, config.evaluate))
    if config.reference_task not in categories:
        raise ConfigError(f"{path}: reference_task: {config.reference_task!r} is not a task of suites "
                          f"{config.suites}; their tasks: {sorted(categories)}")
    runs = {}
    cells = []
    for method in config.methods:
        for dataset in config.datasets:
            # Seeds differ only in `seed` and `name`: compose once (OmegaConf is the slow part) and copy.
            composed = _run_config(config, path, method, dataset, config.seeds[0], directory / "runs")
            _check_model(composed, path)
            for seed in config.seeds:
                run = copy.deepcopy(composed)
                run.seed, run.name = seed, Cell(method, dataset, seed, "").run_name
                _check_existing_run(run)
                runs[run.name] = run
                cells += [Cell(method, dataset, seed, suite) for suite in suites]
    baselines, baseline_of = {}, {}
    if config.random_baseline:
        architectures = _architectures(runs)
        for index, (model, methods) in enumerate(architectures):
            label = RANDOM if len(architectures) == 1 else f"{RANDOM}_{index + 1}"
            baseline_of.update(dict.fromkeys(methods, label))
            for seed in config.seeds:
                cell = Cell(label, NO_PRETRAINING, seed, "")
                baselines[cell.run_name] = model
                cells += [Cell(label, NO_PRETRAINING, seed, suite) for suite in suites]
    return Grid(config, path, directory, cells, runs, suites, categories, small, baselines, baseline_of)


def _architectures(runs: dict[str, PretrainConfig]) -> list[tuple[BackboneConfig, list[str]]]:
    """The distinct backbone configs of the runs (their initialisation included), each with its methods' labels."""
    found: dict[str, tuple[BackboneConfig, list[str]]] = {}
    for name, run in runs.items():
        _, methods = found.setdefault(to_yaml(run.model), (run.model, []))
        method = name.split("__")[0]
        if method not in methods:
            methods.append(method)
    return list(found.values())


def plan_summary(grid: Grid) -> pd.DataFrame:
    """One row per pretraining run of the grid (runs/<method>__<dataset>__seed<seed>): what it trains and how far
    its run directory has got."""
    rows = []
    baseline_rows = []
    for name, model in grid.baselines.items():
        method, dataset, _ = name.split("__")
        seed = int(name.rsplit("seed", 1)[1])
        baseline_rows.append({"method": method, "dataset": dataset, "seed": seed,
                              "model": f"{model.name} ×{model.width}", "epochs": 0, "batch": 0,
                              "state": "random init (not trained)"})
    for name, run in grid.runs.items():
        method, dataset, _ = name.split("__")
        status = read_status(run.run_dir) or {}
        steps = status.get("steps")
        state = status.get("state", "not started") + (f" ({steps} steps)" if steps is not None else "")
        rows.append({"method": method, "dataset": dataset, "seed": run.seed,
                     "model": f"{run.model.name} ×{run.model.width}", "epochs": run.trainer.max_epochs,
                     "batch": run.trainer.batch_size, "state": state})
    return pd.DataFrame(rows + baseline_rows)


def _method_path(label: str, entry: MethodEntry, benchmark: Path) -> Path:
    return _config_path("methods", entry.config or label, f"methods.{label}", benchmark)


def _suite_path(suite: str, benchmark: Path) -> Path:
    return _config_path("suites", suite, "suites", benchmark)


def _config_path(folder: str, name: str, key: str, benchmark: Path) -> Path:
    """A YAML path (relative to the benchmark file) or the name of a shipped config in configs/<folder>/."""
    if name.endswith((".yaml", ".yml")):
        candidate = Path(name) if Path(name).is_absolute() else benchmark.parent / name
    else:
        candidate = shipped_config(f"{folder}/{name}.yaml")
    if not candidate.is_file():
        known = sorted(p.stem for p in shipped_config(folder).glob("*.yaml"))
        raise ConfigError(f"{benchmark}: {key}: unknown {folder[:-1]} {name!r} (no file {candidate}); known: {known}")
    return candidate


def _suite_categories(suite: Path, overrides: Sequence[str]) -> dict[str, str]:
    """Load the suite and each of its tasks (raising on an unknown one); return each task's category."""
    from augbench.evaluate.suite import load_suite

    suite_config, tasks = load_suite(suite, overrides)
    task_files = {}
    for name in suite_config.tasks:
        file = Path(name) if name.endswith((".yaml", ".yml")) else shipped_config(f"tasks/{name}.yaml")
        task_files[name] = file if file.is_absolute() else suite.parent / file
    categories = {}
    for task, listed in zip(tasks, suite_config.tasks, strict=True):
        category = getattr(task, "category", None) or task_category(task_files[listed])
        categories[task.name] = category
    return categories


def task_category(task_file: Path) -> str:
    """A task's category as "semantic/image"-style text, read from its YAML `category:` (a string, or a
    mapping such as {type: semantic, level: pixel}); "uncategorised" when the file has none."""
    if not Path(task_file).is_file():
        return UNCATEGORISED
    values = OmegaConf.to_container(OmegaConf.load(task_file))
    category = values.get("category") if isinstance(values, dict) else None
    if isinstance(category, dict):
        return "/".join(str(v) for v in category.values())
    if isinstance(category, list):
        return "/".join(map(str, category))
    return str(category) if category else UNCATEGORISED


def _run_config(config: BenchmarkConfig, benchmark: Path, method: str, dataset: str, seed: int,
                runs_dir: Path) -> PretrainConfig:
    entry = config.methods[method]
    where = str(benchmark)
    sources = read_sources(_method_path(method, entry, benchmark))
    if config.pretrain:
        sources.append(Source(f"{where}: pretrain", OmegaConf.create(config.pretrain)))
    data = config.datasets[dataset]
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{where}: datasets.{dataset}: expected a data section with a `name`, got {data!r}")
    sources.append(Source(f"{where}: datasets.{dataset}", OmegaConf.create({"data": data})))
    if entry.overrides:
        try:
            values = parse_overrides(entry.overrides)
        except ConfigError as error:
            raise ConfigError(f"{where}: methods.{method}.overrides: {error}") from None
        sources.append(Source(f"{where}: methods.{method}.overrides", values))
    cell = Cell(method, dataset, seed, "")
    sources.append(Source(f"{where}: cell {cell.run_name}", OmegaConf.create(
        {"name": cell.run_name, "seed": seed, "output_dir": str(runs_dir)})))
    run, _ = compose(PretrainConfig, sources, SECTIONS, MOVED_KEYS)
    return run


def _check_model(run: PretrainConfig, benchmark: Path) -> None:
    """Build the run's model on the meta device (no memory, no weights): a model name or switch that pretraining
    would refuse fails the plan, before any cell trains."""
    from augbench.methods import build_method
    from augbench.models.backbones import build_backbone

    try:
        with torch.device("meta"):
            build_method(run.method, build_backbone(run.model), run.augment)
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ConfigError(f"{benchmark}: runs {run.name.rsplit('__', 1)[0]}: {error}") from None


def _check_existing_run(run: PretrainConfig) -> None:
    """Refuse a changed config where the run directory holds trained weights; a run that failed before its
    first checkpoint (a bad model name, say) trained nothing, and the corrected grid takes its place."""
    stored = run.run_dir / CONFIG_FILE
    status = read_status(run.run_dir) or {}
    trained = status.get("state") == "finished" or (run.run_dir / "checkpoints" / "last.ckpt").is_file()
    if not stored.is_file() or not trained:
        return
    changed = config_changes(stored, run)
    if changed:
        raise ConfigError(f"{stored}: this grid's run {run.name} has another config here (differs at {changed}); "
                          "use another output_dir for the changed grid")


@cache
def code_version() -> str:
    """`git describe` of the checkout augbench runs from, or the package version when it is not a checkout."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=Path(augbench.__file__).parent,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        described = ""
    return f"{augbench.__version__}+git.{described}" if described else augbench.__version__


def environment(device: str | None) -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpus": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "eval_device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
    }


class _Heartbeat(threading.Thread):
    """Renews this runner's lease on its running cell until stopped (its own connection: SQLite's rule)."""

    def __init__(self, store: str, owner: str, every: float):
        super().__init__(daemon=True, name="augbench-heartbeat")
        self.store, self.owner, self.every = store, owner, every
        self.stopped = threading.Event()

    def run(self) -> None:
        with ResultsStore(self.store) as store:
            queue = CellQueue(store)
            while not self.stopped.wait(self.every):
                try:
                    queue.heartbeat(self.owner)
                except Exception:  # a busy or briefly unreachable store: the next beat renews the lease
                    continue


EXECUTORS = ("local", "slurm", "ray")


@dataclass
class BenchmarkResult:
    directory: Path
    states: dict[str, int]
    results: pd.DataFrame
    ran: list[str]
    seconds: float
    failed: dict[str, str] = field(default_factory=dict)  # cell_id → its stored error
    unfinished_jobs: list[str] = field(default_factory=list)  # cells of scheduler jobs that ended unfinished


def run_benchmark(
    path: str | Path,
    small: bool = False,
    overrides: Sequence[str] = (),
    device: str | None = None,
    max_cells: int | None = None,
    retry_failed: bool = True,
    console: Console | None = None,
    executor: str = "local",
    process_wide: bool = False,
) -> BenchmarkResult:
    """Run (or resume) every cell of a benchmark that no runner finished or holds; return the store's state.

    `executor`: "local" runs the cells in this process; "slurm" and "ray" submit them to that scheduler
    (settings: the config's `slurm:` and `ray:` sections) and wait for them. `process_wide`: as
    `augbench.pretrain`'s, for the cells run in this process; a scheduler's jobs run in processes of their own
    and always apply those settings.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor}: expected one of {list(EXECUTORS)}")
    if executor != "local" and max_cells is not None:
        raise ConfigError(f"--max-cells: applies to --executor local; a {executor} grid runs every cell it submits")
    console = console or Console()
    start = time.perf_counter()
    check_device(device)
    grid = plan(path, small, overrides)
    check_writable(grid.directory, "output_dir")
    with ResultsStore(grid.store, create=True) as store:
        store.set_meta(benchmark=grid.config.name, source=str(grid.source), small=str(grid.small),
                       config=to_yaml(grid.config), categories=json.dumps(grid.categories),
                       baselines=json.dumps(grid.baseline_of))
        queue = CellQueue(store)
        queue.add_cells(cell.record() for cell in grid.cells)
        if retry_failed:
            queue.retry_failed()
    lost = []
    if executor == "local":
        ran = run_cells(grid, [cell.cell_id for cell in grid.cells], owner_id(uuid.uuid4().hex[:8]), device,
                        console, max_cells, process_wide)
    else:
        from augbench.executors import submit

        ran, lost = submit(executor, grid, device, console)
    with ResultsStore(grid.store) as store:
        cells = store.table("cells")
        results = store.results()
    states = dict(zip(cells["cell_id"], cells["state"]))
    failed = {cell: error for cell, error in zip(cells["cell_id"], cells["error"]) if states[cell] == "failed"}
    return BenchmarkResult(grid.directory, cells["state"].value_counts().to_dict(), results, ran,
                           time.perf_counter() - start, failed, [cell for cell in lost if states[cell] != "finished"])


def run_cells(grid: Grid, cell_ids: Sequence[str], owner: str, device: str | None, console: Console,
              max_cells: int | None = None, process_wide: bool = False) -> list[str]:
    """Claim and run the given cells of the grid, in order, that no other runner finished or holds; the cells
    this runner ran. Every executor's runner is this function: in this process, a SLURM job or a Ray task."""
    cells = {cell.cell_id: cell for cell in grid.cells if cell.cell_id in set(cell_ids)}
    store = ResultsStore(grid.store)
    queue = CellQueue(store)
    heartbeat = _Heartbeat(grid.store, owner, every=max(grid.config.lease_seconds / 5, 0.2))
    heartbeat.start()
    ran = []
    try:
        while max_cells is None or len(ran) < max_cells:
            claimed = queue.claim(owner, grid.config.lease_seconds, cells)
            if claimed is None:
                break
            cell = cells[claimed["cell_id"]]
            taken = f" (taken over from {claimed['taken_over_from']})" if claimed["taken_over_from"] else ""
            console.print(f"[bold]cell {cell.cell_id}[/]{taken}")
            try:
                _run_cell(grid, cell, store, queue, owner, device, console, process_wide)
            except PreemptedError:  # SIGTERM: this runner stops; the cell is handed back below
                raise
            except Exception as error:  # one failed cell does not stop the grid; its error is stored
                queue.fail(cell.cell_id, owner, f"{type(error).__name__}: {error}")
                console.print(f"[red]cell {cell.cell_id} failed:[/] {error}")
            ran.append(cell.cell_id)
    except BaseException:
        # Interrupted (Ctrl-C): hand the cell back so the next runner takes it without waiting for the lease.
        queue.release(owner)
        raise
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
        store.close()
    return ran


def _run_cell(grid: Grid, cell: Cell, store: ResultsStore, queue: CellQueue, owner: str, device: str | None,
              console: Console, process_wide: bool) -> None:
    from augbench.evaluate.evaluate import evaluate
    from augbench.train.pretrain import pretrain  # Lightning: imported once a cell runs, not to check a grid

    if cell.run_name in grid.baselines:
        _run_random_cell(grid, cell, store, queue, owner, device, console)
        return
    run = grid.runs[cell.run_name]
    status = read_status(run.run_dir)
    if status and status["state"] == "finished":
        console.print(f"  reusing the finished run {run.run_dir}")
    else:
        if status:
            console.print(f"  resuming {run.run_dir} (state {status['state']})")
        pretrain(run, process_wide=process_wide)
    encoder_file = run.run_dir / ENCODER_FILE
    store.record_run(
        {"run_name": cell.run_name, "method": cell.method, "dataset": cell.dataset, "seed": cell.seed,
         "run_dir": str(run.run_dir), "config": to_yaml(run), "code_version": code_version(),
         "environment": json.dumps(environment(device)), "state": "finished"},
        [{"path": str(encoder_file), "kind": "encoder", "bytes": encoder_file.stat().st_size,
          "sha256": hashlib.sha256(encoder_file.read_bytes()).hexdigest()}],
    )
    suite = grid.suites[Path(cell.suite).stem]
    rows = evaluate(run.run_dir, suite, name=cell.run_name, device=device, overrides=grid.config.evaluate,
                    progress=False)
    _finish(grid, cell, queue, owner, rows, console)


def _finish(grid: Grid, cell: Cell, queue: CellQueue, owner: str, rows: pd.DataFrame, console: Console) -> None:
    if not queue.finish(cell.cell_id, owner, cell.run_name, evaluation_records(rows, cell.seed, grid.categories)):
        console.print(f"  [yellow]cell {cell.cell_id} was taken over by another runner; its numbers stand[/]")
        return
    summary = ", ".join(f"{r.task}/{r.protocol} {r.value:.1f}" for r in rows.itertuples())
    console.print(f"  done: {summary}")


def _run_random_cell(grid: Grid, cell: Cell, store: ResultsStore, queue: CellQueue, owner: str, device: str | None,
                     console: Console) -> None:
    """Evaluate the architecture's randomly initialised encoder, its weights drawn from the cell's seed; its run
    record holds the architecture and the seed, and no checkpoint (nothing was trained or written)."""
    from augbench.evaluate.evaluate import evaluate
    from augbench.models.backbones import build_backbone

    model = grid.baselines[cell.run_name]
    torch.manual_seed(cell.seed)
    encoder = build_backbone(model).eval()
    config = {"name": cell.run_name, "seed": cell.seed, "pretraining": "none: random initialisation",
              "model": OmegaConf.to_container(OmegaConf.structured(model))}
    store.record_run({"run_name": cell.run_name, "method": cell.method, "dataset": cell.dataset, "seed": cell.seed,
                      "run_dir": "", "config": OmegaConf.to_yaml(config), "code_version": code_version(),
                      "environment": json.dumps(environment(device)), "state": "finished"})
    suite = grid.suites[Path(cell.suite).stem]
    rows = evaluate(encoder, suite, name=cell.run_name, device=device, overrides=grid.config.evaluate,
                    progress=False)
    _finish(grid, cell, queue, owner, rows, console)
