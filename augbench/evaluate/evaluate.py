"""`augbench.evaluate(encoder_or_checkpoint, suite) -> DataFrame`: a frozen encoder on a suite of end tasks.

Each split's images are encoded once and the features shared by every task
and protocol that reads that dataset. One record per (task, protocol) says
what was measured (metric, value, details such as a confidence interval or
per-corruption scores), how (protocol settings, budget, seed, dataset
config, split sizes) and on what (encoder name, a hash of its weights, its
source, augbench's version).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

import augbench
from augbench.config import check_device
from augbench.errors import DataError
from augbench.evaluate.suite import SuiteConfig, TaskConfig, load_suite, protocol_config
from augbench.evaluate.tasks import Context, run_task
from augbench.files import StorageError, check_writable, write_atomic
from augbench.metrics import METRICS
from augbench.models.io import check_finite, read_encoder

logger = logging.getLogger(__name__)


def encoder_identity(encoder: nn.Module) -> str:
    """First 16 hex digits of a SHA-256 over the state dict (names, shapes, dtypes, values): same weights, same id."""
    digest = hashlib.sha256(type(encoder).__name__.encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def evaluate(
    encoder_or_checkpoint: nn.Module | str | Path,
    suite: str | Path = "quick",
    *,
    name: str | None = None,
    device: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    output: str | Path | None = None,
    allow_unfinished: bool = False,
) -> pd.DataFrame:
    """Evaluate a frozen encoder on every task of `suite`; one row per (task, protocol).

    `encoder_or_checkpoint` is any module mapping float images in [0, 1]
    (B, 3, H, W) to features (B, D), or a run directory / `.safetensors` /
    `.ckpt` path. `suite` is a name from configs/suites/ or a YAML path;
    `overrides` are dot-list edits of the suite (e.g. `knn.k=200`). The
    encoder's weights, train/eval mode and BatchNorm statistics are left as
    they were (fine-tuning trains a copy).

    `output`: a CSV to write the records to. While the suite runs, the
    records of the tasks done so far are rewritten after each task to
    `<stem>.unfinished.csv` beside it, renamed to `output` after the last
    task; an error or a kill part-way keeps them there and leaves an earlier
    `output` as it was. Run again, the evaluation takes from that file the
    records of every task it would compute the same way (the same encoder
    weights, and the same task, protocol settings, seed and batch size, by
    `task_fingerprint`) and computes only the rest.

    A run directory whose run did not finish (no encoder file, only a
    checkpoint from mid-training) is refused unless `allow_unfinished`. Every
    record says where its weights come from: `weights` is "final",
    "mid-training" (a checkpoint before the end of training, with
    `weights_step` and `weights_epoch`), "external" (another codebase's
    file or a spec) or "module" (an encoder passed in); weights with a NaN or
    infinite value are refused before any task runs.
    """
    check_device(device, "device")
    if output is not None:
        output = Path(output)
        if output.is_dir():
            raise StorageError(errno.EISDIR, "is a directory; give the CSV file to write", str(output))
        check_writable(output.parent, "output")  # before any task is computed, not after
    if isinstance(encoder_or_checkpoint, nn.Module):
        encoder, source = encoder_or_checkpoint, f"module:{type(encoder_or_checkpoint).__name__}"
        check_finite(encoder.state_dict(), source)
        origin = {"weights": "module", "step": None, "epoch": None}
    else:
        encoder, _, origin = read_encoder(encoder_or_checkpoint, allow_unfinished=allow_unfinished)
        source = str(encoder_or_checkpoint)
    if origin["weights"] == "mid-training":
        logger.warning("%s: evaluating weights from mid-training (step %s, epoch %s); the records say so", source,
                       origin["step"], origin["epoch"])
    weights = {"weights": origin["weights"], "weights_step": origin["step"], "weights_epoch": origin["epoch"]}
    name = name or (Path(source).stem if not source.startswith("module:") else source)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    config, tasks = load_suite(suite, overrides)
    encoder = encoder.to(device)
    identity = encoder_identity(encoder)
    context = Context(encoder, device, config)
    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    unfinished = None if output is None else Path(output).with_suffix(".unfinished.csv")
    finished = _finished_records(unfinished, identity)
    with Progress(*columns, disable=not progress, transient=True) as bar:
        job = bar.add_task(f"{name}", total=len(tasks))
        for done, task in enumerate(tasks):
            fingerprint = task_fingerprint(config, task)
            if fingerprint in finished:
                rows.extend({**record, "encoder": name, "source": source, **weights}
                            for record in finished[fingerprint])
                logger.info("%s: the records of %s are taken from %s", name, task.name, unfinished)
                bar.advance(job)
                continue
            bar.update(job, description=f"{name} · {config.name} · {task.name} ({task.kind})")
            start = time.perf_counter()
            try:
                results = run_task(task, context)
            except Exception as error:
                if done and unfinished is not None:
                    error.add_note(f"the records of the tasks finished before {task.name!r} are in {unfinished}")
                raise
            seconds = (time.perf_counter() - start) / max(1, len(results))
            seed = config.seed if task.seed is None else task.seed
            for result in results:
                rows.append({
                    "encoder": name,
                    "encoder_id": identity,
                    "task": f"{task.name}/{result.subtask}" if result.subtask else task.name,
                    "category": task.category,
                    "kind": task.kind,
                    "label": task.label,
                    "target": task.target,
                    "protocol": result.protocol,
                    "metric": result.metric,
                    "value": result.value,
                    "higher_is_better": METRICS[result.metric].higher_is_better if result.metric in METRICS
                    else True,
                    "details": json.dumps(result.details, sort_keys=True, default=str),
                    "settings": json.dumps(result.settings, sort_keys=True, default=str),
                    "budget": json.dumps(result.budget, sort_keys=True, default=str),
                    "dataset": json.dumps(asdict(task.dataset), sort_keys=True),
                    **{key: result.sizes.get(key, 0) for key in ("n_train", "n_val", "n_test")},
                    "seed": seed,
                    "suite": config.name,
                    "source": source,
                    **weights,
                    "seconds": seconds,
                    "augbench": augbench.__version__,
                    "task_fingerprint": fingerprint,
                })
            if unfinished is not None:
                _save_records(rows, unfinished)
            context.keep_only(tasks[done + 1 :])
            bar.advance(job)
    records = pd.DataFrame(rows)
    if unfinished is not None:
        try:
            os.replace(unfinished, output)
        except OSError as error:
            raise StorageError(error.errno, f"could not write the records ({error.strerror}); all {len(rows)} are "
                               f"in {unfinished}", str(output)) from None
    return records


def _save_records(rows: list[dict], unfinished: Path) -> None:
    """Rewrite the records so far; a failed write leaves the earlier tasks' records in the file as they were."""
    try:
        write_atomic(lambda file: pd.DataFrame(rows).to_csv(file, index=False), unfinished)
    except OSError as error:
        kept = "those of the earlier tasks are still in it" if unfinished.is_file() else "no record was kept"
        raise StorageError(error.errno, f"could not write the records ({error.strerror}); {kept}",
                           str(unfinished)) from None


def task_fingerprint(suite: SuiteConfig, task: TaskConfig) -> str:
    """16 hex digits of a SHA-256 over everything that decides a task's records besides the encoder: the task's
    config, each of its protocols' settings, the suite's seed and batch size."""
    protocols = {protocol: asdict(protocol_config(suite, task, protocol)) for protocol in task.protocols}
    described = {"task": asdict(task), "protocols": protocols, "seed": suite.seed, "batch_size": suite.batch_size}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished_records(unfinished: Path | None, encoder_id: str) -> dict[str, list[dict]]:
    """The records of an interrupted evaluation of the same encoder, by task fingerprint."""
    if unfinished is None or not unfinished.is_file():
        return {}
    try:
        earlier = pd.read_csv(unfinished, dtype={"encoder_id": str, "task_fingerprint": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{unfinished}: cannot read the records of an earlier, interrupted evaluation "
                        f"({type(error).__name__}: {str(error).strip()}); delete it to evaluate afresh") from None
    if not {"encoder_id", "task_fingerprint"} <= set(earlier.columns):
        return {}
    earlier = earlier[earlier.encoder_id == encoder_id]
    return {fingerprint: records.to_dict("records") for fingerprint, records in earlier.groupby("task_fingerprint")}
