# pcam_nb: the two commands a fresh clone needs are `make train` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real sample data sets (read-only, never copied into the repository): the one place the Makefile reads their
# location; tests/conftest.py is the one place the tests do. Real-data cells and tests run only when they exist.
PCAM_SAMPLE ?= $(abspath ../shared/data/pcam-sample)
GLAS_SAMPLE ?= $(abspath ../shared/data/glas-sample)
BCSS_SAMPLE ?= $(abspath ../shared/data/bcss-sample)
CHEST_XRAY_SAMPLE ?= $(abspath ../shared/data/chest-xray-sample)
WSI_SAMPLE ?= $(abspath ../shared/data/wsi-sample)
export PCAM_SAMPLE GLAS_SAMPLE BCSS_SAMPLE CHEST_XRAY_SAMPLE WSI_SAMPLE
REALDATA := $(if $(wildcard $(PCAM_SAMPLE)/labels.csv),realdata,)
QUIET_PIP := grep -v '^WARNING: Location' || true
CPU_EPOCHS ?= 3
CPU_LIMIT ?= 4096

.PHONY: venv train test nbtest pytest lab quarto docs preview readme export clean bench-load bench bench-segment bench-arch bench-chest gpu-check wheelhouse help

help:
	@echo "make train  - set up .venv and run the main job (CPU: synthetic demo; GPU: full recipe)"
	@echo "make test   - set up .venv if needed, run every notebook (nbdev_test), build the docs and run tests/ (pytest)"
	@echo "make lab    - JupyterLab on nbs/ with pcam_nb importable"
	@echo "make docs   - build the docs site into _docs/ with nbdev_docs (needs Quarto: quarto.org)"
	@echo "make preview - nbdev_preview: the docs site, live, in a browser"
	@echo "make export - notebooks -> pcam_nb/ (nbdev_export), then nbdev_clean and README.md (nbdev_readme)"
	@echo "make bench  - on a CUDA GPU: pcam_bench (ceiling vs pipeline vs per-item, epoch, load, TTA) -> benchmarks/bench.md"
	@echo "make bench-segment [SEG_ARGS=...] - UNet vs UNETR on synthetic and GlaS tiles -> benchmarks/segment_compare.*"
	@echo "make bench-arch [DEVICE=cuda] [ARCH_ARGS=...] - resnet18/34/50 vs vgg11_bn/vgg16_bn, training and inference at 96 and 224 px"
	@echo "                 (img/s, phases, memory, FLOPs; channels-last, bf16, compile, batch size) -> benchmarks/arch_profile.*"
	@echo "make bench-chest [CHEST_ARGS=...] - baseline CNN vs resnet18, 5-fold CV on the chest X-ray sample -> benchmarks/chest_xray_study.*"
	@echo "make gpu-check [DATA=dir] - on one CUDA GPU, under 8 minutes: train vgg16_bn, evaluate (TTA), bench"
	@echo "                 -> results/gpu-check-<time>/summary.md (DATA: PCam HDF5; default: PCAM_SAMPLE converted once)"
	@echo "make gpu-check SMOKE=1    - the same check on a CPU with tiny data (mechanics only, no GPU figures)"
	@echo "make wheelhouse [PY=3.12] - wheels of pcam_nb and its pure-Python dependencies for an offline install"

venv: $(BIN)/.installed

# torch/torchvision: the pinned, verified versions (the upper bounds in settings.ini); pip takes them from local disk
# where it can.
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

# The docs site is built inside pytest (tests/test_docs.py runs nbdev_docs when _docs/ is older than the notebooks),
# on one worker while the other runs tests: Quarto renders on one core.
test: nbtest pytest

# One notebook per core, one torch thread each: two 2-thread kernels on 2 cores ran the suite 1.8x slower.
nbtest: venv
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --flags "$(REALDATA)" --timing

