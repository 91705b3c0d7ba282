# benchmarks/gpu/setup.sh: runs THERE (the lent GPU machine: Python 3.12 + torch, no fastai, no network), from the
# repo root, as the first step of every device `run` command of benchmarks/gpu/README.md:
#
#     source benchmarks/gpu/setup.sh [--need-sample] || exit 1
#
# Each step is skipped when an earlier call already did it on this (warm) machine:
#   1. wheels: the carried .whl/*.whl -> /tmp/site (pip install --no-index --no-deps --target), then a check that
#      pcam_nb, fastai and CUDA import
#   2. commands: /tmp/pcam-gpu/bin/python (the machine's python3 with /tmp/site and this working tree on sys.path)
#      and every console script of settings.ini (pcam_train, pcam_evaluate, pcam_convert, pcam_bench, ...), so
#      scripts that run "$PY" and "$(dirname $PY)/pcam_train" (benchmarks/train_sample.sh) work unchanged
#   3. sample: each carried part (.carry/sample1, .carry/sample2) -> data/pcam-sample.incoming; once both parts are on
#      this machine, every file is checked against SHA256SUMS and the folder becomes data/pcam-sample
#   4. HDF5: once the sample is complete, pcam_convert data/pcam-sample data/pcam-sample-h5 (once)
# Exports PCAM_KIT_T0 (now: the call's start), PYTHONPATH, PY, PCAM_SAMPLE, H5, MPLBACKEND, PYTHONUNBUFFERED and PCAM_SAMPLE_READY (1 when data/pcam-sample
# and data/pcam-sample-h5 are ready, else 0). With --need-sample it fails unless they are ready.
# Sourced (not run) so the exports reach the rest of the command; it never exits the caller's shell. The work runs
# in a separate bash process (`bash setup.sh --body`), where `set -e` holds.

