"""A results store filled through the store's own API with numbers of a known structure."""

import json
import zlib

import numpy as np
import pytest
import yaml

from augbench.analysis.queue import CellQueue, owner_id
from augbench.analysis.store import ResultsStore

METHODS = {"moco_v2": {"method": {"negatives": "queue", "predictor": {"enabled": False}}},
           "byol": {"method": {"negatives": "none", "predictor": {"enabled": True}}},
           "simclr": {"method": {"negatives": "batch", "predictor": {"enabled": False}}}}
DATASETS = ("photo", "flat", "digits")
SEEDS = (0, 1)
TASKS = {"shape": "semantic/image", "hue": "structural/image", "count": "structural/image", "mask": "structural/pixel"}
METHOD_SHIFT = {"moco_v2": 0.0, "byol": 4.0, "simclr": 2.0}
DATASET_SHIFT = {"photo": 10.0, "flat": 5.0, "digits": 0.0}


def expected_value(method: str, dataset: str, seed: int, task: str) -> float:
    """shape and count rise with the encoder's quality; hue falls with it; mask is noise around 50."""
    quality = METHOD_SHIFT[method] + DATASET_SHIFT[dataset]
    noise = np.random.default_rng(zlib.crc32(f"{method}{dataset}{seed}{task}".encode())).normal(0, 0.5)
    return {"shape": 40 + quality, "hue": 80 - quality, "count": 20 + 2 * quality,
            "mask": 50 + 5 * noise}[task] + noise


# The random encoder's scores (random=True): every encoder beats it on shape; none on hue, which falls as the
# encoders improve; on count all but moco_v2 · digits (quality 0) do; mask is noise around it.
RANDOM_VALUE = {"shape": 30.0, "hue": 80.0, "count": 20.0, "mask": 50.0}


def random_value(seed: int, task: str) -> float:
    return RANDOM_VALUE[task] + np.random.default_rng(zlib.crc32(f"random{seed}{task}".encode())).normal(0, 0.5)


def fill_store(path, probes: bool = False, random: bool = False) -> ResultsStore:
    store = ResultsStore(path, create=True)
    config = {"name": "synthetic", "methods": {m: {} for m in METHODS}, "reference_task": "shape",
              "protocol": "linear", "comparisons": [["moco_v2", "byol"]]}
    store.set_meta(benchmark="synthetic", source="tests", small="False", config=yaml.safe_dump(config))
    cells = [{"cell_id": f"{m}__{d}__seed{s}__quick", "method": m, "dataset": d, "seed": s, "suite": "quick",
              "run_name": f"{m}__{d}__seed{s}"} for m in METHODS for d in DATASETS for s in SEEDS]
    if random:
        store.set_meta(baselines=json.dumps(dict.fromkeys(METHODS, "random")))
        cells += [{"cell_id": f"random__none__seed{s}__quick", "method": "random", "dataset": "none", "seed": s,
                   "suite": "quick", "run_name": f"random__none__seed{s}"} for s in SEEDS]
    queue = CellQueue(store)
    queue.add_cells(cells)
    owner = owner_id("test")
    while (cell := queue.claim(owner, lease_seconds=60)) is not None:
        is_random = cell["method"] == "random"
        run_config = {"name": cell["run_name"], "seed": cell["seed"], "model": {"name": "resnet18", "width": 0.25},
                      "trainer": {"max_epochs": 4, "batch_size": 128, "max_steps": -1},
                      "optim": {"name": "sgd", "lr": 0.05}, **METHODS.get(cell["method"], {})}
        if is_random:
            run_config = {"name": cell["run_name"], "seed": cell["seed"], "pretraining": "none: random initialisation",
                          "model": {"name": "resnet18", "width": 0.25}}
        store.record_run({"run_name": cell["run_name"], "method": cell["method"], "dataset": cell["dataset"],
                          "seed": cell["seed"], "run_dir": f"runs/{cell['run_name']}",
                          "config": yaml.safe_dump(run_config),
                          "code_version": "test", "environment": "{}", "state": "finished"})
        records = []
        for task, category in TASKS.items():
            for protocol in ("knn", "linear"):
                value = (random_value(cell["seed"], task) if is_random
                         else expected_value(cell["method"], cell["dataset"], cell["seed"], task))
                records.append({"task": task, "category": category, "kind": "standard", "protocol": protocol,
                                "metric": "top1", "value": value - (3 if protocol == "knn" else 0),
                                "budget": json.dumps({"train_images": 1000}), "seed": cell["seed"], "eval_seed": 0,
                                "settings": json.dumps({"k": 20} if protocol == "knn" else {"max_iter": 100}),
                                "n_train": 1000, "n_test": 200, "higher_is_better": True})
        if probes:
            for stage in ("layer1", "layer2", "layer3", "layer4"):
                for augmentation in ("crop", "color_jitter"):
                    depth = int(stage[-1])
                    records.append({"task": f"invariance/{augmentation}", "category": "probe", "kind": "invariance",
                                    "protocol": f"cosine@{stage}", "metric": "cosine",
                                    "value": 1 - 0.1 * depth * (2 if augmentation == "crop" else 1),
                                    "budget": "{}", "seed": cell["seed"], "n_test": 100,
                                    "details": json.dumps({"augmentation": augmentation, "stage": stage})})
        assert queue.finish(cell["cell_id"], owner, cell["run_name"], records)
    return store


@pytest.fixture
def filled_store(tmp_path):
    store = fill_store(tmp_path / "bench" / "results.sqlite", probes=True)
    yield store
    store.close()
