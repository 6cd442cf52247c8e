# The two commands a newcomer needs: `make demo` and `make test`.
# Both create ./.venv on first use (python3 >= 3.11 with venv is the only prerequisite).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit install clean contracts sandbox

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "idlegrid needs Python >= 3.11; set PYTHON=python3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,torch,render]'
	@touch $(STAMP)

install: $(STAMP)

## make demo: the whole flow on a local network in ./.demo (about 2 minutes).
demo: $(STAMP) sandbox
	$(BIN)/python -m node.demo

## make test: lint, type-check, then the whole test suite.
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## PYTEST_JOBS: test processes (pytest-xdist); most tests wait on daemons, so 2 halve the time
## on 2 cores. PYTEST_JOBS=0 runs them all in this process. Tests marked `alone` (they measure
## the free disk, which the others change) run afterwards, by themselves; exit 5 is "none
## selected" (a PYTEST_ARGS that picks none of them).
PYTEST_JOBS ?= 2

unit: $(STAMP) contracts sandbox
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) --dist worksteal -m "not alone" --durations=25 $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m alone $(PYTEST_ARGS) || test $$? -eq 5

## make contracts: the pinned solc-js and anvil from npm (package-lock.json), when npm exists;
## the tests then rebuild and byte-compare the artifacts and run the chain tests on anvil too.
contracts:
	@if command -v npm >/dev/null; then \
		test -d contracts/node_modules || (cd contracts && npm ci --no-audit --no-fund); \
	else echo "npm not found: contract rebuild check and anvil tests will be skipped"; fi

## make sandbox: bubblewrap, the workers' jail. Installed with apt-get when it is missing and
## we are root on a Debian-like system (SANDBOX_INSTALL=0 skips that); without it workers fall
## back to resource limits only (README: Sandbox).
sandbox:
	@command -v bwrap >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "$(SANDBOX_INSTALL)" != 0 ]; then \
			echo "installing bubblewrap (the workload sandbox) with apt-get"; \
			apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
			|| { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; } \
			|| echo "bubblewrap not installed: workers fall back to resource limits only"; \
		else echo "bwrap not found: workers fall back to resource limits only (README: Sandbox)"; fi; }

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis contracts/node_modules