# Two pytest workers (pytest-xdist), each a whole test file at a time (module fixtures are built once) with one torch
# thread: most tests use one core, so two workers keep both busy (2-core x86-64 CPU, the same tests: 793 s one after
# another, 515 s on two workers; `make pytest` without the docs build). TEST_WORKERS=1 runs the tests one after another.
TEST_WORKERS ?= 2
pytest: venv
	OMP_NUM_THREADS=1 $(BIN)/pytest tests $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

lab: venv
	$(BIN)/jupyter lab --notebook-dir=nbs

# Quarto, which nbdev_docs and nbdev_readme run: the one on PATH, else .venv/bin/quarto, installed once from an offline
# kit (QUARTO_KIT: a folder with install.sh, e.g. ../shared/tools/quarto) when one is there.
QUARTO_KIT ?= $(if $(wildcard ../shared/tools/quarto/install.sh),$(abspath ../shared/tools/quarto),)
QUARTO_HELP := nbdev_docs needs Quarto: install it from https://quarto.org/docs/get-started/ (or set QUARTO_KIT to an offline Quarto kit) and run make again
WITH_QUARTO := PATH="$$PATH:$(abspath $(BIN))"

quarto: venv
	@command -v quarto >/dev/null || test -x $(BIN)/quarto || \
	  { test -n "$(QUARTO_KIT)" || { echo "$(QUARTO_HELP)" >&2; exit 1; }; \
	    bash "$(QUARTO_KIT)/install.sh" "$(abspath $(VENV))/quarto" && ln -sfn ../quarto/bin/quarto $(BIN)/quarto; }

# The site (_docs/) from the notebooks' saved outputs: nbdev runs only their exported and import cells (for the API
# reference; tools/docs_cells.py keeps it so). README.md is rewritten too when index.ipynb is newer.
docs: quarto
	$(WITH_QUARTO) $(BIN)/nbdev_docs

preview: quarto
	$(WITH_QUARTO) $(BIN)/nbdev_preview

readme: quarto
	$(WITH_QUARTO) $(BIN)/nbdev_readme

export: venv
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	$(MAKE) --no-print-directory -o $(BIN)/.installed readme

bench-load: venv
	$(BIN)/python benchmarks/load_speed.py

# Segmentation: MONAI UNet against UNETR (Dice with intervals, speed, fastai against a plain loop): benchmarks/segment_compare.md
bench-segment: venv
	$(BIN)/python benchmarks/segment_compare.py --glas $(GLAS_SAMPLE) $(SEG_ARGS)

# ResNet against VGG, side by side: img/s, ms per batch by phase, peak memory, parameters and FLOPs for training and
# inference at 96 and 224 px, and what channels-last, bf16 autocast, torch.compile and the batch size change:
# benchmarks/arch_profile.{md,json} and arch_profile_*.png. DEVICE=cuda on a GPU; ARCH_ARGS: more options (--quick, --bs 2,8).
DEVICE ?= cpu
ARCH_ARGS ?=
bench-arch: venv
	$(BIN)/python benchmarks/arch_profile.py --device $(DEVICE) --command "make bench-arch$(if $(filter-out cpu,$(DEVICE)), DEVICE=$(DEVICE))$(if $(ARCH_ARGS), ARCH_ARGS='$(ARCH_ARGS)')" $(ARCH_ARGS)
# One busy CPU core, about 45 minutes on a quiet machine (5 folds, 224 px, 3 epochs per model); the outputs are committed.
bench-chest: venv
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/python benchmarks/chest_xray_study.py --data $(CHEST_XRAY_SAMPLE) $(CHEST_ARGS)

# Throughput on a CUDA GPU (ceiling vs fastai pipeline vs per-item pipeline, epoch, load, TTA): benchmarks/bench.md
bench: venv
	PY=$(BIN)/python bash benchmarks/bench_gpu.sh

