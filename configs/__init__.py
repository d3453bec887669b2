"""YAML presets: methods, datasets, end-task suites, benchmark grids. Installed as `augbench.configs`."""
