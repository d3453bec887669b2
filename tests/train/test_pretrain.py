import importlib
import importlib.util
import json
import logging
import warnings

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

import augbench.train.pretrain
import augbench.train.quiet
from augbench.augment.ops import _HUE_ROTATION_COMPILED
from augbench.cli import main
from augbench.config import shipped_config
from augbench.errors import ConfigError
from augbench.models.io import load_encoder
from augbench.train.config import load_config, read_status, resolve_precision
from augbench.train.pretrain import pretrain
from augbench.train.quiet import TIP_LOGGERS
from tests.conftest import TINY_OVERRIDES

PRESETS = ("moco_v2", "byol", "simclr", "simsiam")
# Every shipped method preset, so a new one is in the smoke test below as soon as it ships.
EVERY_PRESET = sorted(path.stem for path in shipped_config("methods").glob("*.yaml"))


def _config(preset: str, tmp_path, *extra: str):
    config, _ = load_config(
        shipped_config(f"methods/{preset}.yaml"),
        [*TINY_OVERRIDES, f"output_dir={tmp_path}", f"name={preset}", "method.queue_size=32", *extra],
    )
    return config


@pytest.mark.parametrize("preset", PRESETS)
def test_two_pretraining_steps_per_preset_write_a_finished_run(preset, tmp_path):
    run = pretrain(_config(preset, tmp_path))
    assert read_status(run.directory)["state"] == "finished"
    assert read_status(run.directory)["steps"] == 2
    assert (run.directory / "checkpoints" / "last.ckpt").is_file()
    assert (run.directory / "logs" / "csv" / "metrics.csv").read_text().count("\n") >= 2
    loaded, config = load_encoder(run.directory)
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded(images), run.encoder(images), atol=1e-6)
    assert config == run.config.model


@pytest.mark.parametrize("preset", EVERY_PRESET)
def test_every_method_preset_pretrains_over_the_quickstart_config(preset, tmp_path):
    # As `augbench pretrain configs/methods/PRESET.yaml configs/quickstart.yaml`, cut to two steps of 16 images.
    config, _ = load_config([shipped_config(f"methods/{preset}.yaml"), shipped_config("quickstart.yaml")],
                            [*TINY_OVERRIDES, f"output_dir={tmp_path}", f"name={preset}", "trainer.precision=32"])
    run = pretrain(config)
    status = read_status(run.directory)
    assert status["state"] == "finished" and status["steps"] == 2
    assert torch.isfinite(torch.tensor(status["metrics"]["train/loss"]))


def test_a_timm_backbone_pretrains_and_its_encoder_reloads(tmp_path):
    run = pretrain(_config("simsiam", tmp_path, "model.name=timm:test_resnet", "model.width=1.0",
                           "model.cifar_stem=false"))
    loaded, config = load_encoder(run.directory)
    images = torch.rand(2, 3, 32, 32)
    assert config.name == "timm:test_resnet"
    assert torch.allclose(loaded(images), run.encoder(images), atol=1e-6)


def test_a_lightning_checkpoint_loads_as_the_same_encoder(tmp_path):
    run = pretrain(_config("byol", tmp_path))
    from_ckpt, _ = load_encoder(run.directory / "checkpoints" / "last.ckpt")
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(from_ckpt(images), run.encoder(images), atol=1e-6)


