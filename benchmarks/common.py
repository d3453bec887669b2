"""What every benchmark shares: the machine's description, a timer, and the images both sides get."""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from augbench.data.shapes_world import ShapesWorldConfig, load_shapes_world
from augbench.train.config import PretrainConfig, load_config
from augbench.train.memory import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPU model, cores, torch version and threads, for the first line of every benchmark's output."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
        if "avx512_bf16" in flags:
            model += " (avx512_bf16)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def process_memory(default_malloc: bool) -> str:
    """Set the process's host memory up as `augbench pretrain` does (`trainer.keep_freed_memory`) and say how.

    Process-wide, so both sides of a comparison run under it. `default_malloc`
    leaves glibc's defaults, to measure what the setting is worth.
    """
    if default_malloc:
        return "host memory: glibc malloc defaults (--default-malloc)"
    if keep_freed_memory():
        return "host memory: freed memory kept in the process (trainer.keep_freed_memory, both sides)"
    return "host memory: malloc defaults (no glibc mallopt here)"


def add_default_malloc_option(parser: argparse.ArgumentParser) -> None:
    """`--default-malloc`, passed on to `process_memory`."""
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc defaults instead of keeping freed memory as augbench pretrain does")


def shapes_world_images(count: int, size: int) -> torch.Tensor:
    """`count` Shapes World images (count, 3, size, size) uint8: the quickstart's data, at any size."""
    config = ShapesWorldConfig(image_size=size, train_size=count, val_size=1, test_size=1)
    return load_shapes_world(config, "train").images


def best_rates(runs: Sequence[Callable[[], int]], repeats: int, warmup: int = 1) -> list[float]:
    """Items per second of each run (which returns how many items it processed): the best of `repeats` timings.

    The best of several repeats, not the mean, because the machine is shared:
    the fastest repeat is the one least disturbed by other processes. The runs
    take turns, one repeat each, so a slow spell of the machine (seen here: the
    same loop 1.6x slower for a minute) slows every side alike instead of
    landing on one.
    """
    for run in runs:
        for _ in range(warmup):
            run()
    rates = [[] for _ in runs]
    for _ in range(repeats):
        for run, run_rates in zip(runs, rates):
            start = time.perf_counter()
            count = run()
            run_rates.append(count / (time.perf_counter() - start))
    return [max(run_rates) for run_rates in rates]


def augbench_config(method: str, size: int, batch: int, width: float) -> PretrainConfig:
    """A method preset of configs/methods with the benchmark's ResNet-18 width (CIFAR stem up to 64 px) and batch."""
    overrides = [f"model.width={width}", f"model.cifar_stem={size <= 64}", f"trainer.batch_size={batch}"]
    config, _ = load_config(REPO / "configs" / "methods" / f"{method}.yaml", overrides)
    return config


def autocast(precision: str, device: str = "cpu"):
    """bf16 autocast on `device` for "bf16", nothing for "fp32"."""
    return torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def gpu_name(device: str) -> str | None:
    """The CUDA device's name and memory, for a benchmark's first lines; None on a CPU."""
    if device != "cuda":
        return None
    properties = torch.cuda.get_device_properties(0)
    return f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
