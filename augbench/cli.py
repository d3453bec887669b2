"""The `augbench` command: a thin front door over the library's functions."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import warnings
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from augbench import __version__
from augbench.errors import AugbenchError, AugbenchWarning, ConfigError, PreemptedError

# The operating system's refusals to store a file: one line naming the path, not a traceback.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR}

console = Console()


def _pretrain(args: argparse.Namespace) -> None:
    # The config is composed and checked before Lightning is imported (seconds): a config error answers at once.
    from augbench.train.config import check_runnable, load_config

    # Config files come first, then key=value overrides: the first word with "=" starts the overrides.
    words = [*args.config, *args.overrides]
    split = next((i for i, word in enumerate(words) if "=" in word), len(words))
    config, _ = load_config(words[:split], words[split:])
    if args.print_config:
        from augbench.config import to_yaml

        print(to_yaml(config), end="")
        return
    check_runnable(config)
    from lightning.pytorch.utilities import rank_zero_only

    from augbench.train.pretrain import pretrain

    run = pretrain(config, process_wide=True)  # this process trains and nothing else
    if rank_zero_only.rank == 0:  # under DDP every process returns here; one reports
        console.print(f"finished: encoder at {run.directory / 'encoder.safetensors'}")


def _evaluate(args: argparse.Namespace) -> None:
    from augbench.config import check_device
    from augbench.files import check_writable

    check_device(args.device)
    # For an ARCH@FILE spec (augbench.models.external) the results go beside FILE.
    weights = args.checkpoint if Path(args.checkpoint).exists() else args.checkpoint.rpartition("@")[2]
    output = args.output or _default_output(Path(weights), args.suite)
    if output.is_dir():  # `--output DIR`: the default file name, in DIR
        output = output / f"evaluation_{Path(args.suite).stem}.csv"
    check_writable(output.parent, "--output")

    from augbench.analysis.tables import results_table
    from augbench.evaluate.evaluate import evaluate

    results = evaluate(args.checkpoint, args.suite, overrides=args.overrides, device=args.device, output=output,
                       allow_unfinished=args.allow_unfinished)
    console.print(results_table(results, title=f"{args.checkpoint} · suite {args.suite}"))
    console.print(f"{len(results)} records written to {output}")
    if len(results) and results["weights"].iloc[0] == "mid-training":
        step, epoch = results["weights_step"].iloc[0], results["weights_epoch"].iloc[0]
        console.print(f"[yellow]these are the weights of step {step} (epoch {epoch}), from mid-training: the records "
                      "say so in their weights, weights_step and weights_epoch columns[/]", highlight=False)


def _default_output(checkpoint: Path, suite: str) -> Path:
    """<run dir>/evaluation_<suite>.csv, or <checkpoint stem>.evaluation_<suite>.csv beside a checkpoint file."""
    if checkpoint.is_dir():
        return checkpoint / f"evaluation_{Path(suite).stem}.csv"
    return checkpoint.with_name(f"{checkpoint.stem}.evaluation_{Path(suite).stem}.csv")


def _quickstart(args: argparse.Namespace) -> None:
    from augbench.quickstart import PRESETS, quickstart

    quickstart(Path(args.output_dir), args.overrides, console=console, seeds=args.seeds,
               presets=args.presets or PRESETS, process_wide=True)


def _preset_list(text: str) -> list[str]:
    from augbench.config import shipped_config

    presets = [name for name in text.split(",") if name]
    unknown = [name for name in presets if not shipped_config(f"methods/{name}.yaml").is_file()]
    if unknown or not presets:
        known = sorted(p.stem for p in shipped_config("methods").glob("*.yaml"))
        raise argparse.ArgumentTypeError(f"{text!r}: unknown presets {unknown}; known: {known}")
    return presets


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seeds as whole numbers separated by commas") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: a seed appears twice")
    return seeds


def _data(args: argparse.Namespace) -> None:
    from augbench.data.preview import preview

    path = preview(args.dataset, args.output, args.split, args.overrides)
    console.print(f"wrote {path}")


def _benchmark(args: argparse.Namespace) -> int:
    from augbench.analysis.store import shown_location
    from augbench.analysis.tables import benchmark_table, frame_table
    from augbench.benchmark import plan, plan_summary, run_benchmark  # run_benchmark checks --device first
    if args.plan:
        grid = plan(args.config, small=args.small, overrides=args.overrides)
        console.print(frame_table(plan_summary(grid), title=f"{grid.config.name}: pretraining runs"))
        stored = f"results store {shown_location(grid.store)}" if grid.store_exists() else "no results store yet"
        random = f" + {len(grid.baselines)} random encoders" if grid.baselines else ""
        console.print(f"({len(grid.runs)} runs{random}) × {len(grid.suites)} suites ({', '.join(grid.suites)}) = "
                      f"{len(grid.cells)} cells in {grid.directory} ({stored}). Nothing was run.")
        return 0
    result = run_benchmark(args.config, small=args.small, overrides=args.overrides, device=args.device,
                           max_cells=args.max_cells, console=console, executor=args.executor, process_wide=True)
    if not result.results.empty:
        console.print(benchmark_table(result.results, title=f"{result.directory} (mean ± std over seeds)"))
    states = ", ".join(f"{count} {state}" for state, count in sorted(result.states.items()))
    console.print(f"cells: {states}; this run ran {len(result.ran)} in {result.seconds:.0f} s. "
                  f"Report: augbench report {result.directory}")
    if result.failed:
        first, error = next(iter(result.failed.items()))
        console.print(f"[bold red]error:[/] {len(result.failed)} of {sum(result.states.values())} cells failed "
                      f"(first: {first}: {error}); fix the cause and run the same command again to retry them",
                      highlight=False, soft_wrap=True)
        return 1
    if result.unfinished_jobs:
        console.print(f"[bold red]error:[/] {len(result.unfinished_jobs)} cells' jobs ended without finishing them "
                      f"({', '.join(result.unfinished_jobs)}); run the same command again to resubmit them (they "
                      "resume from their last checkpoint)", highlight=False, soft_wrap=True)
        return 1
    return 0


def _results(args: argparse.Namespace) -> None:
    from augbench.analysis.store import load_results, shown_location
    from augbench.analysis.tables import benchmark_table

    results = load_results(args.path)  # read-only: a store on a read-only filesystem reads as any other
    console.print(benchmark_table(results, title=f"{shown_location(args.path)}: {len(results)} evaluations "
                                                 "(mean ± std over seeds)"))
    if args.csv:
        results.to_csv(args.csv, index=False)
        console.print(f"wrote {args.csv}")
    if args.parquet:
        results.to_parquet(args.parquet, index=False)
        console.print(f"wrote {args.parquet}")


def _report(args: argparse.Namespace) -> None:
    from augbench.analysis.report import write_report

    html, markdown = write_report(args.directory, args.output)
    console.print(f"wrote {html} and {markdown}")


def _findings(args: argparse.Namespace) -> None:
    from augbench.analysis.findings import load_claims, write_findings

    if args.markdown is None and args.html is None:
        raise ConfigError("findings: give --markdown FILE.md and/or --html FILE.html to write")
    claims = load_claims(args.claims)
    suffix = "-small" if args.small else ""
    stores = {claim.grid: args.runs_dir / f"{claim.grid}{suffix}" for claim in claims}
    for override in args.store:
        grid, _, location = override.partition("=")
        if not location:
            raise ConfigError(f"--store {override}: expected GRID=PATH (a benchmark directory or store file)")
        stores[grid] = location
    command = f"augbench findings {args.claims}" + (" --small" if args.small else "") + "".join(
        f" --{kind} {path}" for kind, path in (("markdown", args.markdown), ("html", args.html)) if path)
    results = write_findings(args.claims, stores, args.markdown, args.html, args.seeds, command)
    counted = Counter(result.verdicts[result.claim.verdict_protocol] for result in results)
    written = " and ".join(str(path) for path in (args.markdown, args.html) if path)
    console.print(f"{len(results)} claims: {', '.join(f'{n} {v}' for v, n in counted.items())}; wrote {written}",
                  highlight=False, soft_wrap=True)


def _export(args: argparse.Namespace) -> None:
    from augbench.models.io import export_backbone

    output, config = export_backbone(args.checkpoint, args.format, args.output)
    console.print(f"wrote {output}: a {args.format} {config.name} state dict (classifier removed); "
                  f"normalise inputs with mean={list(config.mean)} std={list(config.std)}")


_python_format_warning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """`warning: MESSAGE` for augbench's warnings about its inputs; Python's format (file, line, source) for others."""
    if issubclass(category, AugbenchWarning):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augbench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"augbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    pretrain = commands.add_parser("pretrain", help="pretrain an encoder from config files")
    pretrain.add_argument("config", nargs="+", help="YAML configs, each merged over the ones before, then dot-list "
                          "overrides: configs/methods/moco_v2.yaml configs/quickstart.yaml trainer.max_epochs=5")
    pretrain.add_argument("--print-config", action="store_true",
                          help="print the composed config (every key, as the run's config.yaml will hold it) and exit")
    pretrain.set_defaults(run=_pretrain, overrides=[])

    evaluate = commands.add_parser("evaluate", help="evaluate a frozen encoder on an end-task suite")
    evaluate.add_argument("checkpoint", help="run directory, encoder .safetensors or .ckpt")
    evaluate.add_argument("--suite", default="quick", help="suite name (configs/suites/) or YAML path")
    evaluate.add_argument("--output", type=Path, help="CSV of one record per task and protocol (default: "
                          "<run dir>/evaluation_<suite>.csv, or beside the checkpoint file)")
    evaluate.add_argument("--device", help="cpu, cuda, cuda:1, … (default: cuda if available)")
    evaluate.add_argument("--allow-unfinished", action="store_true", help="evaluate a run that did not finish "
                          "(running, failed, preempted) from its last checkpoint; the records say the weights are "
                          "from mid-training")
    evaluate.add_argument("overrides", nargs="*", help="dot-list overrides of the suite, e.g. knn.k=200")
    evaluate.set_defaults(run=_evaluate)

    quick = commands.add_parser("quickstart",
                                help="pretrain MoCo v2 on Shapes World and compare it with a random encoder")
    quick.add_argument("--output-dir", default="runs/quickstart")
    quick.add_argument("--presets", type=_preset_list, metavar="NAME[,NAME...]",
                       help="method presets to train (configs/methods/), e.g. moco_v2,byol (default: moco_v2)")
    quick.add_argument("--seeds", type=_seed_list, default=[0], metavar="N[,N...]",
                       help="train and evaluate each preset (and a random encoder) once per seed, e.g. 0,1,2; the "
                            "table shows the median and range (default: 0)")
    quick.add_argument("overrides", nargs="*", help="dot-list overrides of both runs, e.g. trainer.max_epochs=2")
    quick.set_defaults(run=_quickstart)

    bench = commands.add_parser("benchmark", help="run or resume a grid of methods × datasets × seeds × suites")
    bench.add_argument("config", help="benchmark YAML, e.g. configs/benchmarks/looc.yaml")
    bench.add_argument("--small", action="store_true", help="merge the config's `small:` section (CPU size)")
    bench.add_argument("--device", help="evaluation device (default: cuda if available)")
    bench.add_argument("--max-cells", type=int, help="stop after running this many cells (executor local)")
    bench.add_argument("--executor", choices=["local", "slurm", "ray"], default="local",
                       help="where cells run: this process (default), SLURM jobs through submitit, or Ray tasks; "
                       "settings in the config's slurm: / ray: sections (docs/scaling.md)")
    bench.add_argument("--plan", action="store_true", help="check the grid and list its runs, each with its state "
                       "on disk, without running anything")
    bench.add_argument("overrides", nargs="*", help="dot-list overrides of the benchmark config, e.g. seeds=[0]")
    bench.set_defaults(run=_benchmark)

    results = commands.add_parser("results", help="print and export a benchmark's results store")
    results.add_argument("path", help="benchmark directory, its results.sqlite, or a store URL "
                         "(postgresql://user@host/db)")
    results.add_argument("--csv", type=Path, help="write every evaluation to this CSV file")
    results.add_argument("--parquet", type=Path, help="write every evaluation to this Parquet file")
    results.set_defaults(run=_results, overrides=[])

    report = commands.add_parser("report", help="write a benchmark's HTML and Markdown report")
    report.add_argument("directory", help="benchmark directory (holding results.sqlite), or a store URL with --output")
    report.add_argument("--output", type=Path, help="HTML file to write (default: <directory>/report.html)")
    report.set_defaults(run=_report, overrides=[])

    findings = commands.add_parser("findings", help="measure the seed papers' claims on the study grids' stores and "
                                   "write the results page (docs/results.md)")
    findings.add_argument("claims", type=Path, help="claims file, e.g. configs/findings.yaml")
    findings.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks"),
                          help="where the grids' directories are (default: runs/benchmarks)")
    findings.add_argument("--small", action="store_true", help="read the grids run with --small (<grid>-small)")
    findings.add_argument("--store", action="append", default=[], metavar="GRID=PATH",
                          help="the store of one grid elsewhere (a benchmark directory, file or URL); repeatable")
    findings.add_argument("--seeds", type=_seed_list, default=[0, 1, 2], metavar="N[,N...]",
                          help="the seeds the regenerating commands name (default: 0,1,2)")
    findings.add_argument("--markdown", type=Path, help="Markdown page to write, e.g. docs/results.md")
    findings.add_argument("--html", type=Path, help="HTML page to write, e.g. docs/results.html")
    findings.set_defaults(run=_findings, overrides=[])

    export = commands.add_parser("export", help="write a run's backbone as a torchvision or timm state dict")
    export.add_argument("checkpoint", help="run directory, encoder .safetensors or .ckpt")
    export.add_argument("--format", required=True, choices=["torchvision", "timm"])
    export.add_argument("--output", type=Path, required=True, help=".pth (torch.save) or .safetensors file to write")
    export.set_defaults(run=_export, overrides=[])

    data = commands.add_parser("data", help="render a grid of a dataset's images with their labels")
    data.add_argument("dataset", help="dataset name, e.g. shapes_world or digits")
    data.add_argument("--output", type=Path, default=None, help="PNG to write (default: <dataset>_<split>.png)")
    data.add_argument("--split", default="train")
    data.add_argument("overrides", nargs="*", help="dataset settings, e.g. image_size=64 objects=[1,4]")
    data.set_defaults(run=_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow options (`augbench data shapes_world --split val image_size=64`); argparse's
    # intermixed parsing does not support subcommands, so trailing key=value words are collected here.
    args, extra = parser.parse_known_args(argv)
    unknown = [word for word in extra if "=" not in word or word.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    # augbench's own log lines (e.g. the load report of a checkpoint from another codebase) go to the console.
    warnings.formatwarning = _format_warning  # augbench's own warnings as one line each
    library_log = logging.getLogger("augbench")
    if not library_log.handlers:
        library_log.addHandler(RichHandler(console=console, show_time=False, show_path=False))
        library_log.setLevel(logging.INFO)
    try:
        return args.run(args) or 0
    except PreemptedError as error:
        _print_error(error)
        return PreemptedError.exit_status
    except (AugbenchError, FileNotFoundError, FileExistsError) as error:
        _print_error(error)
        return 2
    except OSError as error:
        if error.errno not in STORAGE_ERRNOS:
            raise
        _print_error(f"{error.filename}: {error.strerror}" if error.filename else error)
        return 2


def _print_error(error: Exception | str) -> None:
    message = "\n".join([str(error), *getattr(error, "__notes__", [])])
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