def test_training_changes_the_weights_and_the_queue_is_checkpointed(tmp_path):
    config = _config("moco_v2", tmp_path)
    run = pretrain(config)
    checkpoint = torch.load(run.directory / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["state_dict"]["method.queue.pointer"].item() == 2 * 16 % 32
    assert "method.target_backbone.conv1.weight" in checkpoint["state_dict"]
    torch.manual_seed(config.seed)
    from augbench.models.backbones import build_backbone

    untrained = build_backbone(config.model)
    assert not torch.allclose(untrained.conv1.weight, run.encoder.conv1.weight)


def test_a_finished_run_is_not_overwritten(tmp_path):
    config = _config("simclr", tmp_path)
    pretrain(config)
    encoder_bytes = (config.run_dir / "encoder.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="holds a finished run"):
        pretrain(config)
    assert (config.run_dir / "encoder.safetensors").read_bytes() == encoder_bytes


def test_an_unfinished_run_resumes_from_its_last_checkpoint(tmp_path):
    first = _config("moco_v2", tmp_path, "trainer.max_steps=-1", "trainer.max_epochs=1")
    pretrain(first)
    status = read_status(first.run_dir)
    status["state"] = "failed"  # as a crash after the first epoch's checkpoint would leave it
    (first.run_dir / "status.json").write_text(json.dumps(status))
    (first.run_dir / "encoder.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"differs at \['trainer.max_epochs'\]"):
        pretrain(_config("moco_v2", tmp_path, "trainer.max_steps=-1", "trainer.max_epochs=2"))
    resumed = pretrain(first)
    assert read_status(resumed.directory)["resumed_from"].endswith("last.ckpt")
    assert read_status(resumed.directory)["state"] == "finished"


def test_a_run_started_before_a_key_was_added_resumes_and_the_progress_bar_may_change(tmp_path):
    first = _config("moco_v2", tmp_path, "trainer.max_steps=-1", "trainer.max_epochs=1")
    pretrain(first)
    status = read_status(first.run_dir)
    status["state"] = "failed"
    (first.run_dir / "status.json").write_text(json.dumps(status))
    stored = yaml.safe_load((first.run_dir / "config.yaml").read_text())
    del stored["method"]["target_predictor"], stored["monitor"]  # as an earlier augbench wrote it
    (first.run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    resumed = pretrain(_config("moco_v2", tmp_path, "trainer.max_steps=-1", "trainer.max_epochs=1",
                               "trainer.progress_bar=true"))
    assert read_status(resumed.directory)["resumed_from"].endswith("last.ckpt")
    rewritten = yaml.safe_load((first.run_dir / "config.yaml").read_text())
    assert rewritten["trainer"]["progress_bar"] and "target_predictor" in rewritten["method"]


def test_a_failing_run_is_marked_failed_with_its_error(tmp_path):
    config = _config("moco_v2", tmp_path, "data.train_size=8")
    with pytest.raises(ConfigError, match=r"8 training images, fewer than trainer\.batch_size=16"):
        pretrain(config)
    status = read_status(config.run_dir)
    assert status["state"] == "failed" and "fewer than" in status["error"]
    assert not (config.run_dir / "encoder.safetensors").exists()


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), [(False, False, "32-true"), (True, False, "bf16-mixed"),
                                                              (False, True, "bf16-mixed")])
def test_auto_precision_takes_bf16_only_on_a_cpu_with_bf16_units(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("32-true", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_lightning_messages_that_ask_nothing_of_the_user_are_left_out(tmp_path, capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pretrain(_config("moco_v2", tmp_path, "trainer.progress_bar=true"))
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "LeafSpec" in m or "on_after_batch_transfer" in m]
    printed = "".join(capfd.readouterr())
    assert "train/loss" in printed and "Tip:" not in printed and "v_num" not in printed


def test_importing_the_training_stack_installs_no_logging_filter():
    def filters():
        return {name: list(logger.filters) for name, logger in logging.root.manager.loggerDict.items()
                if getattr(logger, "filters", None)}

    before = filters()
    for module in (augbench.train.quiet, augbench.train.pretrain):
        importlib.reload(module)  # runs its body again, as on first import
    assert filters() == before


class _Observe(Callback):
    """What the process looks like while a run trains."""

    def __init__(self):
        self.seen = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen = {"hue_compiled": _HUE_ROTATION_COMPILED.get(),
                     "filters": [list(logging.getLogger(name).filters) for name in TIP_LOGGERS]}


def test_a_pretrain_call_changes_the_process_only_while_it_runs_unless_asked(tmp_path, monkeypatch):
    applied = []
    monkeypatch.setattr("augbench.train.pretrain.keep_freed_memory", lambda: applied.append(True))
    filters = [list(logging.getLogger(name).filters) for name in TIP_LOGGERS]
    observe = _Observe()
    pretrain(_config("moco_v2", tmp_path / "api", "trainer.compile_augmentation=false"), callbacks=[observe])
    assert observe.seen["hue_compiled"] is False and _HUE_ROTATION_COMPILED.get() is True
    assert observe.seen["filters"] != filters and [list(logging.getLogger(name).filters)
                                                   for name in TIP_LOGGERS] == filters
    assert not applied  # glibc's malloc settings: for the whole process, so only when asked
    pretrain(_config("moco_v2", tmp_path / "opted_in"), process_wide=True)
    assert applied == [True]
    moco = str(shipped_config("methods/moco_v2.yaml"))
    assert main(["pretrain", moco, *TINY_OVERRIDES, f"output_dir={tmp_path}", "name=cli",
                 "method.queue_size=32"]) == 0
    assert applied == [True, True]
    pretrain(_config("moco_v2", tmp_path / "declined", "trainer.keep_freed_memory=false"), process_wide=True)
    assert applied == [True, True]


def test_wandb_logs_the_run_offline_and_a_resume_continues_the_same_wandb_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")  # the test extra installs it
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = _config("moco_v2", tmp_path, "wandb.enabled=true", "wandb.offline=true", "wandb.tags=[smoke]",
                     "trainer.max_steps=-1", "trainer.max_epochs=1")
    pretrain(config)
    assert wandb.run is None  # finished, so the process's next run starts its own
    run_id = (config.run_dir / "logs" / "wandb_run_id").read_text().strip()
    [written] = (config.run_dir / "logs" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    log = written.read_bytes()
    assert b"train/loss" in log and b"queue_size" in log and b"smoke" in log  # a metric, the config, the tag

    status = read_status(config.run_dir)
    status["state"] = "failed"
    (config.run_dir / "status.json").write_text(json.dumps(status))
    resumed = _config("moco_v2", tmp_path, "wandb.enabled=true", "wandb.offline=true", "trainer.max_steps=-1",
                      "trainer.max_epochs=2")
    with pytest.raises(ConfigError, match=r"differs at \['trainer.max_epochs'\]"):  # W&B settings are no change
        pretrain(resumed)
    pretrain(_config("moco_v2", tmp_path, "wandb.enabled=true", "wandb.offline=true", "trainer.max_steps=-1",
                     "trainer.max_epochs=1"))
    assert (config.run_dir / "logs" / "wandb_run_id").read_text().strip() == run_id
    started = sorted((config.run_dir / "logs" / "wandb").glob("offline-run-*"))  # one per start, seconds apart
    assert len(started) == 2 and all(path.name.endswith(f"-{run_id}") for path in started)


def test_wandb_without_its_package_is_refused_at_config_load(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"wandb: enabled=true: the wandb package is not installed"):
        load_config(shipped_config("methods/moco_v2.yaml"), ["wandb.enabled=true"])


def test_images_per_second_is_logged_for_each_step_after_the_first(tmp_path):
    import pandas as pd

    run = pretrain(_config("moco_v2", tmp_path, "trainer.max_steps=3"))
    metrics = pd.read_csv(run.directory / "logs" / "csv" / "metrics.csv")
    rates = metrics["train/images_per_s"].dropna()
    assert len(rates) == 2 and (rates > 0).all()
