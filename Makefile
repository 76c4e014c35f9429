# The two set-up commands of the README: `make demo` (the quick-start job) and `make test`.
# Each creates .venv from the pinned requirements (PyTorch 2.13.0, CPU build) the first time.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/equipath demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest
