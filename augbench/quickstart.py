"""`augbench quickstart`: MoCo v2 against a random encoder on Shapes World, in minutes on a CPU.

Each method (MoCo v2 by default; `presets` adds others, e.g. BYOL) is its
preset (configs/methods/) at the quickstart's scale (configs/quickstart.yaml),
trained once per seed; the random encoder of the same architecture is
initialised from each seed too. Every encoder is read on the quick suite,
whose tasks are rendered as the pretraining world is (`data.world`,
`data.image_size`). A finished run already in the output directory is reused
when its config is the one asked for; delete it to retrain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console

from augbench.analysis.tables import results_markdown, results_table
from augbench.config import ConfigError, shipped_config
from augbench.evaluate.evaluate import evaluate
from augbench.models.backbones import build_backbone
from augbench.models.io import load_encoder
from augbench.train.config import CONFIG_FILE, config_changes, load_config, read_status
from augbench.train.pretrain import pretrain

PRESETS = ("moco_v2",)
SUITE = "quick"


def quickstart(
    output_dir: Path = Path("runs/quickstart"),
    overrides: Sequence[str] = (),
    console: Console | None = None,
    seeds: Sequence[int] = (0,),
    presets: Sequence[str] = PRESETS,
    process_wide: bool = False,
) -> pd.DataFrame:
    """Pretrain `presets` (names in configs/methods/) with each of `seeds`, evaluate them and a random encoder;
    write results.csv and results.md (with several seeds, each cell is the median over seeds and its range).

    `overrides` (dot-list) apply to every run, e.g. a shorter schedule for a smoke test. Runs are named
    `<preset>_seed<N>` in `output_dir`. `process_wide`: as `augbench.pretrain`'s.
    """
    console = console or Console()
    start = time.perf_counter()
    results = []
    for seed in seeds:
        for preset in presets:
            config, _ = load_config(
                [shipped_config(f"methods/{preset}.yaml"), shipped_config("quickstart.yaml")],
                [f"name={preset}_seed{seed}", f"output_dir={output_dir}", *overrides, f"seed={seed}"],
            )
            world = [f"dataset_overrides.world={config.data.world}",
                     f"dataset_overrides.image_size={config.data.image_size}"]
            encoder = _trained(config, console, process_wide)
            results.append(evaluate(encoder, SUITE, name=preset, overrides=world).assign(seed=seed))
        torch.manual_seed(seed)
        random = evaluate(build_backbone(config.model), SUITE, name="random", overrides=world)
        results.append(random.assign(seed=seed))
    results = pd.concat(results, ignore_index=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    results.to_csv(output_dir / "results.csv", index=False)
    (output_dir / "results.md").write_text(results_markdown(results) + "\n")
    over = f"median of seeds {', '.join(map(str, seeds))} [min, max]" if len(seeds) > 1 else f"seed {seeds[0]}"
    console.print(results_table(results, title=f"quickstart on the '{SUITE}' suite: top-1 (%), R² × 100 for "
                                               f"scale and position; {over}"))
    console.print(f"{time.perf_counter() - start:.0f} s; results in {output_dir}/results.csv and results.md")
    return results


def _trained(config, console: Console, process_wide: bool):
    """The run's encoder: the finished run in its directory if it has this config, else trained now."""
    status = read_status(config.run_dir)
    if not (status and status["state"] == "finished"):
        console.rule(f"pretraining {config.name}")
        return pretrain(config, process_wide=process_wide).encoder
    changed = config_changes(config.run_dir / CONFIG_FILE, config)
    if changed:
        raise ConfigError(f"{config.run_dir}: holds a finished run with another config (differs at {changed}); "
                          "delete it or choose another --output-dir")
    console.print(f"[bold]{config.name}[/]: reusing the finished run in {config.run_dir}")
    return load_encoder(config.run_dir)[0]
