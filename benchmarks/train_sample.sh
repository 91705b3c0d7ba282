#!/usr/bin/env bash
# GPU measurement for the training chapter: the default recipe of vgg16_bn, resnet18 and the baseline CNN,
# from scratch, on the real PCam sample (20,000 train / 3,000 valid). Run on a CUDA machine from the repo root:
#     PCAM_SAMPLE=/path/to/pcam-sample bash benchmarks/train_sample.sh
# Writes runs/sample-<arch>/ and benchmarks/train_sample.md (per-epoch history and a summary table), then evaluates
# each run on the valid split with and without D4 TTA (pcam_evaluate --tta) into benchmarks/eval_sample.md.
set -euo pipefail
PY=${PY:-.venv/bin/python}; BIN=$(dirname "$PY")
SAMPLE=${PCAM_SAMPLE:-../shared/data/pcam-sample}
H5=${H5:-data/pcam-sample-h5}
ARCHS=${ARCHS:-vgg16_bn resnet18 simple_cnn}   # e.g. ARCHS=vgg16_bn for one architecture per call
export ARCHS
[ -f "$H5/camelyonpatch_level_2_split_train_x.h5" ] || "$BIN/pcam_convert" "$SAMPLE" "$H5"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU: these figures must be measured on a GPU'"
for arch in $ARCHS; do
  rm -rf "runs/sample-$arch"
  "$BIN/pcam_train" --data "$H5" --arch "$arch" --out "runs/sample-$arch" --no-progress
  "$BIN/pcam_evaluate" "runs/sample-$arch" --split valid --tta --no-progress
done
"$PY" - <<'PY'
import json, pandas as pd, torch
from pathlib import Path
from pcam_nb.train import runs_table, md_table
runs = [Path(f'runs/sample-{a}') for a in ('vgg16_bn', 'resnet18', 'simple_cnn') if Path(f'runs/sample-{a}/metrics.json').exists()]
out = ["# Training on the real PCam sample (20,000 train / 3,000 valid), default recipe, from scratch", "",
       f"Machine: {torch.cuda.get_device_name()}. Command: `bash benchmarks/train_sample.sh`.", "",
       md_table(runs_table(runs)), ""]
for r in runs:
    h = pd.read_csv(r/'history.csv')
    out += [f"## {r.name}", "", md_table(h), ""]
Path('benchmarks/train_sample.md').write_text('\n'.join(out))
print('\n'.join(out))
PY
"$PY" - <<'PY'
import json, torch
from pathlib import Path
from pcam_nb.evaluate import compare_runs
from pcam_nb.train import md_table
runs = [Path(f'runs/sample-{a}') for a in ('vgg16_bn', 'resnet18', 'simple_cnn') if Path(f'runs/sample-{a}/metrics.json').exists()]
reps = [json.loads((r/'eval_valid.json').read_text()) for r in runs]
out = ["# Evaluation on the real PCam sample's valid split (3,000 patches), with and without D4 TTA", "",
       f"Machine: {torch.cuda.get_device_name()}. Command: `bash benchmarks/train_sample.sh` (pcam_evaluate RUN --split valid --tta).",
       "The valid split also chose each run's best epoch, so the figures are slightly optimistic.", "",
       md_table(compare_runs(runs, 'valid')), "",
       "| run | D4-TTA inference, s per 1,000 patches | ECE before -> after temperature (plain) |", "|---|---|---|"]
out += [f"| {r.name} | {m['tta_seconds_per_1000']:.3f} | {m['calibration']['plain']['ece_before']:.4f} -> {m['calibration']['plain']['ece_after']:.4f} |"
        for r, m in zip(runs, reps)]
Path('benchmarks/eval_sample.md').write_text('\n'.join(out) + '\n')
print('\n'.join(out))
PY
