import json

import pandas as pd
import yaml

from augbench.cli import main
from augbench.models.backbones import BackboneConfig, build_backbone
from augbench.models.io import save_encoder


def test_augbench_evaluate_writes_one_record_per_task_with_its_protocol(tmp_path, capsys):
    config = BackboneConfig(width=0.125)
    checkpoint = save_encoder(build_backbone(config), config, tmp_path / "encoder.safetensors")
    dataset = {"name": "shapes_world", "image_size": 16, "train_size": 64, "val_size": 24, "test_size": 32}
    for label in ("shape", "hue_bin"):
        (tmp_path / f"{label}.yaml").write_text(yaml.safe_dump(
            {"name": label, "dataset": dataset, "label": label, "protocols": ["knn"]}))
    suite = tmp_path / "mini.yaml"
    suite.write_text(yaml.safe_dump({"name": "mini", "seed": 7, "tasks": ["shape.yaml", "hue_bin.yaml"]}))

    assert main(["evaluate", str(checkpoint), "--suite", str(suite), "--device", "cpu", "knn.k=3"]) == 0
    output = tmp_path / "encoder.evaluation_mini.csv"
    assert "2 records written" in capsys.readouterr().out
    records = pd.read_csv(output)
    assert list(records.task) == ["shape", "hue_bin"]
    assert set(records.metric) == {"top1"} and set(records.protocol) == {"knn"} and set(records.seed) == {7}
    assert records.encoder_id.nunique() == 1 and records.source[0] == str(checkpoint)
    assert json.loads(records.settings[0])["k"] == 3
    assert json.loads(records.budget[0]) == {"train_images": 64}
