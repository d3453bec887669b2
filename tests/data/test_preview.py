import importlib

import matplotlib

import augbench.data.preview


def test_a_preview_renders_a_png_and_leaves_matplotlibs_backend_alone(tmp_path):
    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        preview = importlib.reload(augbench.data.preview).preview  # as on first import: nothing set at import time
        path = preview("shapes_world", tmp_path / "sheet.png", overrides=["train_size=16", "image_size=48"])
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
