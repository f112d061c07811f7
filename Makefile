# The two commands of the README's quick start: `make example` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PIP := $(VENV)/bin/pip
# Test workers: 2 by default (the CI machine has 2 cores).
WORKERS ?= 2

.PHONY: example test install install-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned, so no other requirement pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

example: install
	$(VENV)/bin/syconn-ng example example_analysis

test: install-test
	$(VENV)/bin/python -m pytest -n $(WORKERS) --dist loadgroup

clean:
	rm -rf $(VENV) example_analysis .pytest_cache .hypothesis
