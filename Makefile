# README's commands. Each sets itself up on a machine with only python3 + pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tokunify-installed
DOCS_STAMP := $(VENV)/.tokunify-docs-installed

.PHONY: install test test-slow test-all lint demo docs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first (a plain `torch` pulls a multi-GB CUDA build); keep a torch already there.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check tokunify tests benchmarks
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m ""

lint: $(STAMP)
	$(PY) -m ruff check tokunify tests benchmarks
	$(PY) -m ruff format --check tokunify tests benchmarks

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m tokunify demo --out demo_out

# The documentation site (docs/ + mkdocs.yml) into site/; --strict fails on a broken link or a
# docstring that does not render. mkdocstrings reads the source statically.
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site
