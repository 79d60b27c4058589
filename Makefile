# Fresh machine: `make demo` (the main job on embedded defaults) or `make test`.
# Everything is installed into project virtual environments made with the python3 that is there
# (>= 3.10); the system interpreter is never installed into.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
G4 := .venv-gradio4
A1 := .venv-a1111
PIP_FLAGS ?= -q

.PHONY: deps demo test test-main test-a1111 test-gradio4 lint bench-gpu clean-venvs

# a venv of the given folder, or a clear message when this python cannot make one
define make_venv
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "make: $(PYTHON) is $$($(PYTHON) -V 2>&1); MotionPrompt needs Python >= 3.10 (PYTHON=python3.11 make ...)"; exit 1; }
	@$(PYTHON) -m venv $(1) || { echo "make: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
endef

# today's stack: the tests, the demo and the diffusers reference host
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(call make_venv,$(VENV))
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-dev.txt
	@touch $@

# A1111 1.10's pins (torch 2.1.2 CUDA build from PyPI: ~2.5 GB of downloads, once)
$(A1)/.installed: requirements.txt requirements-a1111.txt
	$(call make_venv,$(A1))
	$(A1)/bin/python -m pip install $(PIP_FLAGS) -r requirements-a1111.txt
	@touch $@

# Forge's UI stack (gradio 4.40)
$(G4)/.installed: requirements-gradio4.txt
	$(call make_venv,$(G4))
	$(G4)/bin/python -m pip install $(PIP_FLAGS) -r requirements-gradio4.txt
	@touch $@

deps: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m motionprompt demo --out outputs/demo

# lint and the whole suite on today's stack; every test that applies on A1111 1.10's pins (no diffusers
# there: the reference-host tests are deselected); the accordion again under gradio 4.40 (Forge)
test: test-main test-a1111 test-gradio4

test-main: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-a1111: $(A1)/.installed
	$(A1)/bin/python -m pytest -q -p no:cacheprovider -m "not diffusers"

test-gradio4: $(G4)/.installed
	$(G4)/bin/python -m pytest -q --noconftest -p no:cacheprovider tests/test_webui_ui.py

lint: $(VENV)/.installed
	$(PY) -m ruff check .

clean-venvs:
	rm -rf $(VENV) $(A1) $(G4)

# the paper's setting on a CUDA GPU: SD1.5-sized random model, 16 frames 512x512, 25 DDIM steps, fp16. Plain vs
# paper and fast on the three memory paths with RAFT-small (random weights: cost only) and with the weight-free
# lk_pyramid, and the memory accounting at that size (outputs/bench-gpu-*.md/json; measured 4.5 min on an H200
# with lk on the speed path only; about 5.5 min as written). Runs with $(PYTHON) as it is: a GPU machine brings its own CUDA torch (+ diffusers, transformers)
GPU_JOB := --model sd15-random --device cuda --dtype fp16 --frames 16 --height 512 --width 512 --steps 25
bench-gpu:
	mkdir -p outputs
	$(PYTHON) -m motionprompt bench $(GPU_JOB) --preset paper fast --memory speed balanced low \
		--flow-backend preset --random-flow --json-out outputs/bench-gpu-raft.json --md-out outputs/bench-gpu-raft.md
	$(PYTHON) -m motionprompt bench $(GPU_JOB) --preset paper fast --memory speed balanced low --flow-backend lk_pyramid \
		--json-out outputs/bench-gpu-lk.json --md-out outputs/bench-gpu-lk.md
	$(PYTHON) -m motionprompt bench $(GPU_JOB) --memory-accounting --accounting-sides 384 512 \
		--json-out outputs/bench-gpu-memory.json
