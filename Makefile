# `make demo` and `make test` are all the set-up there is: each creates .venv when missing.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint venv clean bench

$(BIN)/hf-deepclean: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,plot]"
	touch $(BIN)/hf-deepclean

venv: $(BIN)/hf-deepclean

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/hf-deepclean demo --output_dir runs/demo

test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check hf_deepclean tests benchmarks

test-fast: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not distributed" $(PYTEST_ARGS)

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/fisher_speed.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/trainer_overhead.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/mask_kernels.py

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
