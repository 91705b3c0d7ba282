"Common functions for the end-to-end tests: run console scripts as a user would, find the real sample data."
import os, subprocess, sys
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


def run_command(func, *args):
    """Run console-script function `func` in this process as its command does (argv[0] is its name), stdout and stderr
    captured: a CompletedProcess like `cli`'s, with the same argument parsing and error handling, without the seconds a
    new process spends importing torch. An unexpected exception propagates (the test fails with its traceback)."""
    import contextlib, io
    out, err, old = io.StringIO(), io.StringIO(), sys.argv
    sys.argv, code = [func.__name__, *map(str, args)], 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): func()
    except SystemExit as e: code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally: sys.argv = old
    return subprocess.CompletedProcess([func.__name__, *map(str, args)], code, out.getvalue(), err.getvalue())


def assert_one_line_error(r, *fragments):
    "A refused command: exit status 2, one line 'error: ...' holding `fragments`, no traceback."
    assert_clean_error(r, *fragments)
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and err.startswith('error: '), (r.returncode, err)


def assert_uniform_help(r):
    "`--help` output of a command: exit 0, every flag spelt with dashes, no flag together with its `--no-` twin."
    import re
    assert r.returncode == 0, r.stderr
    flags = set(re.findall(r'(?<![\w-])--[\w-]+', r.stdout))
    assert flags and not [f for f in flags if '_' in f], flags
    pairs = [f for f in flags if f.startswith('--no-') and '--' + f[5:] in flags]
    assert not pairs, pairs
    return flags


@pytest.fixture(scope='session')
def _tiny_run(tmp_path_factory):
    "One small trained run shared by every test that needs one: simple_cnn, 1 epoch, on 64 px synthetic patches with a test split."
    from pcam_nb.synth import make_synthetic
    from pcam_nb.train import pcam_run
    root = tmp_path_factory.mktemp('tiny_run')
    data = make_synthetic(root/'synth', n_train=512, n_valid=256, n_test=256, size=64, seed=5, progress=False)
    pcam_run(data, 'simple_cnn', epochs=1, out=root/'run', bs=64, device='cpu', progress=False)
    return root/'run', data


@pytest.fixture
def tiny_run(_tiny_run, tmp_path):
    "(run folder, data folder): a fresh copy of the session's small trained run (its reports are the test's own)."
    import shutil
    run, data = _tiny_run
    shutil.copytree(run, tmp_path/'run')
    return tmp_path/'run', data
