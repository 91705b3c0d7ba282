#!/usr/bin/env bash
# GPU measurement for the training chapter: the default recipe of vgg16_bn, resnet18 and the baseline CNN,
# from scratch, on the real PCam sample (20,000 train / 3,000 valid). Run on a CUDA machine from the repo root:
#     PCAM_SAMPLE=/path/to/pcam-sample bash benchmarks/train_sample.sh
# Writes runs/sample-<arch>/ and benchmarks/train_sample.md (per-epoch history and a summary table).
set -euo pipefail
PY=${PY:-.venv/bin/python}; BIN=$(dirname "$PY")
SAMPLE=${PCAM_SAMPLE:-../shared/data/pcam-sample}
H5=${H5:-data/pcam-sample-h5}
[ -f "$H5/camelyonpatch_level_2_split_train_x.h5" ] || "$BIN/pcam_convert" "$SAMPLE" "$H5"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU: these figures must be measured on a GPU'"
for arch in vgg16_bn resnet18 simple_cnn; do
  rm -rf "runs/sample-$arch"
  "$BIN/pcam_train" --data "$H5" --arch "$arch" --out "runs/sample-$arch" --no-progress
done
"$PY" - <<'PY'
import json, pandas as pd, torch
from pathlib import Path
from pcam_nb.train import runs_table, md_table
runs = [Path(f'runs/sample-{a}') for a in ('vgg16_bn', 'resnet18', 'simple_cnn')]
out = ["# Training on the real PCam sample (20,000 train / 3,000 valid), default recipe, from scratch", "",
       f"Machine: {torch.cuda.get_device_name()}. Command: `bash benchmarks/train_sample.sh`.", "",
       md_table(runs_table(runs)), ""]
for r in runs:
    h = pd.read_csv(r/'history.csv')
    out += [f"## {r.name}", "", md_table(h), ""]
Path('benchmarks/train_sample.md').write_text('\n'.join(out))
print('\n'.join(out))
PY
