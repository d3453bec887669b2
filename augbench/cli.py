"""The `augbench` command: a thin front door over the library's functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from augbench.errors import AugbenchError

console = Console()


def _pretrain(args: argparse.Namespace) -> None:
    from augbench.train.pretrain import pretrain

    run = pretrain(args.config, args.overrides)
    console.print(f"finished: encoder at {run.directory / 'encoder.safetensors'}")


def _evaluate(args: argparse.Namespace) -> None:
    from augbench.analysis.tables import results_table
    from augbench.evaluate.evaluate import evaluate

    results = evaluate(args.checkpoint, args.suite, overrides=args.overrides, device=args.device)
    console.print(results_table(results, title=f"{args.checkpoint} · suite {args.suite}"))
    output = args.output or _default_output(Path(args.checkpoint), args.suite)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        results.to_csv(output, index=False)
        console.print(f"results written to {output}")


def _default_output(checkpoint: Path, suite: str) -> Path | None:
    run_dir = checkpoint if checkpoint.is_dir() else None
    return run_dir / f"evaluation_{Path(suite).stem}.csv" if run_dir is not None else None


def _quickstart(args: argparse.Namespace) -> None:
    from augbench.quickstart import quickstart

    quickstart(Path(args.output_dir), console=console)


def _data(args: argparse.Namespace) -> None:
    from augbench.data.preview import preview

    path = preview(args.dataset, args.output, args.split, args.overrides)
    console.print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    pretrain = commands.add_parser("pretrain", help="pretrain an encoder from a config file")
    pretrain.add_argument("config", help="YAML config, e.g. configs/methods/moco_v2.yaml")
    pretrain.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. optim.lr=0.1 trainer.max_epochs=5")
    pretrain.set_defaults(run=_pretrain)

    evaluate = commands.add_parser("evaluate", help="evaluate a frozen encoder on an end-task suite")
    evaluate.add_argument("checkpoint", help="run directory, encoder .safetensors or .ckpt")
    evaluate.add_argument("--suite", default="quick", help="suite name (configs/suites/) or YAML path")
    evaluate.add_argument("--output", type=Path, help="CSV to write (default: <run dir>/evaluation_<suite>.csv)")
    evaluate.add_argument("--device", help="cpu, cuda, cuda:1, … (default: cuda if available)")
    evaluate.add_argument("overrides", nargs="*", help="dot-list overrides of the suite, e.g. knn.k=200")
    evaluate.set_defaults(run=_evaluate)

    quick = commands.add_parser("quickstart", help="pretrain MoCo v2 and BYOL on Shapes World and compare them")
    quick.add_argument("--output-dir", default="runs/quickstart")
    quick.set_defaults(run=_quickstart)

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
    try:
        args.run(args)
    except (AugbenchError, FileNotFoundError, FileExistsError) as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
