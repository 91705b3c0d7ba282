"""`pcam_train --track`: one run logged offline to TensorBoard, MLflow and W&B, read back with each library's own reader and
compared with the run's history.csv and metrics.json; unknown and missing trackers are one-line errors."""
import json, os, subprocess
from pathlib import Path

import pandas as pd, pytest

from conftest import BIN, run_command, assert_one_line_error

pytestmark = pytest.mark.usefixtures('one_torch_thread')
for _m in ('tensorboard', 'mlflow', 'wandb'): pytest.importorskip(_m, reason=f"{_m} not installed: pip install 'pcam_nb[track]'")


@pytest.fixture(scope='module')
def tracked(tmp_path_factory):
    """A 2-epoch run with all three trackers (comma-separated and repeated --track), in this process: interrupted (Ctrl-C)
    after its first epoch's checkpoint, then resumed without --track (it goes on with the run's trackers)."""
    import pcam_nb.train as T
    from pcam_nb.synth import make_synthetic
    root = tmp_path_factory.mktemp('track')
    data = make_synthetic(root/'syn', n_train=192, n_valid=96, n_test=0, size=64, seed=2, progress=False)
    out, real = root/'run', T.shared_error
    def interrupted(e): real(e); raise KeyboardInterrupt
    env = {k: os.environ.pop(k) for k in ('WANDB_MODE', 'MLFLOW_ALLOW_FILE_STORE') if k in os.environ}
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(T, 'shared_error', interrupted)
            r = run_command(T.pcam_train, '--data', data, '--arch', 'simple_cnn', '--epochs', 2, '--bs', 64, '--device', 'cpu',
                            '--out', out, '--no-progress', '--track', 'tensorboard,mlflow', '--track', 'wandb')
        assert r.returncode == 130 and f'pcam_train --resume --out {out}' in r.stderr, r.stderr
        r = run_command(T.pcam_train, '--resume', '--out', out, '--no-progress')
    finally: os.environ.pop('MLFLOW_ALLOW_FILE_STORE', None); os.environ.update(env)
    assert r.returncode == 0, r.stderr
    m = json.loads((out/'metrics.json').read_text())
    assert m['resumes'] == 1 and m['epochs'] == 2
    return out, pd.read_csv(out/'history.csv'), m


def _close(a, b, eps=1e-5): return len(a) == len(b) and all(abs(x - y) <= eps for x, y in zip(a, b))


def test_tensorboard(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out, h, m = tracked
    assert len(list((out/'tensorboard').glob('events.out.tfevents.*'))) >= 2   # the first process's files and the resume's
    ea = EventAccumulator(str(out/'tensorboard')); ea.Reload()
    for n in ('valid_loss', 'accuracy', 'roc_auc_score'): assert _close([e.value for e in ea.Scalars(n)], h[n].tolist()), n
    assert _close([ea.Scalars(f'final/{k}')[0].value for k in ('valid_auc', 'valid_loss', 'epochs')],
                  [m['valid_auc'], m['valid_loss'], m['epochs']])
    assert 'curves' in ea.Tags()['images'] and 'config/text_summary' in ea.Tags()['tensors']
    assert {e.step for e in ea.Scalars('train_loss')} == set(range(1, 7))      # per batch, over the run: 2 epochs of 3 batches
    assert [e.step for e in ea.Scalars('roc_auc_score')] == [3, 6]


def test_mlflow(tracked):
    os.environ.setdefault('MLFLOW_ALLOW_FILE_STORE', 'true')
    from mlflow import MlflowClient
    out, h, m = tracked
    c = MlflowClient(tracking_uri=(out/'mlruns').resolve().as_uri())
    rid = json.loads((out/'tracking.json').read_text())['mlflow']
    for n in ('train_loss', 'valid_loss', 'accuracy', 'roc_auc_score', 'seconds'):
        ms = sorted(c.get_metric_history(rid, n), key=lambda x: x.step)
        assert [x.step for x in ms] == list(h.epoch) and _close([x.value for x in ms], h[n].tolist(), 1e-9), n
    run = c.get_run(rid)
    assert run.info.status == 'FINISHED' and run.info.run_name == 'run'
    assert run.data.params['arch'] == 'simple_cnn' and run.data.params['epochs'] == '2'
    assert all(abs(run.data.metrics[f'final/{k}'] - float(v)) < 1e-9 for k, v in m.items())
    assert sorted(a.path for a in c.list_artifacts(rid)) == ['config.json', 'curves.png', 'metrics.json']


def test_wandb_offline(tracked):
    "The offline run files, read with wandb's own reader (`wandb leet inspect --json`): config, per-epoch history, summary, the figure."
    out, h, m = tracked
    files = sorted((out/'wandb').glob('offline-run-*/run-*.wandb'))
    assert len(files) == 2                                    # the interrupted process's and the resume's, one run id
    recs = []
    for f in files:
        r = subprocess.run([str(BIN/'wandb'), 'leet', 'inspect', '--json', str(f)], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        recs += [json.loads(l) for l in r.stdout.splitlines() if l.startswith('{')]
    runs = [x['run'] for x in recs if x['type'] == 'run']
    assert len({x['run_id'] for x in runs}) == 1 and runs[0]['display_name'] == 'run' and runs[0]['config']['update']['arch'] == 'simple_cnn'
    run = runs[0]
    hist = [x['history']['item'] for x in recs if x['type'] == 'history']
    for n in ('valid_loss', 'accuracy', 'roc_auc_score'): assert _close([i[n] for i in hist if n in i], h[n].tolist()), n
    summary = {}
    for x in recs:
        if x['type'] == 'summary': summary.update(x['summary'].get('update', {}))
    assert all(abs(summary[f'final/{k}'] - float(v)) < 1e-9 for k, v in m.items())
    (img,) = [i for i in hist if i.get('curves._type') == 'image-file']         # the curves figure, as a PNG beside the run file
    assert (files[-1].parent/'files'/img['curves.path']).read_bytes() == (out/'curves.png').read_bytes()
    assert json.loads((out/'tracking.json').read_text())['wandb'] == run['run_id']


def test_unknown_and_missing_trackers(tmp_path, monkeypatch):
    from pcam_nb import train
    r = run_command(train.pcam_train, '--out', tmp_path/'run', '--track', 'tensorboard,neptune')
    assert_one_line_error(r, '--track neptune: not a tracker. Pass one or more of tensorboard, mlflow, wandb')
    monkeypatch.setitem(train.TRACKERS, 'wandb', 'wandb_absent_package')
    r = run_command(train.pcam_train, '--out', tmp_path/'run', '--track', 'wandb')
    assert_one_line_error(r, "--track wandb: the wandb_absent_package package is not installed", "pip install 'pcam_nb[track]'")
    assert not (tmp_path/'run').exists()
