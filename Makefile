# The README's two commands: `make quickstart` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test test-slow lint bench clean

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

clean:
	rm -rf $(VENV) runs .pytest_cache
