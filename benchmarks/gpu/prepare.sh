#!/usr/bin/env bash
# Runs HERE (a machine with PyPI access and the real sample), from anywhere in the repo. Idempotent: what is already
# there and intact is kept. Fills the ignored folders that device `run` calls carry to the GPU machine:
#   .whl/           pure-Python wheels that the GPU machine lacks (fastai's stack, ~2 MB): pure ones only (plum-dispatch
#                   also comes compiled for cp312; its pure wheel is the same code and installs here too, for the test)
#   .carry/sample1/ .carry/sample2/   the real PCam sample ($PCAM_SAMPLE) as two .tar.gz parts (< 50 MiB each)
#                   with SHA256SUMS of every file and part.json; see benchmarks/gpu/kit.py
# Usage: bash benchmarks/gpu/prepare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=benchmarks/gpu
SAMPLE=${PCAM_SAMPLE:-../shared/data/pcam-sample}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

# The verified set (../shared/notes/stack.md): fastprogress 1.0.3, since 1.1.x imports fasthtml.
WHEELS="fastai==2.8.7 fastcore==1.14.5 fastdownload==0.0.8 fasttransform==0.0.2 plum-dispatch==2.10.1
        beartype==0.23.1 fastprogress==1.0.3 escnn==1.0.11"
# escnn as the Makefile installs it (--no-deps; pcam_nb.equivariant stands in for lie_learn): kit.py's NOT_NEEDED says
# why its other requirements stay behind (lie_learn's cp312 wheel is built for numpy<2, py3nj has no wheel).

download() {  # download pure|binary DEST SPEC...: wheels for Python 3.12 (pure: py3-none-any only; binary: also
  # CPython 3.12 on x86_64 Linux), no dependencies. Only `pure` is used now; `binary` is kept for a compiled package.
  local kind=$1 dest=$2; shift 2
  local plat="--implementation py --platform any"
  [ "$kind" = binary ] && plat="--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
  mkdir -p "$dest"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 $plat -d "$dest" "$@" 2>&1 \
    | { grep -v '^WARNING: Location' || true; }
}

# Wheels: drop any not in the list (two versions of one package stop the whole install there), fetch what is missing.
want() {  # the file-name stems (name-version, normalised) of a spec list
  for s in $1; do echo "$s" | sed 's/==/-/; s/[-_.]\+/_/g' | tr A-Z a-z; done
}
prune() {  # prune DIR SPECS [pure]: remove wheels in DIR that are not in SPECS (or, with pure, not py3-none-any)
  local dir=$1 keep; keep=$(want "$2")
  for f in "$dir"/*.whl; do
    [ -e "$f" ] || continue
    stem=$(basename "$f" | cut -d- -f1-2 | sed 's/[-_.]\+/_/g' | tr A-Z a-z)
    if ! grep -qx "$stem" <<<"$keep" || { [ "${3:-}" = pure ] && [[ $f != *-none-any.whl ]]; }; then
      echo "removing $(basename "$f") (not in the list)"; rm -f "$f"
    fi
  done
}
mkdir -p .whl; prune .whl "$WHEELS" pure
download pure .whl $WHEELS
echo ".whl: $(ls .whl | wc -l) wheels, $(du -cb .whl/*.whl | tail -1 | cut -f1) bytes"
"$PY" $KIT/kit.py checkdeps .whl $KIT/machine_packages.txt --settings settings.ini

# The sample, in two parts (each call carries at most 64 MiB, the working tree and wheels included).
[ -f "$SAMPLE/labels.csv" ] || { echo "prepare.sh: no PCam sample at $SAMPLE (set PCAM_SAMPLE)" >&2; exit 2; }
"$PY" $KIT/kit.py pack "$SAMPLE" .carry --parts 2
du -sb .whl .carry/sample* | awk '{printf "%-16s %6.1f MiB\n", $2, $1/1048576}'
echo "prepare.sh: done. Next: the device run calls in $KIT/README.md"
