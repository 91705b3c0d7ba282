"Common functions for the end-to-end tests: run console scripts as a user would, find the real sample data."
import os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# The real sample data sets: name -> (environment variable that points to its folder, a file or folder it must hold).
# The only place the tests look for them; the default is ../shared/data/<name> beside the repository.
SAMPLES = {'pcam-sample': ('PCAM_SAMPLE', 'labels.csv'),
           'chest-xray-sample': ('CHEST_XRAY_SAMPLE', 'labels.csv'),
           'glas-sample': ('GLAS_SAMPLE', 'masks'),
           'bcss-sample': ('BCSS_SAMPLE', 'masks'),
           'wsi-sample': ('WSI_SAMPLE', 'cmu-1-small-region.svs')}


def sample(name='pcam-sample'):
    "The folder of real sample `name` (from its environment variable, else the default), or skip the test with the reason."
    if name not in SAMPLES: raise KeyError(f"unknown sample {name!r}: one of {', '.join(SAMPLES)}")
    env, marker = SAMPLES[name]
    p = Path(os.environ.get(env) or ROOT.parent/'shared'/'data'/name)
    if not (p/marker).exists():
        pytest.skip(f"real sample {name} not found at {p} (no {marker} there): set {env} to its folder")
    return p


def quarto_env(timeout=600):
    "Environment with Quarto on PATH (`make quarto`: PATH, else .venv/bin/quarto, else the offline kit), or skip."
    if not shutil.which('make'): pytest.skip('make not found (it finds or installs Quarto: make quarto)')
    r = subprocess.run(['make', '--no-print-directory', f'VENV={BIN.parent}', '-o', str(BIN/'.installed'), 'quarto'],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode:
        pytest.skip(f"no Quarto: {((r.stderr or r.stdout).strip().splitlines() or ['make quarto failed'])[-1]}")
    return {**os.environ, 'PATH': f"{os.environ.get('PATH', '')}{os.pathsep}{BIN}"}


def cli(*args, cwd=None, timeout=300, env=None):
    "Run console script `args[0]` of this venv; returns the CompletedProcess (text)."
    exe = BIN/args[0]
    return subprocess.run([str(exe), *map(str, args[1:])], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, 'MPLBACKEND': 'Agg', **(env or {})}, stdin=subprocess.DEVNULL)


def assert_clean_error(r, *fragments):
    "A failed CLI run with a one-line, helpful message and no traceback."
    assert r.returncode != 0, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr, r.stderr
    for f in fragments: assert f in r.stderr, (f, r.stderr)
