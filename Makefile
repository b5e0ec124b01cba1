# QuantDesk: `make run` opens the app, `make test` runs every check.
# Both create or refresh the virtual environment in .venv/ first.
# NVIDIA GPU: `make run GPU=cuda` installs CUDA builds of torch and llama-cpp-python.

PYTHON ?= python3
GPU ?= cpu
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(GPU)

.PHONY: run test venv lint clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt packaging/setup_venv.sh
	GPU=$(GPU) PYTHON=$(PYTHON) bash packaging/setup_venv.sh $(VENV)
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	$(VENV)/bin/quantdesk demo
	$(VENV)/bin/quantdesk

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
