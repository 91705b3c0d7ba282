# pcam_nb: the two commands a fresh machine needs are `make train` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real sample data (read-only, never copied here); real-data cells and tests run only when it exists.
PCAM_SAMPLE ?= $(abspath ../shared/data/pcam-sample)
export PCAM_SAMPLE
REALDATA := $(if $(wildcard $(PCAM_SAMPLE)/labels.csv),realdata,)
QUIET_PIP := grep -v '^WARNING: Location' || true
CPU_EPOCHS ?= 3
CPU_LIMIT ?= 4096

.PHONY: venv train test nbtest pytest lab docs readme export clean bench-load bench help

help:
	@echo "make train  - set up .venv and run the main job (CPU: synthetic demo; GPU: full recipe)"
	@echo "make test   - set up .venv if needed and run every notebook (nbdev_test) and tests/ (pytest)"
	@echo "make lab    - JupyterLab on nbs/ with pcam_nb importable"
	@echo "make docs   - build the docs site with nbdev_docs (needs the Quarto binary)"
	@echo "make export - notebooks -> pcam_nb/ (nbdev_export), then nbdev_clean and README.md"
	@echo "make bench  - on a CUDA GPU: pcam_bench (ceiling vs pipeline vs per-item, epoch, load, TTA) -> benchmarks/bench.md"

venv: $(BIN)/.installed

# torch/torchvision: the verified versions (../shared/notes/stack.md); pip takes them from local disk where it can.
# escnn (the equivariant models) with --no-deps: its declared dependencies py3nj (needs gfortran) and lie_learn (numpy 1.x
# only) serve its 3D groups, which pcam_nb does not use; why and how: nbs/06_equivariant.ipynb.
ESCNN := escnn==1.0.11
$(BIN)/.installed: settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q -e ".[dev]" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q --no-deps "$(ESCNN)" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import pcam_nb, fastai, nbdev, h5py; from pcam_nb.equivariant import escnn_modules; escnn_modules()"
	touch $@

# The main job. With a CUDA GPU: the full recipe (vgg16_bn from scratch, 30 epochs) on TRAIN_DATA (the official
# PCam files in data/pcam when downloaded, else the synthetic default). Without one: the CPU demo, the baseline CNN
# on the synthetic default, a few minutes on 2 cores.
STAMP := $(shell date +%Y%m%d-%H%M%S)
TRAIN_DATA ?= $(if $(wildcard data/pcam/camelyonpatch_level_2_split_train_x.h5),data/pcam,synthetic)
train: venv
	@if $(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
	  echo "GPU found: full recipe (vgg16_bn) on $(TRAIN_DATA)"; \
	  $(BIN)/pcam_train --data $(TRAIN_DATA) --arch vgg16_bn --out runs/vgg16_bn-$(STAMP); \
	else \
	  echo "No GPU: CPU demo (simple_cnn on synthetic PCam; the full recipe needs a GPU)"; \
	  $(BIN)/pcam_train --data synthetic --arch simple_cnn --epochs $(CPU_EPOCHS) --limit $(CPU_LIMIT) --bs 128 --out runs/cpu-demo-$(STAMP) && \
	  echo "Held-out check: the synthetic test split, which took no part in training or in picking the epoch" && \
	  $(BIN)/pcam_evaluate runs/cpu-demo-$(STAMP) --split test --no-plots --no-progress --n-boot 200; \
	fi

test: nbtest pytest

nbtest: venv
	$(BIN)/nbdev_test --n_workers 2 --flags "$(REALDATA)" --timing

pytest: venv
	$(BIN)/pytest tests

lab: venv
	$(BIN)/jupyter lab --notebook-dir=nbs

docs: venv
	@command -v quarto >/dev/null || { echo "make docs: the Quarto binary is not installed, and nbdev_docs needs it."; \
	  echo "Install it from https://quarto.org/docs/get-started/ (a .deb/.tar.gz; not on PyPI, Debian or npm), then run make docs again."; \
	  echo "The processed notebooks alone: $(BIN)/nbdev_proc_nbs"; exit 1; }
	$(BIN)/nbdev_docs

readme: venv
	$(BIN)/python tools/make_readme.py

export: venv
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	$(BIN)/python tools/make_readme.py

bench-load: venv
	$(BIN)/python benchmarks/load_speed.py

# Throughput on a CUDA GPU (ceiling vs fastai pipeline vs per-item pipeline, epoch, load, TTA): benchmarks/bench.md
bench: venv
	PY=$(BIN)/python bash benchmarks/bench_gpu.sh

clean:
	rm -rf _docs _proc .pytest_cache
