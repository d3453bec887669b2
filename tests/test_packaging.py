"""What `pip install` puts in place: every shipped config folder, and one version everywhere."""

import subprocess
import sys
import tomllib
from importlib.metadata import version

import augbench
from tests.conftest import REPO


def test_every_config_folder_is_a_listed_package_so_its_yaml_files_ship():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["augbench.configs"] == "configs"
    folders = {path.parent.relative_to(REPO / "configs") for path in (REPO / "configs").rglob("*.yaml")}
    expected = {".".join(("augbench", "configs", *folder.parts)) for folder in folders}
    listed = {name for name in setuptools["packages"] if name.startswith("augbench.configs")}
    assert listed == expected


def test_the_installed_version_is_the_package_version_and_the_command_prints_it():
    assert version("augbench") == augbench.__version__
    result = subprocess.run([sys.executable, "-m", "augbench.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"augbench {augbench.__version__}"
