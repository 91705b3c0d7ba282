"Common functions for the end-to-end tests: run console scripts as a user would, find the real sample data, check what bad input leaves behind."
import contextlib, hashlib, io, os, shutil, socket, subprocess, sys, tempfile, time, traceback
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


# The longest test files, longest first (`make test` runs the files on two workers, a whole file each: started first, the
# long ones do not leave one worker busy at the end). The docs file builds the site when it is not fresh.
LONGEST = ['test_docs.py', 'test_train.py', 'test_gpu_check.py', 'test_distributed.py', 'test_predict.py',
           'test_equivariant.py', 'test_pipeline.py', 'test_evaluate.py', 'test_serve.py', 'test_tune.py']


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST)}
    items.sort(key=lambda it: rank.get(it.path.name, len(LONGEST)))   # stable: the rest keep their order


def sample(name='pcam-sample'):
    "The folder of real sample `name` (from its environment variable, else the default), or skip the test with the reason."
    if name not in SAMPLES: raise KeyError(f"unknown sample {name!r}: one of {', '.join(SAMPLES)}")
    env, marker = SAMPLES[name]
    p = Path(os.environ.get(env) or ROOT.parent/'shared'/'data'/name)
    if not (p/marker).exists():
        pytest.skip(f"real sample {name} not found at {p} (no {marker} there): set {env} to its folder")
    return p


def wsi_sample():
    "The real whole-slide sample folder (WSI_SAMPLE), or skip."
    return sample('wsi-sample')


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


def _forked(args, env, out, err):
    "Start console script `args[0]` as its entry point runs it, in a forked child writing to files `out` and `err`; its pid."
    from importlib.metadata import entry_points
    (ep,) = entry_points(group='console_scripts', name=args[0])
    main = ep.load()
    pid = os.fork()
    if pid: return pid
    code = 1
    try:   # the child: a fresh process in all but the interpreter's start-up (stdout strict UTF-8, stderr with escapes)
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, 'w', closefd=False), 'utf-8', 'strict', line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, 'w', closefd=False), 'utf-8', 'backslashreplace', line_buffering=True)
        sys.argv = [str(BIN/args[0]), *map(str, args[1:])]
        os.environ.update({'MPLBACKEND': 'Agg', **(env or {})})
        code = main()
        code = 0 if code is None else code
    except SystemExit as e:
        code = 0 if e.code is None else e.code
        if not isinstance(code, int): print(code, file=sys.stderr); code = 1
    except BaseException: traceback.print_exc()
    finally:
        sys.stdout.flush(); sys.stderr.flush(); os._exit(code)


def cli_many(calls, workers=4, timeout=300, env=None):
    """Run many console-script calls (each a tuple of its args, as for `cli`), `workers` at a time; their CompletedProcesses.
    Each runs in a child forked from this process, which has the package imported already: the same code, exit code
    and output as `cli`, without seconds of interpreter start-up per call."""
    res, running, todo = {}, {}, list(enumerate(calls))
    while todo or running:
        while todo and len(running) < workers:
            i, args = todo.pop(0)
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            running[_forked(args, env, out, err)] = (i, args, out, err, time.time())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for p, (i, args, *_, t) in list(running.items()):
                if time.time() - t > timeout: os.kill(p, 9)
            time.sleep(0.005); continue
        if pid not in running: continue
        i, args, out, err, _ = running.pop(pid)
        text = []
        for f in (out, err): f.seek(0); text.append(f.read().decode('utf-8', 'replace')); f.close()
        res[i] = subprocess.CompletedProcess([str(BIN/args[0]), *map(str, args[1:])], os.waitstatus_to_exitcode(status), *text)
    return [res[i] for i in range(len(calls))]


def fork_cli(*args, timeout=300, env=None):
    "`cli(*args)` run in a child forked from this process (see `cli_many`): the console script's own code, exit code and output."
    return cli_many([args], workers=1, timeout=timeout, env=env)[0]


def assert_clean_error(r, *fragments, one_line=False):
    "A failed CLI run with a helpful message (with `one_line`: exactly one line, 'error: ...', exit 2) and no traceback."
    assert r.returncode != 0, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr, r.stderr
    for f in fragments: assert f in r.stderr, (f, r.stderr)
    if one_line:
        lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith('note: ')]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), r.stderr


