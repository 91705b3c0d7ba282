#!/usr/bin/env bash
# GPU measurement for the bench chapter (nbs/10_bench.ipynb): on ONE CUDA device, in ONE process, for vgg16_bn and
# resnet18 at 96x96: the compute ceiling, the project's fastai pipeline (GPU-resident loader over an HDF5 split,
# augmentation on) and a typical per-item PyTorch pipeline (h5py Dataset, torchvision transforms, 8 workers, fp32);
# one full-size epoch (262,144 patches), loading that split to the GPU, D4-TTA over 32,768 patches.
# Run on a CUDA machine (an H100 for the project's targets) from the repo root:
#     bash benchmarks/bench_gpu.sh        (or: make bench)
# Generates data/bench once (pcam_synth's generator; a few minutes on 16 cores, 8 GB on disk), then writes
# benchmarks/bench.json, benchmarks/bench.md and runs/bench-profile/ (torch.profiler profile of one vgg16_bn epoch: phases, top ops, trace).
# PY=/path/to/python picks another interpreter (one where pcam_nb and fastai import).
# To generate the data on its own first (then the measurement alone takes about 5 minutes):
#     bash benchmarks/bench_gpu.sh --data-only
# A shorter check of the whole toolkit on a GPU (train, evaluate, bench in 8 minutes): make gpu-check.
# Other arguments go to pcam_bench (e.g. --archs resnet18, --steps 100, --no-compile).
set -euo pipefail
PY=${PY:-.venv/bin/python}
if [ "${1:-}" = --data-only ]; then
  "$PY" -c "from pcam_nb.bench import ensure_data; from pcam_nb.data import data_dir; print(ensure_data(data_dir()/'bench', 262144, 32768))"
  exit 0
fi
"$PY" -c "import sys, torch; torch.cuda.is_available() or sys.exit('no CUDA GPU: these figures must be measured on a GPU')"
"$PY" -c "import torch; print(torch.cuda.get_device_name(), torch.__version__)"
# run the console script's code under its own name (pcam_cli parses arguments when argv[0] is pcam_bench)
"$PY" - --json benchmarks/bench.json --profile runs/bench-profile "$@" <<'PY'
import sys; sys.argv[0] = 'pcam_bench'
from pcam_nb.bench import pcam_bench
pcam_bench()
PY
cat benchmarks/bench.md
