from pathlib import Path

import pytest
import torch

from augbench.data.shapes_world import ShapesWorldConfig, load_shapes_world

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_shapes():
    """64 Shapes World images of 32 px, generated once per session."""
    return load_shapes_world(ShapesWorldConfig(train_size=64, val_size=16, test_size=16), "train")


@pytest.fixture(scope="session")
def float_images(tiny_shapes):
    return tiny_shapes.images[:16].float() / 255


TINY_OVERRIDES = [
    "data.train_size=64",
    "data.val_size=16",
    "data.test_size=16",
    "model.width=0.125",
    "trainer.batch_size=16",
    "trainer.max_steps=2",
    "trainer.max_epochs=1",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
]
