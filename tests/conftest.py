"Shared helpers for the end-to-end tests: run console scripts as a user would, find the real sample data."
import os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def sample(name='pcam-sample', env='PCAM_SAMPLE'):
    "The real sample folder, or skip the test with the reason."
    p = Path(os.environ.get(env) or ROOT.parent/'shared'/'data'/name)
    if not (p/'labels.csv').exists():
        pytest.skip(f"real sample {name} not found at {p} (set {env} to its folder)")
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