if [ "${1:-}" = --body ]; then
  set -euo pipefail
  _pcam_gpu_site=$2 _pcam_gpu_bin=$3
  real_py=${PCAM_REAL_PY:-$(command -v python3)}
  site=$_pcam_gpu_site bin=$_pcam_gpu_bin repo=$PWD
  SECONDS=0
  [ -f settings.ini ] && [ -d pcam_nb ] || { echo "setup.sh: run from the repo root" >&2; exit 1; }

  # 1. wheels
  if compgen -G ".whl/*.whl" >/dev/null; then
    sig=$(cd .whl && ls -l --time-style=+ ./*.whl | awk '{print $5, $NF}' | sha256sum | cut -c1-16)
    if [ "$(cat $site/.pcam-kit-wheels 2>/dev/null)" != "$sig" ]; then
      "$real_py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $site .whl/*.whl \
        2>&1 | { grep -v -e '^WARNING: Target directory' -e 'already exists. Specify --upgrade' || true; }
      echo "$sig" > $site/.pcam-kit-wheels
      echo "setup: installed $(ls .whl/*.whl | wc -l) wheels into $site"
    fi
  elif [ ! -f $site/.pcam-kit-wheels ]; then
    echo "setup.sh: no wheels here: name .whl in the call's carry (bash benchmarks/gpu/prepare.sh makes it)" >&2; exit 1
  fi
  export PYTHONPATH=$site:$repo${PYTHONPATH:+:$PYTHONPATH}
  if [ ! -f $site/.pcam-kit-checked ]; then
    "$real_py" - <<'PY'
import sys, torch, torchvision, numpy, fastai, fastcore, fastprogress, pcam_nb, pcam_nb.train, pcam_nb.evaluate
from pcam_nb.equivariant import escnn_modules; escnn_modules()  # escnn from the carried wheel, planar groups
print(f"setup: python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"numpy {numpy.__version__}, fastai {fastai.__version__} ({fastai.__file__}), fastcore {fastcore.__version__}, "
      f"fastprogress {fastprogress.__version__}, pcam_nb {pcam_nb.__version__} ({pcam_nb.__file__})")
import os; site = os.environ['PYTHONPATH'].split(':')[0]
assert fastai.__file__.startswith(site + '/'), f"fastai from {fastai.__file__}, not the carried wheel in {site}"
print("setup: CUDA", torch.cuda.is_available() and torch.cuda.get_device_name())
PY
    touch $site/.pcam-kit-checked
  fi

  # 2. commands: a console script per settings.ini entry, as pip writes them (fastcore's call_parse needs a real
  #    __main__ file, pcam_cli needs argv[0] to be the command's name), running this working tree's pcam_nb.
  mkdir -p $bin
  printf '#!/bin/sh\nexport PYTHONPATH=%s:%s${PYTHONPATH:+:$PYTHONPATH}\nexec %s "$@"\n' $site "$repo" "$real_py" > $bin/python
  chmod +x $bin/python
  touch $bin/.installed  # so `make bench VENV=${bin%/bin}` finds its "venv" up to date (no pip there)
  "$real_py" - "$real_py" $site "$repo" $bin <<'PY'
import configparser, os, sys
real_py, site, repo, bin_ = sys.argv[1:]
c = configparser.ConfigParser(delimiters=['=']); c.read('settings.ini')
n = 0
for entry in c['DEFAULT']['console_scripts'].split():
    name, target = entry.split('=')
    mod, func = target.split(':')
    p = os.path.join(bin_, name)
    with open(p + '.tmp', 'w') as f:
        f.write(f"#!{real_py}\nimport re, sys\nsys.path[:0] = [{site!r}, {repo!r}]\nfrom {mod} import {func}\n"
                f"if __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                f"    sys.exit({func}())\n")
    os.chmod(p + '.tmp', 0o755); os.replace(p + '.tmp', p); n += 1
print(f"setup: {n} commands in {bin_}: {' '.join(sorted(os.listdir(bin_)))}")
PY

  # 3. sample parts -> data/pcam-sample (exit code 3: parts still to come)
  rc=0
  if compgen -G ".carry/sample*/part.json" >/dev/null || [ -f data/.pcam-sample.kit.json ]; then
    "$real_py" benchmarks/gpu/kit.py unpack .carry data/pcam-sample || rc=$?
  else
    echo "setup: no sample part carried and none on this machine"; rc=3
  fi
  [ $rc = 0 ] || [ $rc = 3 ] || exit 1

  # 4. HDF5 copy, once per verified sample (pcam_convert writes each file atomically; the stamp says it finished)
  if [ $rc = 0 ]; then
    id=$(cat data/.pcam-sample.kit.json)
    if [ "$(cat data/.pcam-sample-h5.kit.json 2>/dev/null)" != "$id" ]; then
      rm -rf data/pcam-sample-h5
      t=$(date +%s)
      $bin/pcam_convert data/pcam-sample data/pcam-sample-h5 --no-progress
      echo "$id" > data/.pcam-sample-h5.kit.json
      echo "setup: converted the sample to HDF5 in $(( $(date +%s) - t )) s"
    else
      echo "setup: data/pcam-sample-h5 ready (converted earlier on this machine)"
    fi
  fi
  echo "setup: done in ${SECONDS} s"
  exit $rc
fi

# /tmp/site and /tmp/pcam-gpu/bin unless PCAM_GPU_SITE / PCAM_GPU_BIN say otherwise (the local test does);
# PCAM_REAL_PY: the python to use (default: python3 on PATH, the one that holds PyTorch there).
export PCAM_KIT_T0=$(date +%s)  # the call's start: benchmarks/gpu/session.py plans its stages from it
_pcam_gpu_site=${PCAM_GPU_SITE:-/tmp/site} _pcam_gpu_bin=${PCAM_GPU_BIN:-/tmp/pcam-gpu/bin}
_pcam_gpu_need=0; [ "${1:-}" = --need-sample ] && _pcam_gpu_need=1
_pcam_gpu_rc=0; bash "${BASH_SOURCE[0]}" --body "$_pcam_gpu_site" "$_pcam_gpu_bin" || _pcam_gpu_rc=$?
export PYTHONPATH=$_pcam_gpu_site:$PWD${PYTHONPATH:+:$PYTHONPATH} PY=$_pcam_gpu_bin/python \
       PCAM_SAMPLE=$PWD/data/pcam-sample H5=$PWD/data/pcam-sample-h5 MPLBACKEND=Agg PYTHONUNBUFFERED=1
export PCAM_SAMPLE_READY=$([ $_pcam_gpu_rc = 0 ] && echo 1 || echo 0)
if [ $_pcam_gpu_rc != 0 ] && [ $_pcam_gpu_rc != 3 ]; then
  echo "setup.sh: FAILED (see above)" >&2; false
elif [ $_pcam_gpu_rc = 3 ] && [ $_pcam_gpu_need = 1 ]; then
  echo "setup.sh: the sample is not complete on this machine. If part 1 was carried in the call before, the machine" \
       "went cold in between (a fresh machine keeps nothing): repeat call (a), then (b) at once (benchmarks/gpu/README.md)" >&2
  false
fi
