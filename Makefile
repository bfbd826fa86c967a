# The two commands of the course (see README.md):
#   make lab    set up .venv and open the course in JupyterLab
#   make test   set up .venv, run every test (fast mode, the website's fast build included) and the fast bench
#   make site   the course website in site/_build/html, every notebook executed in normal mode (cached)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# TEST_WORKERS=2: two pytest-xdist processes of one torch thread each (the solutions' notebooks run as one unit in one
# of them, see tests/conftest.py); TEST_WORKERS=0: one process (issue 35 measured both on 2 cores).
TEST_WORKERS ?= 2

.PHONY: setup lab test site site-fast build gpu-check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# As root JupyterLab needs --allow-root; without a display there is no browser to open.
lab: setup
	$(BIN)/jupyter lab notebooks/00_start_here.ipynb \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) \
	  $$( [ -z "$$DISPLAY" ] && [ "$$(uname)" != Darwin ] && echo --no-browser )

test: setup
	LABSUPPORT_FAST=1 $(if $(filter-out 0,$(TEST_WORKERS)),LABSUPPORT_THREADS=1) $(BIN)/python -m pytest -n $(TEST_WORKERS) tests --nbval-lax solutions \
	  --nbval-cell-timeout=900 --durations=0 --durations-min=1.0
	$(BIN)/python -m bench --mode fast

# Executions are cached in site/_cache/<mode>: a rebuild re-runs only the notebooks whose code changed.
site: setup
	$(BIN)/python -m labsupport.website --mode normal

site-fast: setup
	$(BIN)/python -m labsupport.website --mode fast

# On a machine with a GPU: every notebook (fast mode), the fast bench and every checkpoint on CUDA, CPU-vs-GPU step times.
gpu-check: setup
	$(BIN)/python -m bench.gpu_check $(if $(DEVICE),--device $(DEVICE))

build: setup
	$(BIN)/python -m labsupport.course build

clean:
	rm -rf $(VENV) .pytest_cache
