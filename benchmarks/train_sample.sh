#!/usr/bin/env bash
# GPU measurement for the training chapter: the default recipe of vgg16_bn, resnet18 and the baseline CNN,
# from scratch, on the real PCam sample (20,000 train / 3,000 valid). Run on a CUDA machine from the repo root:
#     PCAM_SAMPLE=/path/to/pcam-sample bash benchmarks/train_sample.sh
# (PCAM_SAMPLE: the sample's folder; not needed once H5, default data/pcam-sample-h5, holds its HDF5 conversion.)
# Writes runs/sample-<arch>/ and benchmarks/train_sample.md (per-epoch history and a summary table), then evaluates
# each run on the valid split with and without D4 TTA (pcam_evaluate, whose TTA is on by default) into benchmarks/eval_sample.md.
# Both summaries are rewritten after every architecture, over every finished run, so a stopped run of this script
# keeps what it finished.
# Goes on where it stopped: a run that was trained and evaluated is kept, a trained one is evaluated, a killed one
# continues from its last checkpoint (pcam_train --resume), anything else starts again.
# ARCHS="vgg16_bn" picks architectures; TRAIN_ARGS adds pcam_train options (for a smoke run only: the figures are
# the default recipe's); ALLOW_CPU=1 lets it run without CUDA (a smoke run: those are not GPU figures).
set -euo pipefail
PY=${PY:-.venv/bin/python}; BIN=$(dirname "$PY")
H5=${H5:-data/pcam-sample-h5}
ARCHS=${ARCHS:-vgg16_bn resnet18 simple_cnn}   # e.g. ARCHS=vgg16_bn for one architecture
TRAIN_ARGS=${TRAIN_ARGS:-}
export ARCHS TRAIN_ARGS
if [ ! -f "$H5/camelyonpatch_level_2_split_train_x.h5" ]; then
  [ -n "${PCAM_SAMPLE:-}" ] || { echo "train_sample.sh: $H5 holds no PCam HDF5 files and PCAM_SAMPLE is not set: set PCAM_SAMPLE to the real sample's folder (or H5 to a converted copy)" >&2; exit 2; }
  "$BIN/pcam_convert" "$PCAM_SAMPLE" "$H5" --no-progress
fi
[ "${ALLOW_CPU:-0}" = 1 ] ||
  "$PY" -c "import sys, torch; torch.cuda.is_available() or sys.exit('no CUDA GPU: these figures must be measured on a GPU (ALLOW_CPU=1 for a smoke run)')"

summaries() {
"$PY" - <<'PY'
import json, os, pandas as pd
from pathlib import Path
from pcam_nb.evaluate import compare_runs
from pcam_nb.train import runs_table
archs = list(dict.fromkeys(['vgg16_bn', 'resnet18', 'simple_cnn'] + os.environ['ARCHS'].split()))
runs = [Path(f'runs/sample-{a}') for a in archs if Path(f'runs/sample-{a}/metrics.json').exists()]
cfgs = {r: json.loads((r/'config.json').read_text()) for r in runs}
machines = sorted({str(c.get('device_name')) for c in cfgs.values()})
extra = f"TRAIN_ARGS='{os.environ['TRAIN_ARGS']}' " if os.environ['TRAIN_ARGS'] else ''
cmd = f"`{extra}bash benchmarks/train_sample.sh`"
resumed = [r.name for r, c in cfgs.items() if 'resumed_on' in c]
out = ["# Training on the real PCam sample (20,000 train / 3,000 valid), default recipe, from scratch", "",
       f"Machine: {', '.join(machines)}. Command: {cmd}." +
       (f" Resumed from a checkpoint after a stop: {', '.join(resumed)} (epoch times are per epoch either way)." if resumed else ''),
       "", runs_table(runs).to_markdown(index=False), ""]
for r in runs:
    out += [f"## {r.name}", "", pd.read_csv(r/'history.csv').to_markdown(index=False), ""]
Path('benchmarks/train_sample.md').write_text('\n'.join(out))
ev = [r for r in runs if (r/'eval_valid.json').exists()]
if ev:
    reps = [json.loads((r/'eval_valid.json').read_text()) for r in ev]
    out = ["# Evaluation on the real PCam sample's valid split (3,000 patches), with and without D4 TTA", "",
           f"Machine: {', '.join(machines)}. Command: {cmd} (pcam_evaluate RUN --split valid).",
           "The valid split also chose each run's best epoch, so the figures are slightly optimistic.", "",
           compare_runs(ev, 'valid').to_markdown(index=False), "",
           "| run | D4-TTA inference, s per 1,000 patches | ECE before -> after temperature (plain) |", "|---|---|---|"]
    out += [f"| {r.name} | {m['tta_seconds_per_1000']:.3f} | {m['calibration']['plain']['ece_before']:.4f} -> "
            f"{m['calibration']['plain']['ece_after']:.4f} |" for r, m in zip(ev, reps)]
    Path('benchmarks/eval_sample.md').write_text('\n'.join(out) + '\n')
print(f"summaries: {len(runs)} trained, {len(ev)} evaluated: benchmarks/train_sample.md, benchmarks/eval_sample.md")
PY
}

one() {  # train (or resume, or keep) and evaluate one architecture; non-zero on failure
  local arch=$1 r=runs/sample-$1
  if [ -f "$r/metrics.json" ] && [ -f "$r/eval_valid.json" ]; then
    echo "$r: trained and evaluated earlier: kept"; return 0
  elif [ -f "$r/metrics.json" ]; then
    echo "$r: trained earlier: evaluating"
  elif [ -f "$r/state.json" ] && [ -f "$r/checkpoint.pth" ]; then
    echo "$r: stopped earlier: resuming from its last checkpoint"
    "$BIN/pcam_train" --out "$r" --resume --no-progress || return 1
  else
    rm -rf "$r"
    # shellcheck disable=SC2086
    "$BIN/pcam_train" --data "$H5" --arch "$arch" --out "$r" --no-progress $TRAIN_ARGS || return 1
  fi
  "$BIN/pcam_evaluate" "$r" --split valid --no-progress || return 1
}

failed=""
for arch in $ARCHS; do  # one architecture failing (say, out of memory) does not stop the others
  one "$arch" || { echo "train_sample.sh: $arch FAILED (see above)" >&2; failed="$failed $arch"; }
  summaries
done
[ -z "$failed" ] || { echo "train_sample.sh: failed:$failed" >&2; exit 1; }