def tree_digest(folder):
    "Hash of every file's relative path and bytes under `folder` (None if it does not exist): proof that it was left untouched."
    folder = Path(folder)
    if not folder.exists(): return None
    h = hashlib.sha256()
    for f in sorted(folder.rglob('*')):
        if f.is_file() and not f.is_symlink(): h.update(os.fsencode(f.relative_to(folder))); h.update(f.read_bytes())
    return h.hexdigest()


def leftovers(folder):
    "Temporary files (.NAME.tmp-PID, as core's tmp_path names them) that writers left under `folder`."
    folder = Path(folder)
    return sorted(folder.rglob('.*.tmp-*')) if folder.exists() else []


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
    """`--help` output of a command: exit 0, every flag spelt with dashes, no flag together with its `--no-` twin unless
    argparse shows the two as one parameter (`--d4, --no-d4`: a setting whose default comes from the data)."""
    import re
    assert r.returncode == 0, r.stderr
    flags = set(re.findall(r'(?<![\w-])--[\w-]+', r.stdout))
    assert flags and not [f for f in flags if '_' in f], flags
    pairs = [f for f in flags if f.startswith('--no-') and '--' + f[5:] in flags and f"--{f[5:]}, {f}" not in r.stdout]
    assert not pairs, pairs
    return flags


@pytest.fixture(scope='module')
def one_torch_thread():
    "One torch thread in this module's tests and in the commands they start: a test process and its commands share 2 cores."
    import torch
    old, env = torch.get_num_threads(), os.environ.get('OMP_NUM_THREADS')
    torch.set_num_threads(1); os.environ['OMP_NUM_THREADS'] = '1'
    yield
    torch.set_num_threads(old)
    if env is None: os.environ.pop('OMP_NUM_THREADS', None)
    else: os.environ['OMP_NUM_THREADS'] = env


@pytest.fixture(scope='session')
def _tiny_run(tmp_path_factory):
    "One small run trained once per test session: simple_cnn, 1 epoch, 512 synthetic 64 px patches (with a test split)."
    from pcam_nb.synth import make_synthetic
    from pcam_nb.train import pcam_run
    root = tmp_path_factory.mktemp('tiny_run')
    data = make_synthetic(root/'synth', n_train=512, n_valid=256, n_test=256, size=64, seed=5, progress=False)
    pcam_run(data, 'simple_cnn', epochs=1, out=root/'run', bs=64, device='cpu', progress=False)
    return root/'run', data


@pytest.fixture
def tiny_run_copy(_tiny_run, tmp_path):
    "(run folder, data folder): a fresh copy of the session's small 64 px run (its reports are the test's own)."
    run, data = _tiny_run
    shutil.copytree(run, tmp_path/'run')
    return tmp_path/'run', data


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    "A run at PCam's own patch size (96 px) trained once per test session, for tests that only read it (slides, the service)."
    from pcam_nb.train import pcam_run
    out = tmp_path_factory.mktemp('tiny-run')/'run'
    pcam_run('synthetic', 'simple_cnn', epochs=1, out=out, limit=512, valid_limit=256, device='cpu', progress=False)
    return out


@contextlib.contextmanager
def serving(run_dir, *args, timeout=240):
    "`pcam_serve RUN_DIR ARGS` (the console script, or its entry point when not installed) on a free loopback port: an httpx client."
    import httpx
    with socket.socket() as sock: sock.bind(('127.0.0.1', 0)); port = sock.getsockname()[1]
    exe = BIN/'pcam_serve'
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', "import sys; sys.argv[0] = 'pcam_serve'; "
                                           "from pcam_nb.serve import pcam_serve; pcam_serve()"]
    p = subprocess.Popen(cmd + [str(run_dir), '--port', str(port), '--device', 'cpu', *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL, env={**os.environ, 'MPLBACKEND': 'Agg'})
    url = f'http://127.0.0.1:{port}'
    try:
        t0 = time.time()
        while True:
            if p.poll() is not None: pytest.fail(f"pcam_serve exited: {p.stdout.read()[-3000:]}")
            try:
                if httpx.get(url + '/health', timeout=2).status_code == 200: break
            except httpx.HTTPError: pass
            if time.time() - t0 > timeout: pytest.fail(f'pcam_serve did not answer /health within {timeout} s')
            time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=60) as c: yield c
    finally:
        p.terminate()
        try: p.wait(20)
        except subprocess.TimeoutExpired: p.kill()
