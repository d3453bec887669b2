"""The monitor logs what the offline kNN protocol and the online classifier measure, and leaves training as it was."""

from dataclasses import replace

import pandas as pd
import pytest
import torch

from augbench.augment.kinds import build_views
from augbench.config import shipped_config
from augbench.data import load_split
from augbench.data.disk import ImageFolderConfig, load_from_disk
from augbench.errors import ConfigError
from augbench.evaluate.features import extract_features
from augbench.evaluate.protocols import KNNConfig, knn_predict
from augbench.methods import build_method
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.io import load_encoder
from augbench.train.checkpoint import safe_load
from augbench.train.config import load_config
from augbench.train.monitor import MonitorConfig, ProbeMonitor
from augbench.train.pretrain import pretrain
from tests.conftest import TINY_OVERRIDES
from tests.data.layouts import write_tree

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
    monitor = ProbeMonitor(monitored.config.monitor, train, val, monitored.config.seed)
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
    with pytest.raises(ConfigError, match=r"monitor.label='hue': the monitor needs a class index per image"):
        ProbeMonitor(MonitorConfig(label="hue"), train, train, seed=0)


def test_the_online_classifier_learns_from_detached_features_and_training_is_unchanged(tmp_path):
    run = pretrain(_config(tmp_path, "online", "monitor.label=shape", "monitor.knn=false",
                           "monitor.online_linear=true", "monitor.max_val_images=12"))
    logged = pd.read_csv(run.directory / "logs" / "csv" / "metrics.csv")
    assert "monitor/knn_shape" not in logged and logged["train/online_linear_acc"].notna().sum() >= 2
    linear = logged["monitor/linear_shape"].dropna()
    assert len(linear) == 2  # once per epoch
    # The last value, recomputed from the saved encoder and the checkpoint's classifier on the same val sample.
    state = safe_load(run.directory / "checkpoints" / "last.ckpt")["state_dict"]
    classifier = torch.nn.Linear(state["online_classifier.weight"].shape[1], 12)
    classifier.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("online_classifier.")})
    train, val = load_split(run.config.data, "train"), load_split(run.config.data, "val")
    monitor = ProbeMonitor(run.config.monitor, train, val, run.config.seed)
    encoder, _ = load_encoder(run.directory)
    with torch.no_grad():
        predicted = classifier(extract_features(encoder, val.images[monitor.queries.indices])).argmax(dim=1)
    expected = (predicted == val.labels["shape"][monitor.queries.indices]).float().mean().item() * 100
    assert linear.iloc[-1] == pytest.approx(expected, abs=1e-4)
    plain_encoder, _ = load_encoder(pretrain(_config(tmp_path, "plain")).directory)
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), plain_encoder.state_dict().values()))


def test_the_monitor_embeds_a_lazy_split_as_the_same_split_in_memory_without_decoding_it_whole(tmp_path):
    write_tree(tmp_path, per_class=(12, 10, 8))
    config = ImageFolderConfig(path=str(tmp_path), image_size=16, val_fraction=0.2, test_fraction=0.1)
    settings = MonitorConfig(label="class", k=3, max_bank_images=15, max_val_images=5, batch_size=4)
    encoder = build_backbone(BackboneConfig(width=0.125))
    monitors = {}
    for lazy in (False, True):
        train, val = (load_from_disk(replace(config, lazy=lazy), split) for split in ("train", "val"))
        monitors[lazy] = ProbeMonitor(settings, train, val, seed=0)
    for sample in ("bank", "queries"):
        held, streamed = (getattr(monitors[lazy], sample) for lazy in (False, True))
        assert torch.equal(held.indices, streamed.indices)
        assert torch.equal(held.features(encoder, 4, "cpu"), streamed.features(encoder, 4, "cpu"))
        assert "images" not in vars(streamed.dataset)
    assert monitors[True].accuracies(encoder, None, "cpu") == monitors[False].accuracies(encoder, None, "cpu")


@pytest.mark.parametrize("preset", ["moco_v2", "byol", "simclr", "simsiam", "swav", "looc", "looc++", "hai_moco_v2",
                                    "barlow_twins", "hai_barlow_twins"])
def test_every_method_hands_the_online_classifier_detached_encoder_features_of_the_first_view(preset):
    config, _ = load_config(shipped_config(f"methods/{preset}.yaml"), [*TINY_OVERRIDES, "data.image_size=32"])
    method = build_method(config.method, build_backbone(config.model), config.augment)
    method.set_steps_per_epoch(1)
    views = build_views(config.augment, 32, config.method)(torch.rand(8, 3, 32, 32), torch.Generator().manual_seed(0))
    features = method(views)["features"]
    encoder = method.encoder().eval()
    with torch.no_grad():
        width = encoder(torch.rand(2, 3, 32, 32)).shape[1]
    assert features.shape == (8, width) and not features.requires_grad


def test_online_linear_settings_that_cannot_work_are_refused_at_config_load():
    with pytest.raises(ConfigError, match=r"online_linear=true: set label"):
        load_config(shipped_config("methods/moco_v2.yaml"), ["monitor.online_linear=true"])
    with pytest.raises(ConfigError, match=r"monitor.online_linear=true reads the encoder's features, which HAI"):
        load_config(shipped_config("methods/hai_moco_v2.yaml"),
                    ["monitor.label=shape", "monitor.online_linear=true", "method.stages=[1,2,3]",
                     "method.loss_weights=[1.0,1.0,1.0]", "method.embedding.stages=[2]",
                     "augment.assignment.crop=3", "augment.assignment.flip=3"])
