"""Imports run one way (DESIGN.md): data → augment → models → methods → train; evaluate reads models and data;
analysis reads stored results only; the shared leaf modules at augbench's top level import no layer; the CLI, the
quickstart, the benchmark runner and its executors sit on top."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "augbench"
# What each layer may not import, inside functions too.
NEVER = {
    "data": {"augment", "models", "methods", "train", "evaluate", "analysis"},
    "augment": {"models", "methods", "train", "evaluate", "analysis"},
    "models": {"methods", "train", "evaluate", "analysis"},
    "methods": {"train", "evaluate", "analysis"},
    "train": {"analysis"},  # the pretraining monitor reads with evaluate's kNN and features, as the hook allows
    "evaluate": {"train", "methods", "analysis"},
    "analysis": {"train", "evaluate", "methods", "models", "augment", "data"},
}
LAYERS = set(NEVER)
LEAVES = ("errors", "config", "files", "optim", "metrics")


def _imported_packages(path: Path) -> set[str]:
    """The augbench subpackages or modules `path` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("augbench."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("augbench.")}
    return found


@pytest.mark.parametrize("layer", sorted(NEVER))
def test_a_layer_imports_nothing_above_it(layer):
    wrong = {f"{path.relative_to(PACKAGE)} imports augbench.{target}"
             for path in (PACKAGE / layer).rglob("*.py") for target in _imported_packages(path) & NEVER[layer]}
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("leaf", LEAVES)
def test_a_shared_leaf_imports_no_layer(leaf):
    assert not _imported_packages(PACKAGE / f"{leaf}.py") & LAYERS
