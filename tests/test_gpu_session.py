"""benchmarks/gpu/session.py, the one command of every GPU device call, run here on the CPU with --smoke: every stage
(train_sample.sh + pcam_evaluate, pcam_bench, the equivariance study) runs for real on tiny data in a copy of the repo;
then the planning (what counts as done, what waits for the sample), the deadline and the study's time planning."""
import importlib.util, json, os, shutil, subprocess, sys, tarfile, time
from pathlib import Path
import pytest
from conftest import ROOT

SESSION = ROOT/'benchmarks'/'gpu'/'session.py'
spec = importlib.util.spec_from_file_location('gpu_session', SESSION)
session = importlib.util.module_from_spec(spec); spec.loader.exec_module(session)


def repo_copy(dest: Path) -> Path:
    "The working tree as a fresh clone plus uncommitted files would have it (what a device call carries)."
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split('\n')
    for f in filter(None, files):
        if (ROOT/f).is_file():
            (dest/f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT/f, dest/f)
    return dest


def run_session(repo: Path, out: Path, *args, env=None, timeout=900):
    e = {**os.environ, 'PY': sys.executable, 'PYTHONPATH': str(repo), 'MPLBACKEND': 'Agg', **(env or {})}
    for k in ('OUT', 'PCAM_KIT_T0', 'PCAM_SAMPLE_READY', 'H5'): e.pop(k, None)
    e.update(env or {})
    return subprocess.run([sys.executable, str(repo/'benchmarks/gpu/session.py'), '--out', str(out), *args], cwd=repo,
                          env=e, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    if not (ROOT/'.git').exists(): pytest.skip('needs a git checkout (the copy is made from git ls-files)')
    repo = repo_copy(tmp_path_factory.mktemp('repo'))
    out = tmp_path_factory.mktemp('out')
    r = run_session(repo, out, '--smoke')
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return repo, out, r


def test_smoke_session_runs_every_stage(smoke, tmp_path):
    repo, out, r = smoke
    st = json.loads((out/'status.json').read_text())
    assert st['all_done'] and st['sample_ready'] and st['next'].startswith('all done'), st
    assert all(v.startswith('done: ') for v in st['stages'].values()), st['stages']
    with tarfile.open(out/'results.tgz') as t:
        names = set(t.getnames()); t.extractall(tmp_path, filter='data')
    assert {'benchmarks/bench.json', 'benchmarks/bench.md', 'benchmarks/train_sample.md', 'benchmarks/eval_sample.md',
            'runs/sample-simple_cnn/metrics.json', 'runs/sample-simple_cnn/eval_valid.json',
            'runs/sample-simple_cnn/eval_valid/predictions.csv', 'runs/session-smoke/equivariance.json',
            'runs/bench-profile/top_ops.txt', 'runs/bench-profile/phases.json'} <= names, sorted(names)
    assert not any(n.endswith(('.pth', '.pkl')) for n in names)  # never weights
    bench = json.loads((tmp_path/'benchmarks/bench.json').read_text())
    assert bench['env']['device'] == 'cpu' and set(bench['archs']) == {'simple_cnn'}
    assert '| sample-simple_cnn |' in (tmp_path/'benchmarks/eval_sample.md').read_text()
    study = json.loads((tmp_path/'runs/session-smoke/equivariance.json').read_text())
    assert study['complete'] and {s['model'] for s in study['summary']} == {'gcnn_c4', 'baseline_noaug'}
    log = (out/'session.log').read_text()
    assert 'stages in order: train, bench, study' in log and 'summaries: 1 trained, 1 evaluated' in log


def test_next_call_skips_what_is_done(smoke, tmp_path):
    repo, _, _ = smoke
    r = run_session(repo, tmp_path, '--smoke')
    assert r.returncode == 0, r.stderr[-3000:]
    st = json.loads((tmp_path/'status.json').read_text())
    assert all(v.startswith('done earlier: ') for v in st['stages'].values()), st['stages']
    assert 'pcam_train' not in r.stdout and 'runs recorded' not in r.stdout


def test_cpu_results_do_not_count_as_gpu_figures(smoke):
    repo, _, _ = smoke
    done, why = session.bench_state(repo, smoke=False)
    assert not done and 'not a GPU' in why
    done, why = session.train_state(repo, session.ARCHS.split())
    assert not done and 'to do: vgg16_bn, resnet18' in why
    assert not session.study_state(repo, smoke=False)[0]


def test_without_the_sample_only_the_bench_may_run(tmp_path):
    repo = repo_copy(tmp_path/'repo')
    r = run_session(repo, tmp_path/'out', '--stages', 'train,study', env={'PCAM_SAMPLE_READY': '0'})
    assert r.returncode == 0, r.stderr[-3000:]
    st = json.loads((tmp_path/'out'/'status.json').read_text())
    assert not st['sample_ready'] and not st['all_done']
    assert st['stages']['train'].startswith('waits for the sample') and st['stages']['study'].startswith('waits for the sample')
    assert 'stages in order: none' in r.stdout


def test_needs_an_out_folder():
    r = subprocess.run([sys.executable, str(SESSION)], cwd=ROOT, capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != 'OUT'})
    assert r.returncode != 0 and 'no --out and no $OUT' in r.stderr and 'Traceback' not in r.stderr


