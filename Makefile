# Fresh machine: `make demo` (the main job on embedded defaults) or `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
STAMP := .deps-installed

.PHONY: deps demo test lint

$(STAMP): requirements.txt requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	@touch $(STAMP)

deps: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m motionprompt demo --out outputs/demo

test: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

lint: $(STAMP)
	$(PYTHON) -m ruff check .
