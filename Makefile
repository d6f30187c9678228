# capsim — two commands on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: setup run simulate test test-fast validate validate-training validate-gpu browser-deps bench lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[dev,calibration,dashboard]'
	touch $(STAMP)

setup: $(STAMP)

# The what-if dashboard on the built-in default scenario (examples/fraud_mlp.yaml).
run: setup
	$(VENV)/bin/capsim dashboard --port 8501 --headless

# The default example through the simulator CLI, printing its table.
simulate: setup
	$(VENV)/bin/capsim simulate examples/fraud_mlp.yaml

browser-deps:
	@bash scripts/install_browser.sh

test: setup browser-deps
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

# Live fidelity: a real batching server and a real continuous-batching LLM server on this machine against
# the simulator (about 4 + 7 minutes). The machine's load is measured first: too busy, and it says so and
# stops (FORCE=1 runs it anyway).
# CAPSIM_VALIDATION_OUT=docs/validation/cpu publishes the figures. `make test` judges the committed recording.
# WAIT=poll serves (and calibrates) a server that polls for work; WAIT="block poll" runs both suites.
validate: setup
	$(PY) -m calibration.machine_load $(if $(FORCE),--force)
	CAPSIM_LIVE_VALIDATION=1 CAPSIM_VALIDATION_WAITS="$(or $(WAIT),block)" $(PY) -m pytest -q -s -p no:cacheprovider tests/test_validate_cpu.py tests/test_validate_llm_cpu.py tests/test_calibration_throughput.py

# Live training fidelity: real PyTorch DDP (gloo, 1 and 2 processes of one thread) against capsim train-plan's
# prediction from a fresh `capsim calibrate --mode train` (about 2 minutes), after the same load probe.
# `make test` judges the committed recording (tests/data/recordings/training/); RECORD=1 writes a new one.
validate-training: setup
	$(PY) -m calibration.machine_load $(if $(FORCE),--force)
	$(PY) scripts/record_training_validation.py $(if $(RECORD),--record)

# Live GPU fidelity, on a CUDA machine: per model a `capsim calibrate --device cuda` and nine `capsim bench-serve
# --device cuda` runs (about 4 minutes a model) into runs/gpu; then `capsim validate` them against the profile.
# `make test` judges the committed H200 recording (tests/data/recordings/gpu-h200/). MODELS=NAME:DTYPE,...
validate-gpu: setup
	$(PY) scripts/record_validation_gpu.py --out runs/gpu $(if $(MODELS),--models $(MODELS))

bench: setup
	$(PY) benchmarks/sim_speed.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
