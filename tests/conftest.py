"Shared helpers for the end-to-end tests: run console scripts as a user would, find the real sample data."
import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def sample(name='pcam-sample', env='PCAM_SAMPLE', marker='labels.csv'):
    "The real sample folder, or skip the test with the reason."
    p = Path(os.environ.get(env) or ROOT.parent/'shared'/'data'/name)
    if not (p/marker).exists():
        pytest.skip(f"real sample {name} not found at {p} (set {env} to its folder)")
    return p


def wsi_sample():
    "The real whole-slide sample folder (WSI_SAMPLE), or skip."
    return sample('wsi-sample', 'WSI_SAMPLE', 'cmu-1-small-region.svs')


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    "A pcam_train run trained once per test session: simple_cnn, 1 epoch, 512 synthetic patches."
    from pcam_nb.train import pcam_run
    out = tmp_path_factory.mktemp('tiny-run')/'run'
    pcam_run('synthetic', 'simple_cnn', epochs=1, out=out, limit=512, valid_limit=256, device='cpu', progress=False)
    return out


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
