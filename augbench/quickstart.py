"""`augbench quickstart`: MoCo v2 and BYOL against a random encoder, on Shapes World, in minutes on a CPU.

Each method is its preset (configs/methods/) at the quickstart's scale
(configs/quickstart.yaml). A finished run already in the output directory is
reused rather than trained again; delete it to retrain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console

from augbench.analysis.tables import results_markdown, results_table
from augbench.config import shipped_config
from augbench.evaluate.evaluate import evaluate
from augbench.models.backbones import build_backbone
from augbench.models.io import load_encoder
from augbench.train.pretrain import load_config, pretrain, read_status

PRESETS = ("moco_v2", "byol")
SUITE = "quick"


def quickstart(
    output_dir: Path = Path("runs/quickstart"), overrides: Sequence[str] = (), console: Console | None = None
) -> pd.DataFrame:
    """Pretrain the presets, evaluate them and a random encoder; write results.csv and results.md.

    `overrides` (dot-list) apply to both runs, e.g. a shorter schedule for a smoke test.
    """
    console = console or Console()
    start = time.perf_counter()
    results = []
    for preset in PRESETS:
        config, _ = load_config(
            [shipped_config(f"methods/{preset}.yaml"), shipped_config("quickstart.yaml")],
            [f"name={preset}", f"output_dir={output_dir}", *overrides],
        )
        status = read_status(config.run_dir)
        if status and status["state"] == "finished":
            console.print(f"[bold]{preset}[/]: reusing the finished run in {config.run_dir}")
            encoder, _ = load_encoder(config.run_dir)
        else:
            console.rule(f"pretraining {preset}")
            encoder = pretrain(config).encoder
        results.append(evaluate(encoder, SUITE, name=preset))
    torch.manual_seed(config.seed)
    results.append(evaluate(build_backbone(config.model), SUITE, name="random"))
    results = pd.concat(results, ignore_index=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    results.to_csv(output_dir / "results.csv", index=False)
    (output_dir / "results.md").write_text(results_markdown(results) + "\n")
    console.print(results_table(results, title=f"quickstart: top-1 accuracy (%) on the '{SUITE}' suite"))
    console.print(f"{time.perf_counter() - start:.0f} s; results in {output_dir}/results.csv and results.md")
    return results
