# napari-isfl: two commands set everything up on a fresh machine.
#   make demo   create .venv, install, fuse the bundled sample data with the shipped model (demo_output/)
#   make test   create .venv, install (with test and Qt extras), run the test suite (headless via Xvfb)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first: a bare "torch" requirement would pull a multi-GB CUDA build. For the CPU-only wheels on
# a machine without a local one: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test test-all lint install system-deps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[all,test]"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/isfl demo --output demo_output

# napari's viewer tests need a display: Xvfb (installed by `make system-deps` on Debian/Ubuntu)
test: $(BIN)/.installed
	@command -v xvfb-run >/dev/null || $(MAKE) system-deps
	xvfb-run -a $(BIN)/python -m pytest

# the default suite plus the tests marked slow (training runs, end-to-end subprocesses, benchmark scripts)
test-all: $(BIN)/.installed
	@command -v xvfb-run >/dev/null || $(MAKE) system-deps
	xvfb-run -a $(BIN)/python -m pytest -m "slow or not slow"

lint: $(BIN)/.installed
	$(BIN)/python -m ruff check src tests benchmarks scripts docs/scripts

system-deps:
	bash scripts/install_system_deps.sh

clean:
	rm -rf $(VENV) demo_output .pytest_cache
