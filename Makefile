# The README's two commands: `make demo` and `make test`. Both set up .venv first (a no-op when it
# is ready; see tools/setup_env.py). PYTHON picks the interpreter the set-up starts from;
# SETUP_ARGS passes options to it, e.g. SETUP_ARGS="--wheelhouse DIR --system-torch" offline.
PYTHON ?= python3
SETUP_ARGS ?=
VENV_PY := .venv/bin/python

.PHONY: setup demo test test-fast lint

setup:
	$(PYTHON) tools/setup_env.py $(SETUP_ARGS)

demo: setup
	$(VENV_PY) tools/demo.py

# lint first, then the whole suite (CI runs this)
test: setup lint
	$(VENV_PY) -m pytest tests

# the unit tests only, in about two minutes on a 2-core CPU: without the end-to-end, subprocess
# and ViT-L tests (marked slow) and those that need the package registry (marked network)
test-fast: setup
	$(VENV_PY) -m pytest tests -m "not slow and not network"

# ruff's checks (pyproject.toml: width 100, pycodestyle, pyflakes, a few bug patterns)
lint: setup
	$(VENV_PY) -m ruff check .
