"""Which Shapes World designs let a preset learn the object: shape read by a linear probe, pretrained minus random.

Each design is a set of `data.*` settings. For every (design, seed) the script
pretrains a method preset at the quickstart's scale (configs/quickstart.yaml,
seed-specific), evaluates it on the quick suite's shape, hue and orientation
tasks rendered in the same world, and evaluates the randomly initialised
encoder of the same seed; the measure is the gap, since an easier world lifts
the random encoder too. Records are appended to a JSON-lines file as they
finish, so an interrupted run resumes; `--table` writes the markdown summary
(median over seeds of each gap, with its range) from that file.

Usage: python benchmarks/world_learnability.py [--designs NAME ...] [--seeds 0 1 2] [--epochs 6]
       [--records benchmarks/world_learnability.jsonl] [--table docs/world_learnability.md]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from augbench.config import shipped_config
from augbench.evaluate.evaluate import evaluate
from augbench.models.backbones import build_backbone
from augbench.train.config import load_config
from augbench.train.pretrain import pretrain

REPO = Path(__file__).resolve().parents[1]
FLAT = ["textures=[flat]", "backgrounds=[flat]", "hue_palette=12", "saturation=[0.8,0.8]", "value=[0.9,0.9]",
        "scale=[0.7,0.95]"]
ONE_OBJECT = ["objects=[1,1]", "shared_pose=false", "hue_per_object=false"]
DESIGNS = {
    "photo_backgrounds": ["world=photo_backgrounds"],
    "palette, one large object": ["world=objects", *FLAT, "flat_greys=[0.3,0.5,0.7]", *ONE_OBJECT],
    "palette, pale object on dark greys": ["world=objects", *FLAT[:2], "hue_palette=12", "saturation=[0.3,0.3]",
                                           "value=[0.95,0.95]", "scale=[0.7,0.95]", "flat_greys=[0.1,0.2,0.3]",
                                           *ONE_OBJECT],
    "objects (4 copies, a palette hue each)": ["world=objects"],
}
TASKS = "shape,hue,orientation"


def measure(design: str, settings: list[str], seed: int, preset: str, epochs: int, random: bool,
            output_dir: Path) -> dict:
    config, _ = load_config([shipped_config(f"methods/{preset}.yaml"), shipped_config("quickstart.yaml")],
                            [f"name={design.replace(' ', '_')}_{preset}_e{epochs}_s{seed}", f"output_dir={output_dir}",
                             f"seed={seed}", f"trainer.max_epochs={max(1, epochs)}", *[f"data.{s}" for s in settings]])
    start = time.time()
    if random:
        torch.manual_seed(seed)
        encoder, who = build_backbone(config.model), "random"
    else:
        encoder, who = pretrain(config, process_wide=True).encoder, preset
    trained = time.time() - start
    overrides = [f"tasks=[{TASKS}]", *[f"dataset_overrides.{s}" for s in settings]]
    results = evaluate(encoder, "quick", name=who, overrides=overrides, progress=False)
    scores = {f"{t}/{p}": round(v, 1) for t, p, v in zip(results.task, results.protocol, results.value)}
    return {"design": design, "who": who, "seed": seed, "epochs": epochs, "train_s": round(trained), **scores}


def table(records: pd.DataFrame) -> str:
    """Per design and epochs: the preset's and the random encoder's median shape (linear, kNN), and the median
    gap over the seeds both were measured with, with its range."""
    rows = []
    for (design, epochs), group in records.groupby(["design", "epochs"], sort=False):
        trained, random = group[group.who != "random"], records[(records.design == design) & (records.who == "random")]
        paired = trained.merge(random, on="seed", suffixes=("", "_random"))
        if paired.empty:
            continue
        row = {"design": design, "epochs": epochs, "seeds": ", ".join(map(str, sorted(paired.seed)))}
        for key in ("shape/linear", "shape/knn", "hue/linear", "orientation/linear"):
            gap = paired[key] - paired[f"{key}_random"]
            row[key] = f"{paired[key].median():.1f} vs {paired[f'{key}_random'].median():.1f}"
            row[f"{key} gap"] = f"{gap.median():+.1f} [{gap.min():+.1f}, {gap.max():+.1f}]"
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", nargs="*", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6, help="pretraining epochs (the quickstart's: 6)")
    parser.add_argument("--preset", default="moco_v2")
    parser.add_argument("--records", type=Path, default=REPO / "benchmarks" / "world_learnability.jsonl")
    parser.add_argument("--table", type=Path, help="write the markdown summary of --records here and exit")
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "world_learnability")
    args = parser.parse_args()
    if args.table:
        records = pd.read_json(args.records, lines=True)
        args.table.write_text(table(records) + "\n")
        print(args.table.read_text())
        return
    done = set()
    if args.records.is_file():
        done = {(r["design"], r["who"], r["seed"], r["epochs"]) for r in map(json.loads, args.records.open())}
    for design in args.designs:
        for seed in args.seeds:
            for random, who in ((False, args.preset), (True, "random")):
                if (design, who, seed, 0 if random else args.epochs) in done:
                    continue
                record = measure(design, DESIGNS[design], seed, args.preset, 0 if random else args.epochs, random,
                                 args.output_dir)
                print(json.dumps(record), flush=True)
                with args.records.open("a") as file:
                    file.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
