# Fresh machine: `make demo` (the main job on embedded defaults) or `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
STAMP := .deps-installed
G4 := .venv-gradio4

.PHONY: deps demo test lint test-gradio4 bench-gpu

$(STAMP): requirements.txt requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	@touch $(STAMP)

$(G4)/.installed: requirements-gradio4.txt
	$(PYTHON) -m venv $(G4)
	$(G4)/bin/pip install -q -r requirements-gradio4.txt
	@touch $@

deps: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m motionprompt demo --out outputs/demo

# lint, the whole suite (gradio 3.41.2, A1111's pin), then the accordion again under gradio 4.40 (Forge)
test: $(STAMP) $(G4)/.installed
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q
	$(G4)/bin/python -m pytest -q --noconftest -p no:cacheprovider tests/test_webui_ui.py

lint: $(STAMP)
	$(PYTHON) -m ruff check .

# the paper's setting on a CUDA GPU: SD1.5-sized random model, 16 frames 512x512, 25 DDIM steps, fp16;
# plain vs paper, fast and low_vram; writes outputs/bench-gpu.json and outputs/bench-gpu.md
bench-gpu:
	mkdir -p outputs
	$(PYTHON) -m motionprompt bench --model sd15-random --device cuda --dtype fp16 --frames 16 --height 512 \
		--width 512 --steps 25 --preset paper fast low_vram --repeat 2 \
		--json-out outputs/bench-gpu.json --md-out outputs/bench-gpu.md
