"""`augbench data NAME`: a contact sheet of a dataset's images titled with their categorical labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from augbench.config import compose, read_sources
from augbench.data import dataset_config_type, load_split
from augbench.errors import ConfigError
from augbench.files import check_writable


def preview(name: str, output: Path | None = None, split: str = "train", overrides: Sequence[str] = (),
            count: int = 32) -> Path:
    try:
        config_type = dataset_config_type(name)
    except KeyError as error:
        raise ConfigError(f"dataset {name!r} is unknown; {error.args[0]}") from None
    config, _ = compose(config_type, read_sources(overrides=overrides))
    output = Path(output or f"{name}_{split}.png")
    check_writable(output.parent, "--output")
    dataset = load_split(config, split)
    columns = 8
    rows = (min(count, len(dataset)) + columns - 1) // columns
    # A Figure on its own Agg canvas, not pyplot: rendering a file leaves the process's matplotlib backend alone.
    figure = Figure(figsize=(columns * 1.6, rows * 1.9))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= min(count, len(dataset)):
            continue
        axis.imshow(dataset[index]["image"].permute(1, 2, 0).numpy())  # of a lazy split, only these are decoded
        names = [dataset.classes[k][int(dataset.labels[k][index])] for k in dataset.classes]
        axis.set_title("\n".join(names[:2]), fontsize=7)
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    return output
