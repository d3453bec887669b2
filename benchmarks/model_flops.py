"""Achieved model FLOP/s of augbench's training step as a fraction of this machine's matmul peak, same run.

The step is pretrain_throughput.py's augbench MoCo v2 step (views augmented on
the device, forward of both branches, backward, SGD step, EMA update).
`torch.utils.flop_counter.FlopCounterMode` counts the model's FLOPs of one
step (convolutions and matmuls, forward and backward, as direct products;
augmentation and the optimiser count as time, not FLOPs); achieved = FLOPs per
step / seconds per step, of the fastest of `--steps` steps. The peak is the
fastest large matrix product measured here, in turns with those steps, in
fp32 (and in bf16 for the bf16-autocast step, whose matmuls run in bf16),
through both of torch's CPU GEMM libraries: MKL (`torch.mm`) and oneDNN (a
1×1 convolution over a channels-last map is one GEMM), the library the
convolutions run on. Both count: MKL picks slower code paths on non-Intel
CPUs (on an AMD EPYC, MKL's fp32 `mm` reaches about half of oneDNN's GEMM),
so `torch.mm` alone understates the peak and lets the step exceed 100 %.
For the fp32 step it also prints the share of the step's time spent in the
counted products and their own fraction of the peak: what is left to gain
outside them is memory traffic (BatchNorm, activations, adds), which thin
layers have most of per FLOP; and the time the 60 % goal leaves for that
traffic, augmentation and optimiser beside the products' own. The fp32 step
also runs with its backbones compiled, as `trainer.compile_model` trains,
which fuses that traffic: timed in turns with the eager step and the same peak
products, compiled before the timing, and credited with the eager step's FLOPs
(it multiplies the same products).
Prints, last, achieved / fp32 peak of the eager and the compiled fp32 step for each width.
Usage: python benchmarks/model_flops.py [--widths 0.25 1.0] [--size 32] [--batch 128]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from common import (
    add_default_malloc_option,
    augbench_config,
    autocast,
    best_rates,
    machine,
    process_memory,
    shapes_world_images,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from augbench.augment.kinds import build_views
from augbench.augment.views import to_float
from augbench.methods import build_method
from augbench.models.backbones import build_backbone
from augbench.optim import build_optimizer
from augbench.train.module import compile_backbones

aten = torch.ops.aten
COMPILED = "fp32, backbones compiled"
GOAL = 0.6  # of the fp32 peak: the README's goal for the step
PRODUCTS = frozenset({aten.convolution, aten.convolution_backward, aten.mm, aten.addmm, aten.bmm})


def gemm_runs(dtype: torch.dtype, sizes: tuple[int, ...] = (2048, 4096)) -> dict[str, Callable[[], int]]:
    """n × n by n × n products through each GEMM library, by "library n"; each run returns the FLOPs it did."""
    runs = {}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        # (1, n, 32, 32) channels-last is a (1024 × n) matrix; the 1×1 convolution multiplies it by (n × n).
        pixels = torch.randn(1, n, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(n, n, 1, 1, dtype=dtype)
        runs[f"MKL mm {n}"] = counting(partial(torch.mm, a, b), 2 * n**3)
        runs[f"oneDNN GEMM {n}"] = counting(partial(F.conv2d, pixels, weight), 2 * n * n * 1024)
    return runs


def counting(run: Callable[[], object], flops: int) -> Callable[[], int]:
    def counted() -> int:
        run()
        return flops

    return counted


def training_step(width: float, size: int, batch: int, precision: str, compiled: bool = False):
    config = augbench_config("moco_v2", size, batch, width)
    model = build_method(config.method, build_backbone(config.model)).to(memory_format=torch.channels_last)
    if compiled:
        compile_backbones(model)
    recipe = build_views(config.augment, size)
    optimizer = build_optimizer(model, config.optim, batch)
    images = shapes_world_images(batch, size)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        views = recipe(to_float(images).contiguous(memory_format=torch.channels_last), generator)
        with autocast(precision):
            loss = model(views)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_target(0.5)

    return step


def step_flops(step: Callable[[], None]) -> int:
    step()
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


class ProductTimer(TorchDispatchMode):
    """Seconds spent in the ops FlopCounterMode counts (convolutions and matrix products, forward and backward).

    Timed at torch's dispatch rather than by torch.profiler, whose CPU-only
    runs print GPU-probe errors into the benchmark's output; on the CPU each
    op has finished when it returns, so the clock around it is its time.
    """

    def __init__(self):
        super().__init__()
        self.seconds = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket not in PRODUCTS:
            return func(*args, **(kwargs or {}))
        start = time.perf_counter()
        result = func(*args, **(kwargs or {}))
        self.seconds += time.perf_counter() - start
        return result


def observed(step: Callable[[], None], flops: int) -> tuple[Callable[[], int], list[float]]:
    """A run of `step` under ProductTimer, for best_rates, and the list it appends each run's product seconds to.

    It takes its turns with the unobserved step and the peak products, so all
    three see the same spells of the machine. Only the products' own time is
    read from it: the dispatch mode's Python hop on every op slows the step
    around them.
    """
    seconds = []

    def run() -> int:
        with ProductTimer() as timer:
            step()
        seconds.append(timer.seconds)
        return flops

    return run, seconds


def peak(rates: dict[str, float], library: str) -> float:
    return max(rate for name, rate in rates.items() if name.startswith(library))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    add_default_malloc_option(parser)
    args = parser.parse_args()
    print(machine())
    print(process_memory(args.default_malloc))
    gemms = {"fp32": gemm_runs(torch.float32), "bf16": gemm_runs(torch.bfloat16)}
    fractions = {}
    for width in args.widths:
        for precision in ("fp32", "bf16"):
            steps = {precision: training_step(width, args.size, args.batch, precision)}
            if precision == "fp32":
                steps[COMPILED] = training_step(width, args.size, args.batch, precision, compiled=True)
            # Counted on the eager step: the compiled one multiplies the same products.
            flops = step_flops(steps[precision])
            if COMPILED in steps:
                steps[COMPILED]()  # compiles
            # The peaks are measured in turns with the steps, so that a slow spell of the machine (the same loop
            # 1.6x slower for a minute) slows both sides of the fraction alike instead of landing on one.
            dtypes = ["fp32"] if precision == "fp32" else ["fp32", precision]
            runs = {variant: counting(step, flops) for variant, step in steps.items()}
            if precision == "fp32":  # the eager step only: a dispatch mode around compiled code would recompile it
                runs["observed step"], product_seconds = observed(steps[precision], flops)
            runs |= {f"{dtype} {name}": run for dtype in dtypes for name, run in gemms[dtype].items()}
            rates = dict(zip(runs, best_rates(list(runs.values()), args.steps)))
            peaks = {dtype: peak(rates, f"{dtype} ") for dtype in dtypes}
            for dtype in dtypes:
                print(f"  {dtype} matmul peak beside it (2048² and 4096²): " + ", ".join(
                    f"{library} {peak(rates, f'{dtype} {library}') / 1e9:.0f}" for library in ("MKL mm", "oneDNN GEMM")
                ) + " GFLOP/s")
            for variant in steps:
                rate = rates[variant]
                own_peak = "" if precision == "fp32" else f", {100 * rate / peaks[precision]:.0f} % of {precision} peak"
                print(f"ResNet-18 width {width}, {args.size} px, batch {args.batch}, {variant}: "
                      f"{flops / 1e9:.1f} GFLOP/step in {flops / rate:.2f} s = {rate / 1e9:.0f} GFLOP/s, "
                      f"{100 * rate / peaks['fp32']:.0f} % of fp32 peak{own_peak}", flush=True)
                fractions[width, variant] = rate / peaks["fp32"]
            if precision == "fp32":
                rate, products = rates[precision], min(product_seconds)
                print(f"  eager, of which convolutions and matrix products: {100 * products * rate / flops:.0f} % of "
                      f"the step's time, at {100 * flops / products / peaks['fp32']:.0f} % of fp32 peak; the rest "
                      "(BatchNorm, activations, residual adds, augmentation, optimiser) moves memory rather than "
                      "multiplying", flush=True)
                goal_seconds = flops / (GOAL * peaks["fp32"])
                print(f"  at {100 * GOAL:.0f} % of the fp32 peak the step takes {1e3 * goal_seconds:.0f} ms; its "
                      f"products alone take {1e3 * products:.0f} ms, which leaves {1e3 * (goal_seconds - products):.0f}"
                      " ms for all the rest", flush=True)
    print("achieved model FLOP/s / fp32 matmul peak (MoCo v2 step, fp32; eager / trainer.compile_model): " + ", ".join(
        f"width {width} {100 * fractions[width, 'fp32']:.0f} % / {100 * fractions[width, COMPILED]:.0f} %"
        for width in args.widths))


if __name__ == "__main__":
    main()
