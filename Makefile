# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench soak install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	./scripts/system-packages
	$(BIN)/silo serve --host 127.0.0.1 --port 9700 --data-dir ./.silo

test: $(STAMP)
	./scripts/system-packages
	$(BIN)/pytest -q tests

bench: $(STAMP)
	./scripts/system-packages bench
	$(BIN)/python bench/run.py

soak: $(STAMP)
	./scripts/system-packages bench
	$(BIN)/python bench/soak.py

check: $(STAMP)
	$(BIN)/ruff check silo tests bench
	$(BIN)/ruff format --check silo tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .silo .pytest_cache .mypy_cache .ruff_cache