def test_a_stage_is_stopped_at_the_deadline(tmp_path):
    "The whole process group goes: the script and the job it started in the background."
    pidf = tmp_path/'pid'
    t0 = time.time()
    with open(tmp_path/'log', 'w') as logf:
        rc = session.run_stage(['bash', '-c', f'sleep 120 & echo $! > {pidf}; sleep 120; echo never'], dict(os.environ),
                               time.time() + 2, logf)
    assert rc == -999 and time.time() - t0 < 30
    pid = int(pidf.read_text())
    def alive():  # a killed child may linger as a zombie until its new parent reaps it: that counts as gone
        try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
        except (FileNotFoundError, ProcessLookupError): return False
    for _ in range(50):
        if not alive(): break
        time.sleep(0.1)
    assert not alive(), f'process {pid} survived the deadline'
    assert 'never' not in (tmp_path/'log').read_text()


def test_study_starts_only_runs_that_end_in_time(tmp_path):
    "With the deadline already past, nothing starts and the study says so; the expected time of a run comes from records."
    spec = importlib.util.spec_from_file_location('eq_study', ROOT/'benchmarks'/'equivariance_study.py')
    study = importlib.util.module_from_spec(spec); spec.loader.exec_module(study)
    rec = lambda s, n: dict(wall_s=s, history=[dict(seconds=1.0)] * n)
    done = [('gcnn_c4', 'search', 6, rec(60, 6)), ('gcnn_c4', 'search', 6, rec(80, 6)), ('gcnn_d4', 'search', 6, rec(100, 6))]
    assert study.expected_seconds(done, 'gcnn_c4', 'search', 6) == 80        # same family and phase: the longest
    assert study.expected_seconds(done, 'gcnn_c4', 'final', 12) == 160       # its search runs, scaled by epochs
    assert study.expected_seconds(done, 'gcnn_c8', 'search', 6) == 150       # another family's: x 1.5
    assert study.expected_seconds([], 'gcnn_c8', 'search', 6) is None
    assert study.wall_seconds(dict(history=[dict(seconds=2.0)] * 3)) == 16   # older records: epochs + 10 s
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'equivariance_study.py'), '--smoke', '--no-progress',
                        '--runs', str(tmp_path/'runs'), '--results', str(tmp_path/'res'), '--deadline', str(time.time() - 1)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, 'MPLBACKEND': 'Agg'})
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'runs recorded: 0 of 20' in r.stdout and 'stopped by the time limit' in r.stdout
    assert not (tmp_path/'runs').exists() or not list((tmp_path/'runs').rglob('metrics.json'))
