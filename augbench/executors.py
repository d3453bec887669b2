"""Grid cells as jobs of a scheduler: SLURM through submitit, or Ray.

The scheduler owns queues, resources, retries and preemption; augbench keeps only what it cannot know, which
cells exist and which are done (the store's work queue, `augbench.analysis.queue`). Each job is a runner
(`augbench.benchmark.run_cells`) given the unfinished cells of one pretraining run: the run trains once and is
evaluated on each suite in turn, and with one suite (the usual grid) a job is a cell. A job claims its cells
like any runner, so a cell another runner finished or holds is skipped, and a job that comes back (a Ray task
retried after its worker died, a SLURM job requeued after preemption or its time limit) takes its cells over at
once through its scheduler id and resumes its run from the last checkpoint.

The jobs need augbench installed where they run, and the run directories (`output_dir`) and the benchmark's
files on a filesystem they share with the submitting machine; the store is a PostgreSQL server
(`store=postgresql://...`) when they run on several machines.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from rich.console import Console

from augbench.analysis.queue import CellQueue, owner_id
from augbench.analysis.store import ResultsStore, is_server_url
from augbench.benchmark import Grid, run_cells
from augbench.errors import ConfigError


def pending_work(grid: Grid) -> list[list[str]]:
    """The cells no runner finished, grouped by pretraining run, in grid order."""
    with ResultsStore(grid.store) as store:
        states = CellQueue(store).states()
    units: dict[str, list[str]] = {}
    for cell in grid.cells:
        if states.get(cell.cell_id) != "finished":
            units.setdefault(cell.run_name, []).append(cell.cell_id)
    return list(units.values())


def submit(executor: str, grid: Grid, device: str | None, console: Console) -> tuple[list[str], list[str]]:
    """Run the grid's unfinished cells as jobs of `executor` ("slurm" or "ray") and wait for them; the cells
    they ran, and the cells of jobs that ended without finishing (killed, or requeued too often), which the
    next `augbench benchmark` resubmits."""
    units = pending_work(grid)
    if not units:
        return [], []
    grid = portable(grid)
    if executor == "slurm":
        return _run_on_slurm(grid, units, device, console)
    return _run_on_ray(grid, units, device, console)


def portable(grid: Grid) -> Grid:
    """The grid with absolute paths: a job's working directory is not the submitting shell's."""
    directory = grid.directory.resolve()
    runs = {name: dataclasses.replace(run, output_dir=str(Path(run.output_dir).resolve()))
            for name, run in grid.runs.items()}
    config = grid.config
    if not is_server_url(grid.store):
        config = dataclasses.replace(config, store=str(Path(grid.store).resolve()))
    return dataclasses.replace(grid, config=config, directory=directory, runs=runs, source=grid.source.resolve(),
                               suites={k: v.resolve() for k, v in grid.suites.items()})


# --- SLURM ----------------------------------------------------------------------------------------------------


class SlurmCells:
    """A submitit job: run the given cells of the grid. submitit requeues a preempted or timed-out job with
    what `checkpoint` returns, the same cells: the requeued job takes them over and resumes the run from its
    last checkpoint (submitit finds `checkpoint` by name, so this class need not import submitit)."""

    def __init__(self, grid: Grid, device: str | None):
        self.grid, self.device = grid, device

    def __call__(self, cell_ids: list[str]) -> list[str]:
        import submitit

        token = f"slurm-{submitit.JobEnvironment().job_id}"  # the same across requeues of this job
        return run_cells(self.grid, cell_ids, owner_id(token), self.device, Console(), process_wide=True)

    def checkpoint(self, cell_ids: list[str]):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, cell_ids)


def slurm_executor(grid: Grid):
    """The submitit executor of the grid's `slurm:` settings (an sbatch job array; `cluster: local` runs the
    jobs as local processes)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm needs submitit: pip install 'augbench[slurm]'") from None
    settings = grid.config.slurm
    folder = Path(settings.folder or grid.directory / "slurm").resolve()
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=settings.cluster,
                                         slurm_max_num_timeout=settings.max_requeues)
    except RuntimeError as error:  # no srun on this machine
        raise ConfigError(f"--executor slurm: {error} (slurm.cluster=local runs the jobs on this machine)") from None
    parameters = {"name": f"augbench-{grid.config.name}", "timeout_min": settings.timeout_min,
                  "cpus_per_task": settings.cpus_per_task, "gpus_per_node": settings.gpus_per_node,
                  "slurm_array_parallelism": settings.array_parallelism,
                  # the job's own lines say what it is doing; submitit's log carries them
                  "slurm_additional_parameters": dict(settings.additional_parameters)}
    if settings.partition:
        parameters["slurm_partition"] = settings.partition
    if settings.mem_gb:
        parameters["mem_gb"] = settings.mem_gb
    executor.update_parameters(**parameters)
    return executor


def _run_on_slurm(grid: Grid, units: list[list[str]], device: str | None,
                  console: Console) -> tuple[list[str], list[str]]:
    from submitit.core.utils import FailedJobError, UncompletedJobError

    executor = slurm_executor(grid)
    jobs = executor.map_array(SlurmCells(grid, device), units)
    console.print(f"submitted {len(jobs)} jobs ({', '.join(job.job_id for job in jobs[:3])}"
                  f"{', …' if len(jobs) > 3 else ''}); their logs: {executor.folder}")
    ran, lost = [], []
    for job, cells in zip(jobs, units):
        try:
            ran += job.result()
        except (FailedJobError, UncompletedJobError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            console.print(f"[red]job {job.job_id} ({', '.join(cells)}) ended without finishing:[/] {first_line}")
            lost += cells
    return ran, lost


# --- Ray ------------------------------------------------------------------------------------------------------


def _run_on_ray(grid: Grid, units: list[list[str]], device: str | None,
                console: Console) -> tuple[list[str], list[str]]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'augbench[ray]'") from None
    settings = grid.config.ray
    address = settings.address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(_ray_cells).options(num_cpus=settings.num_cpus, num_gpus=settings.num_gpus,
                                          max_retries=settings.max_retries, retry_exceptions=False)
    pending = {task.remote(grid, cells, device): cells for cells in units}
    console.print(f"submitted {len(pending)} Ray tasks to {ray.get_runtime_context().gcs_address}")
    ran, lost = [], []
    for ref, cells in pending.items():
        try:
            ran += ray.get(ref)
        except ray.exceptions.RayError as error:
            first_line = str(error).strip().splitlines()[0]
            console.print(f"[red]Ray task for {', '.join(cells)} ended without finishing:[/] {first_line}")
            lost += cells
    return ran, lost


def _ray_cells(grid: Grid, cell_ids: list[str], device: str | None) -> list[str]:
    import ray

    token = f"ray-{ray.get_runtime_context().get_task_id()}"  # the same across retries of this task
    return run_cells(grid, cell_ids, owner_id(token), device, Console(quiet=True), process_wide=True)
