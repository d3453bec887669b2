"""The kNN monitor logs what the offline kNN protocol measures, and leaves training as it was."""

import pandas as pd
import pytest
import torch

from augbench.config import shipped_config
from augbench.data import load_split
from augbench.errors import ConfigError
from augbench.evaluate.features import extract_features
from augbench.evaluate.protocols import KNNConfig, knn_predict
from augbench.models.io import load_encoder
from augbench.train.monitor import KNNMonitor, MonitorConfig
from augbench.train.pretrain import load_config, pretrain
from tests.conftest import TINY_OVERRIDES

TWO_EPOCHS = [*TINY_OVERRIDES, "trainer.max_steps=-1", "trainer.max_epochs=2", "method.queue_size=32"]


def _config(tmp_path, name, *extra):
    config, _ = load_config(shipped_config("methods/moco_v2.yaml"),
                            [*TWO_EPOCHS, f"output_dir={tmp_path}", f"name={name}", *extra])
    return config


def test_the_logged_accuracy_is_the_knn_protocol_on_the_sampled_images_and_training_is_unchanged(tmp_path):
    monitored = pretrain(_config(tmp_path, "monitored", "monitor.label=shape", "monitor.max_bank_images=40",
                                 "monitor.max_val_images=12", "monitor.k=5"))
    logged = pd.read_csv(monitored.directory / "logs" / "csv" / "metrics.csv")["monitor/knn_shape"].dropna()
    assert len(logged) == 2  # once per epoch
    # The last value, recomputed from the saved encoder on the same seeded samples by the evaluation's kNN.
    train, val = load_split(monitored.config.data, "train"), load_split(monitored.config.data, "val")
    monitor = KNNMonitor(monitored.config.monitor, train, val, monitored.config.seed)
    assert len(monitor.bank.indices) == 40 and len(monitor.queries.indices) == 12
    encoder, _ = load_encoder(monitored.directory)
    bank = extract_features(encoder, train.images[monitor.bank.indices])
    queries = extract_features(encoder, val.images[monitor.queries.indices])
    predictions = knn_predict(bank, train.labels["shape"][monitor.bank.indices], queries, 12,
                              KNNConfig(k=5, temperature=0.07))
    expected = (predictions == val.labels["shape"][monitor.queries.indices]).float().mean().item() * 100
    assert logged.iloc[-1] == pytest.approx(expected, abs=1e-4)
    assert monitored.metrics["monitor/knn_shape"] == pytest.approx(expected, abs=1e-4)
    plain = pretrain(_config(tmp_path, "plain"))
    plain_encoder, _ = load_encoder(plain.directory)
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), plain_encoder.state_dict().values()))


def test_every_n_epochs_spaces_the_measurements(tmp_path):
    run = pretrain(_config(tmp_path, "sparse", "monitor.label=hue_bin", "monitor.every_n_epochs=2",
                           "trainer.max_epochs=3"))
    logged = pd.read_csv(run.directory / "logs" / "csv" / "metrics.csv")
    assert logged.dropna(subset=["monitor/knn_hue_bin"]).epoch.tolist() == [1]


def test_bad_monitor_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"monitor.label='colour' is not a label of shapes_world"):
        load_config(shipped_config("methods/moco_v2.yaml"), ["monitor.label=colour"])
    with pytest.raises(ConfigError, match=r"every_n_epochs=0: must be positive"):
        load_config(shipped_config("methods/moco_v2.yaml"), ["monitor.label=shape", "monitor.every_n_epochs=0"])
    config, _ = load_config(shipped_config("methods/moco_v2.yaml"), [*TINY_OVERRIDES, "monitor.label=hue"])
    train = load_split(config.data, "train")
    with pytest.raises(ConfigError, match=r"monitor.label='hue': the kNN monitor needs a class index per image"):
        KNNMonitor(MonitorConfig(label="hue"), train, train, seed=0)
