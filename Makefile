# The README's two commands: `make quickstart` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test test-slow lint bench results clean

$(BIN)/augbench: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,dev]'
	touch $@

quickstart: $(BIN)/augbench
	$(BIN)/augbench quickstart

test: $(BIN)/augbench
	$(BIN)/ruff check augbench tests benchmarks
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/augbench
	$(BIN)/python -m pytest -q -m slow

lint: $(BIN)/augbench
	$(BIN)/ruff check augbench tests benchmarks

# The benchmarks' own venv: augbench plus its peers (lightly from PyPI, with its dependencies), pinned by
# constraints.txt, kept apart so a peer's dependencies never enter augbench's environment.
BENCH_VENV ?= benchmarks/.venv
BENCH_BIN := $(BENCH_VENV)/bin

$(BENCH_BIN)/lightly-installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/pip install --quiet --upgrade pip
	$(BENCH_BIN)/pip install --quiet -c constraints.txt -e '.[bench]'
	touch $@

# Runs every benchmark and writes benchmarks/RESULTS.md (tens of minutes on two CPU cores).
bench: $(BENCH_BIN)/lightly-installed
	$(BENCH_BIN)/python benchmarks/run_all.py --python $(BENCH_BIN)/python

# The four study grids with 3 seeds per cell, each grid's report in docs/reports/, then the findings page
# (docs/results.md and docs/results.html) from their stores. The full grids are sized for GPUs;
# `make results RESULTS_SMALL=--small` runs the CPU-size ones (hours on two cores). A grid already run is
# resumed: only its missing cells run.
RESULTS_SMALL ?=
RESULTS_SEEDS ?= [0,1,2]
STUDIES := fair_moco_byol virb looc hai

results: $(BIN)/augbench
	for study in $(STUDIES); do \
		$(BIN)/augbench benchmark configs/benchmarks/$$study.yaml $(RESULTS_SMALL) 'seeds=$(RESULTS_SEEDS)' || exit 1; \
		$(BIN)/augbench report runs/benchmarks/$$study$(if $(RESULTS_SMALL),-small,) \
			--output docs/reports/$$study$(if $(RESULTS_SMALL),-small,).html || exit 1; \
	done
	$(BIN)/augbench findings configs/findings.yaml $(RESULTS_SMALL) --markdown docs/results.md --html docs/results.html

clean:
	rm -rf $(VENV) $(BENCH_VENV) runs .pytest_cache
