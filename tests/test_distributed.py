"""Two processes for real (gloo on the CPU, one torch thread each): disjoint shards that cover every epoch, the same weights in
both processes after a step, one run folder with a single-process run's metrics, a resume after a kill (torchrun, then
accelerate launch when it is installed)."""
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path

import pandas as pd, pytest

from conftest import BIN, ROOT, assert_one_line_error

pytestmark = pytest.mark.usefixtures('one_torch_thread')

# Runs in each of the two processes: one epoch under `distributed` (what the shards held, the weights and metrics after it),
# then the whole job, each process killing itself (SIGKILL) once the first epoch's checkpoint is written.
WORKER = r'''
import json, os, signal, sys, torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.torch_core import set_seed, rank_distrib
from pcam_nb.loaders import pcam_dls
import pcam_nb.train
from pcam_nb.train import pcam_learner, distributed, pcam_run
data, out, res = sys.argv[1:4]
class Orders(Callback):
    def before_fit(self): self.orders = []
    def after_train(self): self.orders.append(self.learn.dl._DataLoader__idxs.tolist()); self.ddp = type(self.learn.model).__name__
set_seed(0)
dls = pcam_dls(data, bs=32, device='cpu', progress=False)
learn = pcam_learner(dls, 'simple_cnn'); learn.remove_cb(ProgressCallback)
w0 = torch.cat([p.detach().flatten() for p in learn.model.parameters()])
with distributed(learn), learn.no_logging(): learn.fit(2, 1e-3, cbs=(o := Orders()))
w = torch.cat([p.detach().flatten() for p in learn.model.parameters()])
got = [None, None]
torch.distributed.all_gather_object(got, dict(orders=o.orders, w=w.tolist(), moved=float((w - w0).abs().max()),
                                              values=[float(v) for v in learn.recorder.values[-1]], n=len(dls.train_ds), ddp=o.ddp))
if rank_distrib() == 0:
    with open(res, 'w') as f: json.dump(got, f)
shared = pcam_nb.train.shared_error
def killed_after_first(e):  # every process, after the first epoch's checkpoint (the barrier): a kill, as by the OOM killer
    shared(e); os.kill(os.getpid(), signal.SIGKILL)
pcam_nb.train.shared_error = killed_after_first
pcam_run(data, 'simple_cnn', epochs=3, out=out, bs=32, device='cpu', progress=False)
'''


def _port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _env():
    return {**os.environ, 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}


def torchrun(*args):
    return [str(BIN/'torchrun'), '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', str(_port()), *map(str, args)]


def accelerate_launch(*args):
    return [str(BIN/'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
            '--dynamo_backend', 'no', '--main_process_ip', '127.0.0.1', '--main_process_port', str(_port()), *map(str, args)]


def _has_accelerate_launch(): return (BIN/'accelerate').exists()


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "256 + 96 synthetic patches of 64 px: 128 per process, 4 batches of 32."
    from pcam_nb.synth import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp('ddp')/'syn', n_train=256, n_valid=96, n_test=0, size=64, seed=1, progress=False)


@pytest.fixture(scope='module')
def killed(data, tmp_path_factory):
    "The worker in two processes: its results, and the run folder of the job killed after its first epoch."
    root = tmp_path_factory.mktemp('ddp-run')
    (root/'worker.py').write_text(WORKER)
    out, res = root/'run', root/'res.json'
    r = subprocess.run(torchrun(root/'worker.py', data, out, res), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       env=_env(), timeout=300)
    assert r.returncode != 0 and res.exists(), r.stderr[-3000:]   # killed
    return json.loads(res.read_text()), out


def test_shards_disjoint_cover_and_weights_agree(killed):
    (r0, r1), _ = killed
    assert (r0['ddp'], r1['ddp']) == ('DistributedDataParallel', 'DistributedDataParallel')
    assert len(r0['orders']) == len(r1['orders']) == 2
    for o0, o1 in zip(r0['orders'], r1['orders']):
        assert len(o0) == len(o1) == r0['n'] // 2 and not set(o0) & set(o1)
        assert sorted(o0 + o1) == list(range(r0['n']))      # together: the whole training split, once
    assert r0['orders'][0] != r0['orders'][1]                 # a new order each epoch
    assert r0['moved'] > 0 and r0['w'] == r1['w']             # trained, and the same weights in both processes
    assert r0['values'][1:] == r1['values'][1:]               # the same gathered valid metrics in both (train loss: each its own)


def test_killed_run_resumes_in_two_processes(killed, _tiny_run, tmp_path):
    "The run killed after its first epoch resumes (accelerate launch when installed, else torchrun) into one finished run folder."
    _, out = killed
    st = json.loads((out/'state.json').read_text())
    assert st['epochs_done'] == 1 and not (out/'metrics.json').exists()
    launch = accelerate_launch if _has_accelerate_launch() else torchrun
    r = subprocess.run(launch(BIN/'pcam_train', '--resume', '--out', out, '--no-progress'), capture_output=True, text=True,
                       env=_env(), stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert r.stdout.count('run folder:') == 1                # one process reports
    single = json.loads((_tiny_run[0]/'metrics.json').read_text())
    assert set(m) == set(single) and m['resumes'] == 1 and m['epochs'] == 3
    h = pd.read_csv(out/'history.csv')
    assert list(h.epoch) == [0, 1, 2] and h.roc_auc_score.between(0, 1).all()
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['processes'] == 2 and [e['processes'] for e in cfg['resumed_on']] == [2]
    assert sorted(p.name for p in out.iterdir() if p.suffix in ('.pth', '.json', '.csv', '.png', '.pkl')) == \
        ['best.pth', 'checkpoint.pth', 'config.json', 'curves.png', 'export.pkl', 'history.csv', 'metrics.json', 'model.pth', 'state.json']
    assert not list(out.parent.glob('run?*'))                 # one run folder


def test_too_small_shards_refused(data, tmp_path, monkeypatch):
    "As the first of 2 processes (WORLD_SIZE=2), each getting 128 patches: a batch of 200 is refused in one line, nothing written."
    from conftest import run_command
    from pcam_nb.train import pcam_train
    monkeypatch.setenv('WORLD_SIZE', '2'); monkeypatch.setenv('RANK', '0')
    r = run_command(pcam_train, '--data', data, '--arch', 'simple_cnn', '--bs', 200, '--device', 'cpu', '--out', tmp_path/'run', '--no-progress')
    assert_one_line_error(r, '--bs 200: more than the 128 training patches each of the 2 processes gets')
    assert not (tmp_path/'run').exists()
