"pcam_tune: a tiny Optuna study runs and writes its table and plots, a killed search resumes from its SQLite study, bad input is refused in one line."
import os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
from conftest import ROOT, run_command, assert_one_line_error

optuna = pytest.importorskip('optuna', reason="Optuna is not installed (pip install 'pcam_nb[tune]')")
from pcam_nb.tune import pcam_tune, tune, n_finished

pytestmark = pytest.mark.usefixtures('one_torch_thread')
SPACE = "lr: {low: 1.0e-3, high: 1.0e-2, log: true}\nwd: [0.01, 0.1]\nwidth: {low: 2, high: 4, step: 2}\n"
ARGS = dict(arch='cnn_baseline_w2_d2', epochs=2, startup_trials=1, warmup_epochs=0, bs=32, device='cpu')


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    "48 train / 32 valid synthetic 64 px patches and a space file."
    from pcam_nb.synth import make_synthetic
    root = tmp_path_factory.mktemp('tune')
    (root/'space.yaml').write_text(SPACE)
    return make_synthetic(root/'synth', n_train=48, n_valid=32, n_test=0, size=64, seed=3, progress=False), root/'space.yaml'


def study_of(out):
    return optuna.load_study(study_name='pcam_tune', storage=f"sqlite:///{Path(out)/'study.db'}")


def test_tiny_study(tiny_data, tmp_path):
    data, space = tiny_data
    df = tune(space=space, data=data, out=tmp_path/'s', trials=3, **ARGS)
    states = set(df.state)
    assert len(df) == 3 and states <= {'COMPLETE', 'PRUNED'} and 'COMPLETE' in states, df
    done = df[df.state == 'COMPLETE']
    assert done.valid_auc.between(0, 1).all() and set(done.arch) <= {'cnn_baseline_w2_d2', 'cnn_baseline_w4_d2'}, done
    for f in ('study.db', 'trials.csv', 'results.md', 'history.png'): assert (tmp_path/'s'/f).exists(), f
    assert (tmp_path/'s'/'trials'/'0000'/'metrics.json').exists()
    assert 'Best: trial' in (tmp_path/'s'/'results.md').read_text()
    # the same call again: the study is complete, nothing is trained; one more trial asked: exactly one runs
    assert len(tune(space=space, data=data, out=tmp_path/'s', trials=3, **ARGS)) == 3
    assert len(tune(space=space, data=data, out=tmp_path/'s', trials=4, **ARGS)) == 4
    # another space for the same study folder is refused, naming the setting
    (tmp_path/'other.yaml').write_text("lr: [0.001]\n")
    r = run_command(pcam_tune, '--arch', ARGS['arch'], '--space', tmp_path/'other.yaml', '--data', data, '--out', tmp_path/'s',
                    '--epochs', 2, '--trials', 5)
    assert_one_line_error(r, 'holds a study started with space')


def test_killed_search_resumes(tiny_data, tmp_path):
    "SIGKILL a pcam_tune process in its second trial; the same command again finishes the study, trial numbers going on."
    data, space = tiny_data
    out = tmp_path/'s'
    args = ['--arch', ARGS['arch'], '--space', space, '--data', data, '--out', out, '--trials', 3, '--epochs', 2,
            '--startup-trials', 1, '--warmup-epochs', 0, '--bs', 32, '--device', 'cpu', '--no-progress']
    code = "import sys; sys.argv[0] = 'pcam_tune'; from pcam_nb.tune import pcam_tune; pcam_tune()"
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen([sys.executable, '-c', code, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    t0, states = time.time(), []
    try:
        while time.time() - t0 < 240 and p.poll() is None:       # wait until trial 0 is done and trial 1 is running
            if (out/'study.db').exists():
                try: states = [t.state.name for t in study_of(out).get_trials(deepcopy=False)]
                except Exception: states = []                    # the study is still being created
                if len(states) >= 2 and states[0] != 'RUNNING' and states[1] == 'RUNNING': break
            time.sleep(0.2)
        assert p.poll() is None, p.communicate()[1][-2000:]
        os.kill(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None: p.kill()
        p.communicate()
    assert states[:2] in (['COMPLETE', 'RUNNING'], ['PRUNED', 'RUNNING']), states
    assert not (out/'trials.csv').exists()                       # killed before the end
    r = run_command(pcam_tune, *args)
    assert r.returncode == 0, r.stderr
    st = study_of(out)
    trials = st.get_trials(deepcopy=False)
    assert n_finished(st) == 3, [t.state for t in trials]
    assert trials[1].state.name == 'FAIL' and trials[2].user_attrs.get('retry_of') == 1, [t.state for t in trials]
    assert trials[2].params == trials[1].params                  # the killed trial's settings were tried again first
    assert [t.number for t in trials] == list(range(len(trials))) and len(trials) == 4
    assert len(pd.read_csv(out/'trials.csv')) == 4


@pytest.mark.parametrize('text,fragments', [
    (None, ['no such search-space file']),
    ("lr: [0.001\n", ['not valid YAML']),
    ("momentum: [0.9]\n", ['momentum: not a setting']),
    ("lr: {low: 0.01, high: 0.001}\n", ['lr: low 0.01 is above high 0.001']),
    ("width: [2, 4]\n", ['only for the parametric architectures, not simple_cnn']),
    ("- lr\n", ['not a mapping']),
])
def test_bad_space_file(tmp_path, text, fragments):
    f = tmp_path/'space.yaml'
    if text is not None: f.write_text(text)
    r = run_command(pcam_tune, '--arch', 'simple_cnn', '--space', f, '--out', tmp_path/'s', '--trials', 1)
    assert_one_line_error(r, str(f), *fragments)
    assert not (tmp_path/'s').exists()                           # refused before anything was made


@pytest.mark.parametrize('args,fragments', [
    (['--space', 'x.yaml'], ['--arch: missing']),
    (['--arch', 'simple_cnn'], ['--space: missing']),
    (['--arch', 'no_such_net', '--space', 'x.yaml'], ['no_such_net']),
    (['--arch', 'simple_cnn', '--space', 'x.yaml', '--trials', '0'], ['--trials 0: must be a whole number of at least 1']),
])
def test_bad_arguments(tmp_path, args, fragments):
    r = run_command(pcam_tune, *args, '--out', tmp_path/'s')
    assert_one_line_error(r, *fragments)