# One command on a GPU machine: train the default vgg16_bn recipe, evaluate it (bootstrap CIs, D4 TTA, calibration)
# and run pcam_bench, within 8 minutes, into one results folder (benchmarks/gpu_check.py says how).
# DATA: a PCam HDF5 folder; by default the real sample, converted to data/pcam-sample-h5 on the first run.
# SMOKE=1: the same script on a CPU with tiny synthetic data. GPU_CHECK_ARGS: more options (--out DIR, --epochs N).
# Where pcam_nb is already installed (an offline node, VENV=/path/to/env), nothing is installed first.
DATA ?= data/pcam-sample-h5
GPU_CHECK_ARGS ?=
gpu-check: $(if $(wildcard $(BIN)/pcam_train),,venv)
	$(BIN)/python benchmarks/gpu_check.py $(if $(filter 1,$(SMOKE)),--smoke,--data $(DATA) \
	  $(if $(filter data/pcam-sample-h5,$(DATA)),--convert-from $(PCAM_SAMPLE))) $(GPU_CHECK_ARGS)

# Offline install (a GPU node without network): wheels for Python $(PY) of pcam_nb and of its pure-Python
# dependencies, in wheelhouse/. The node must already have the compiled stack: torch, torchvision, numpy, h5py, pandas,
# scipy, scikit-learn, matplotlib, pillow and PyYAML (fastai imports it). fastai declares spacy (for its text models,
# which pcam_nb does not use): it is left out, so the wheels are installed with --no-deps, by the names in
# wheelhouse/requirements.txt (the pinned fastai stack at exact versions; the rest only when missing).
PY ?= $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
WHEEL_PINNED := fastai==2.8.7 fastcore==1.14.5 fastprogress==1.0.3 fastdownload==0.0.8 fasttransform==0.0.2 \
  plum-dispatch==2.10.1 beartype==0.23.1 escnn==1.0.11
# pure-Python packages that pcam_nb (tabulate), fastai, plum-dispatch and joblib need and many Python installs have
WHEEL_SUPPORT := joblib==1.6.0 cloudpickle==3.1.3 requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1 \
  charset-normalizer==3.5.3 packaging==26.4 typing-extensions==4.16.0 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 \
  pygments==2.21.0 tabulate==0.10.0
LIB := pcam_nb
wheelhouse: venv  # the wheel is built from a copy, so no build/ or egg-info is left in the checkout
	rm -rf wheelhouse && mkdir -p wheelhouse
	tmp=$$(mktemp -d) && cp -r setup.py settings.ini README.md $(LIB) "$$tmp" && \
	  { $(BIN)/python -m pip wheel -q --no-deps -w wheelhouse "$$tmp" 2>&1 | $(QUIET_PIP); }; rm -rf "$$tmp"
	$(BIN)/python -m pip download -q --only-binary=:all: --python-version $(PY) --implementation py --platform any \
	  --no-deps -d wheelhouse $(WHEEL_PINNED) $(WHEEL_SUPPORT) 2>&1 | $(QUIET_PIP)
	{ echo "pcam_nb==$$(sed -n 's/^version *= *//p' settings.ini)"; printf '%s\n' $(WHEEL_PINNED); \
	  printf '%s\n' $(WHEEL_SUPPORT) | sed 's/==.*//'; } > wheelhouse/requirements.txt
	@n=$$(ls wheelhouse/*.whl | wc -l); want=$$(( $(words $(WHEEL_PINNED) $(WHEEL_SUPPORT)) + 1 )); \
	  test $$n -eq $$want || { echo "wheelhouse: $$n wheels, expected $$want (one per package)"; exit 1; }; \
	  echo "wheelhouse/: $$n wheels for Python $(PY), $$(du -sh wheelhouse | cut -f1); install offline with:"; \
	  echo "  pip install --no-index --find-links wheelhouse --no-deps -r wheelhouse/requirements.txt"

clean:
	rm -rf _docs _proc .pytest_cache
