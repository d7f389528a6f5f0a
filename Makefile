# Two commands do everything on a fresh machine: `make run` and `make test`.
#
# Installs are pinned: requirements/server.txt holds every package the server needs (and pip and the
# build backend silo is installed with), requirements/test.txt that and the test tools, each with its
# hashes, so pip refuses anything else. `make run` installs the first, `make test` the second; silo itself
# is then installed editable without resolving anything again. After changing a dependency in
# pyproject.toml run `make lock`, which compiles both files with uv (from a throwaway venv, not a
# dependency of silo): `uv pip compile $(LOCK_FLAGS) pyproject.toml requirements/build.in -o
# requirements/server.txt`, then the same with `--extra test -c requirements/server.txt` into
# requirements/test.txt, so the two agree on every package they share. It keeps the pins that still
# satisfy pyproject.toml; `make lock LOCK_UPGRADE=--upgrade` moves every pin to the newest release allowed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
# What is installed, as stamps: the server's packages, then the test tools on top of them.
SERVER := $(VENV)/.installed-server
TESTING := $(VENV)/.installed-test
UV_VERSION := 0.13.9
# Resolved for every platform and every Python from 3.11 (pyproject.toml's requires-python) on.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command 'make lock'
LOCK_UPGRADE ?=

.PHONY: run test check bench soak install lock clean

$(SERVER): pyproject.toml requirements/server.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes -r requirements/server.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

# pip keeps what the server's stamp installed (the two files agree on it) and adds the rest.
$(TESTING): $(SERVER) requirements/test.txt
	$(PIP) install --require-hashes -r requirements/test.txt
	touch $@

install: $(TESTING)

run: $(SERVER)
	./scripts/system-packages
	$(BIN)/silo serve --host 127.0.0.1 --port 9700 --data-dir ./.silo

test: $(TESTING)
	./scripts/system-packages
	$(BIN)/pytest -q tests

bench: $(SERVER)
	./scripts/system-packages bench
	$(BIN)/python bench/run.py

soak: $(SERVER)
	./scripts/system-packages bench
	$(BIN)/python bench/soak.py

check: $(TESTING)
	$(BIN)/ruff check silo tests bench
	$(BIN)/ruff format --check silo tests bench
	$(BIN)/mypy

lock:
	tool=$$(mktemp -d) && trap 'rm -rf "$$tool"' EXIT && \
	$(PYTHON) -m venv "$$tool" && \
	"$$tool/bin/pip" install --quiet --disable-pip-version-check uv==$(UV_VERSION) && \
	"$$tool/bin/uv" pip compile $(LOCK_FLAGS) $(LOCK_UPGRADE) pyproject.toml requirements/build.in \
		-o requirements/server.txt && \
	"$$tool/bin/uv" pip compile $(LOCK_FLAGS) $(LOCK_UPGRADE) --extra test -c requirements/server.txt \
		pyproject.toml requirements/build.in -o requirements/test.txt && \
	"$$tool/bin/uv" pip compile $(LOCK_FLAGS) $(LOCK_UPGRADE) requirements/awslambdaric.in \
		-o requirements/awslambdaric.txt

clean:
	rm -rf $(VENV) .silo .pytest_cache .mypy_cache .ruff_cache
