# The README's two commands: `make demo` and `make test`. Both set up .venv first (a no-op when it
# is ready; see tools/setup_env.py). PYTHON picks the interpreter the set-up starts from.
PYTHON ?= python3
VENV_PY := .venv/bin/python

.PHONY: setup demo test

setup:
	$(PYTHON) tools/setup_env.py

demo: setup
	$(VENV_PY) tools/demo.py

test: setup
	$(VENV_PY) -m pytest tests
