"""Run every benchmark in one go and write benchmarks/RESULTS.md: the machine, each command, its output and ratio.

`make bench` calls this with the benchmarks' own venv. The quickstart runs
before the linear-evaluation benchmark, which reads its trained MoCo v2
encoder. The file is rewritten after each benchmark, so an interrupted run
keeps what it measured.
Usage: python benchmarks/run_all.py [--python benchmarks/.venv/bin/python]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from common import REPO

QUICKSTART_DIR = "runs/bench-quickstart"
BENCHMARKS = [
    ("MoCo v2 augmentation images/s vs torchvision PIL", ["{python}", "benchmarks/augment_throughput.py"],
     "≥ 5× at 32 and 96 px"),
    ("pretraining images/s vs lightly", ["{python}", "benchmarks/pretrain_throughput.py"], "≥ 1.3× at 32 and 96 px"),
    ("model FLOP/s / fp32 matmul peak", ["{python}", "benchmarks/model_flops.py"], "≥ 60 %"),
    ("quickstart wall time and peak RSS", ["bash", "benchmarks/quickstart_budget.sh", QUICKSTART_DIR],
     "≤ 10 min, ≤ 4 GB"),
    ("fast vs 100-epoch SGD linear evaluation",
     ["{python}", "benchmarks/linear_eval_speed.py", "--encoder", f"{QUICKSTART_DIR}/moco_v2_seed0",
      "--sgd-seeds", "3"],
     "≥ 20× faster, ≤ 0.5 points"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    args.python = str(Path(args.python).absolute())  # not resolve(): a venv's python is a symlink out of the venv
    environment = {**os.environ, "PYTHON": args.python}
    description = subprocess.run([args.python, "-c", "import common; print(common.machine())"], cwd=REPO / "benchmarks",
                                 capture_output=True, text=True, check=True).stdout.strip()
    sections, summary = [], []
    for title, command, goal in BENCHMARKS:
        command = [args.python if part == "{python}" else part for part in command]
        if "--encoder" in command and not (REPO / command[command.index("--encoder") + 1]).is_dir():
            # The quickstart did not leave its encoder: fall back to the benchmark's default encoder.
            del command[command.index("--encoder"):command.index("--encoder") + 2]
        start = time.perf_counter()
        print(f"== {title}: {' '.join(command)}", flush=True)
        result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True)
        minutes = (time.perf_counter() - start) / 60
        output = result.stdout.strip() or "(no output)"
        if result.returncode:
            output += f"\n\nexit status {result.returncode}; stderr (last lines):\n" + "\n".join(
                result.stderr.strip().splitlines()[-15:])
        print(output, flush=True)
        last = output.splitlines()[-1] if result.returncode == 0 else f"failed (exit {result.returncode})"
        summary.append(f"| {title} | {goal} | {last} |")
        shown = " ".join(command).replace(args.python, "python")
        sections.append(f"## {title}\n\n`{shown}` ({minutes:.1f} min)\n\n```\n{output}\n```\n")
        write_results(Path(args.output), description, summary, sections)
    print(f"wrote {args.output}")


def write_results(path: Path, description: str, summary: list[str], sections: list[str]) -> None:
    text = "\n".join([
        "# augbench benchmarks",
        "",
        f"Written by `make bench` (benchmarks/run_all.py) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Machine: {description}.",
        "",
        "Every ratio is measured side by side with its peer in the same run, on this machine.",
        "",
        "| benchmark | goal | result (the script's last line) |",
        "| --- | --- | --- |",
        *summary,
        "",
        *sections,
    ])
    path.write_text(text)


if __name__ == "__main__":
    main()
