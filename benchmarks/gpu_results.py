"""The GPU section of benchmarks/RESULTS.md, from the logs benchmarks/gpu_check.sh left in its work folder.

Replaces the section of an earlier GPU run (from its `## GPU` heading to the
next heading of its level), so the CPU sections written by `make bench` stay.
Usage: python benchmarks/gpu_results.py WORK_DIR RESULTS_MD
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import time
from pathlib import Path

PRESETS = {"moco_v2": ("MoCo v2", 25_000), "byol": ("BYOL", 15_000)}
PEER_FACTOR = 8  # the goal: `augbench pretrain` at ≥ 8× lightly's loop on the same GPU in the same run
QUICKSTART_GOAL_S = 45
FIRST_STEPS_LEFT_OUT = 50  # cuDNN's algorithm search and the allocator's growth fall in these


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def pretrain_rate(run_dir: Path) -> float | None:
    """The median of `train/images_per_s` logged after the first FIRST_STEPS_LEFT_OUT steps (all, if none is)."""
    path = run_dir / "logs" / "csv" / "metrics.csv"
    if not path.is_file():
        return None
    with open(path) as file:
        logged = [(int(row["step"]), float(row["train/images_per_s"])) for row in csv.DictReader(file)
                  if row.get("train/images_per_s")]
    later = [rate for step, rate in logged if step >= FIRST_STEPS_LEFT_OUT] or [rate for _, rate in logged]
    return statistics.median(later) if later else None


def lightly_rates(throughput_log: str) -> dict[str, float]:
    """lightly's best images/s per method, from pretrain_throughput.py's `best:` lines."""
    found = re.finditer(r"px (\w+)\s+best: augbench [\d.]+ \(\w+\) / lightly ([\d.]+)", throughput_log)
    return {match.group(1): float(match.group(2)) for match in found}


def section(work: Path) -> str:
    logs = work / "logs"
    machine = [line for line in read(logs / "machine.log").splitlines() if line.strip()]
    gpu = machine[1] if len(machine) > 1 else "no GPU found"
    throughput = read(logs / "throughput.log")
    peers = lightly_rates(throughput)
    rows = []
    for preset, (label, goal) in PRESETS.items():
        rate = pretrain_rate(work / "runs" / preset)
        peer = peers.get(preset)
        measured = "not measured" if rate is None else f"{rate:,.0f}"
        versus = "not measured" if rate is None or not peer else f"{rate / peer:.2f}× ({peer:,.0f} for lightly)"
        rows.append(f"| `augbench pretrain` {label}, images/s | ≥ {goal:,} | {measured} |")
        rows.append(f"| `augbench pretrain` {label} / lightly's loop | ≥ {PEER_FACTOR}× | {versus} |")
    wall = re.search(r"quickstart wall: (\d+) ms", read(logs / "quickstart.log"))
    rows.append(f"| `augbench quickstart` wall time | ≤ {QUICKSTART_GOAL_S} s | "
                f"{'not measured' if wall is None else f'{int(wall.group(1)) / 1000:.1f} s'} |")
    last_line = throughput.strip().splitlines()[-1] if throughput.strip() else "not measured"
    rows.append(f"| hand loop vs lightly's loop (`pretrain_throughput.py --device cuda`) | | {last_line} |")
    tests = [line for line in read(logs / "gpu_tests.log").splitlines()
             if re.search(r"\d+ (passed|failed|skipped)", line)]
    rows.append(f"| GPU tests (`pytest -m gpu tests/train/test_gpu.py`) | all pass | "
                f"{tests[-1].strip('= ') if tests else 'not run'} |")
    steps = [line.split() for line in read(logs / "steps.txt").splitlines() if line.strip()]
    step_rows = [f"| {name} | {status} | {seconds} s |" for name, status, seconds in steps]
    blocks = [f"### {name}\n\n```\n{read(logs / f'{name}.log').strip()[-4000:]}\n```"
              for name in ("throughput", "gpu_tests") if read(logs / f"{name}.log").strip()]
    return "\n".join([
        f"## GPU: {gpu}",
        "",
        f"Written by `benchmarks/gpu_check.sh` on {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; "
        f"{machine[0] if machine else ''}. ResNet-18 with the CIFAR stem, width 1.0, 32 px, batch 512, bf16 autocast, "
        "Shapes World. `augbench pretrain` runs MoCo v2 and BYOL over configs/quickstart.yaml for 200 steps; its "
        f"images/s is the median of `train/images_per_s` logged after step {FIRST_STEPS_LEFT_OUT}.",
        "",
        "| measurement | goal | result |",
        "| --- | --- | --- |",
        *rows,
        "",
        "| step of gpu_check.sh | status | time |",
        "| --- | --- | --- |",
        *step_rows,
        "",
        *[f"{block}\n" for block in blocks],
    ])


def replace_section(document: str, new_section: str) -> str:
    """`document` with its `## GPU` section replaced by `new_section`, or with it appended."""
    lines = document.rstrip("\n").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## GPU")), None)
    if start is None:
        return "\n".join(lines) + "\n\n" + new_section.rstrip("\n") + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    kept = lines[:start] + new_section.rstrip("\n").splitlines() + ([""] + lines[end:] if end < len(lines) else [])
    return "\n".join(kept) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="gpu_check.sh's work folder (runs/gpu-check)")
    parser.add_argument("results", type=Path, help="the RESULTS.md to write the section into")
    args = parser.parse_args()
    new_section = section(args.work)
    args.results.write_text(replace_section(read(args.results), new_section))
    print(new_section.split("\n| step of")[0])


if __name__ == "__main__":
    main()
