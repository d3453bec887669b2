"""benchmarks/gpu_results.py: the GPU section of RESULTS.md from gpu_check.sh's logs, the CPU sections kept."""

import importlib.util

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("gpu_results", REPO / "benchmarks" / "gpu_results.py")
gpu_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_results)


def test_the_gpu_section_replaces_the_last_one_and_keeps_the_cpu_sections():
    document = "# augbench benchmarks\n\n## pretraining\n\ncpu figures\n"
    once = gpu_results.replace_section(document, "## GPU: A\n\nfirst\n")
    assert once == document + "\n## GPU: A\n\nfirst\n"
    again = gpu_results.replace_section(once + "\n## later section\n\nkept\n", "## GPU: B\n\nsecond\n")
    assert "first" not in again and "## GPU: B\n\nsecond\n" in again
    assert again.startswith(document) and again.endswith("## later section\n\nkept\n")


def test_pretrain_images_per_second_is_read_after_the_first_steps_and_set_against_lightly(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "machine.log").write_text("Python 3.12, torch 2.11\nNVIDIA H200, 140 GiB\n")
    (logs / "throughput.log").write_text(
        " 32 px moco_v2  best: augbench 9000.0 (bf16) / lightly 2900.0 (bf16) = 3.10x\n"
        "ratio augbench / lightly (training images/s): moco_v2 32 px 3.10x\n")
    (logs / "quickstart.log").write_text("quickstart wall: 41250 ms\n")
    run = tmp_path / "runs" / "moco_v2" / "logs" / "csv"
    run.mkdir(parents=True)
    rows = [(9, 500.0), (49, 1000.0), (59, 29000.0), (69, 29200.0), (79, 30000.0)]  # the first two: warm-up
    (run / "metrics.csv").write_text("step,train/images_per_s,train/loss\n"
                                     + "".join(f"{step},{rate},\n{step},,1.0\n" for step, rate in rows))
    text = gpu_results.section(tmp_path)
    assert text.startswith("## GPU: NVIDIA H200, 140 GiB")
    assert "| `augbench pretrain` MoCo v2, images/s | ≥ 25,000 | 29,200 |" in text
    assert "| `augbench pretrain` MoCo v2 / lightly's loop | ≥ 8× | 10.07× (2,900 for lightly) |" in text
    assert "| `augbench pretrain` BYOL, images/s | ≥ 15,000 | not measured |" in text
    assert "| `augbench quickstart` wall time | ≤ 45 s | 41.2 s |" in text
