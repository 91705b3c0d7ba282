"""Bad input to pcam_train and its run folders: refused in one line (exit 2) before anything heavy, never silently wrong,
never running code from a run folder, never mixing or losing runs."""
import errno, json, os, shutil, subprocess, torch
from pathlib import Path

import pytest

from conftest import cli_many, assert_clean_error

FAST = ['--arch', 'simple_cnn', '--bs', '64', '--device', 'cpu', '--no-progress']


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    from pcam_nb.synth import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp('synth')/'syn', n_train=256, n_valid=128, n_test=0, size=64, seed=5,
                          progress=False)


@pytest.fixture(scope='module')
def runs(synth, tmp_path_factory):
    "An unfinished run (2 epochs asked, stopped by Ctrl-C after the first) and a finished one, made in this process."
    import pcam_nb.train as tr
    from fastai.callback.core import Callback
    class Stop(Callback):
        order = 99
        def after_epoch(self):
            if self.learn.final_record: raise KeyboardInterrupt
    root = tmp_path_factory.mktemp('runs')
    kw = dict(bs=32, limit=128, valid_limit=64, device='cpu', progress=False)
    made = tr.pcam_learner
    tr.pcam_learner = lambda *a, **k: made(*a, **k).add_cb(Stop())
    try:
        with pytest.raises(KeyboardInterrupt): tr.pcam_run(synth, 'simple_cnn', epochs=2, out=root/'unfinished', **kw)
    finally: tr.pcam_learner = made
    tr.pcam_run(synth, 'simple_cnn', epochs=1, out=root/'finished', **kw)
    return root


def copy_of(runs, name, tmp_path):
    shutil.copytree(runs/name, tmp_path/name)
    return tmp_path/name


class Payload:
    "Unpickling it writes a marker file: what a malicious run file would do."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def user_folder(tmp_path):
    d = tmp_path/'mine'; d.mkdir(); (d/'config.json').write_text('{"learning_rate": 0.1}')
    return d


# The command line, in a process per case: (args, check) from `case(tmp, synth, runs)`. The commands run two at a time,
# each forked from this process with the package imported (`cli_many`); `check(r)` asserts on the CompletedProcess. The same
# rules and the other bad values are then checked through the Python function behind the command, which needs no process.
def case_lr0(t, s, r):
    "0 is a value, not 'not given'; numbers are checked before the data or the architecture."
    return ['--data', '/nowhere', '--arch', 'vgg17_bn', '--lr', 0, '--out', t/'r'], \
        lambda p: (assert_clean_error(p, '--lr 0: not a learning rate'), not (t/'r').exists() or pytest.fail('folder made'))

def case_compile(t, s, r):
    "argparse checks the choice: its usage line and one error line."
    return ['--data', s, '--compile', 'banana', '--out', t/'r'], lambda p: assert_clean_error(p, "invalid choice: 'banana'")

def case_bad_best(t, s, r):
    "best.pth replaced by a pickle that runs code (state.json edited too, so that no epoch of the resume beats it)."
    out = copy_of(r, 'unfinished', t)
    torch.save({'model': Payload(t/'pwned-best')}, out/'best.pth')
    st = json.loads((out/'state.json').read_text()); st['best'] = 2.0; (out/'state.json').write_text(json.dumps(st))
    def check(p):
        assert_clean_error(p, f'{out/"best.pth"}: refused')
        assert 'weights_only' not in p.stderr and not (t/'pwned-best').exists()
    return ['--resume', '--out', out, '--no-progress'], check

def case_bad_checkpoint(t, s, r):
    out = copy_of(r, 'unfinished', t)
    torch.save(Payload(t/'pwned-ckpt'), out/'checkpoint.pth')
    def check(p):
        assert_clean_error(p, f'{out/"checkpoint.pth"}: refused')
        assert 'weights_only' not in p.stderr and not (t/'pwned-ckpt').exists()
    return ['--resume', '--out', out, '--no-progress'], check

CASES = [case_lr0, case_compile, case_bad_best, case_bad_checkpoint]


@pytest.fixture(scope='module')
def results(synth, runs, tmp_path_factory):
    "Every case's command, run two at a time: {case name: (CompletedProcess, check)}."
    made = {}
    for case in CASES:
        t = tmp_path_factory.mktemp(case.__name__)
        made[case.__name__] = case(t, synth, runs)
    done = cli_many([('pcam_train', *args) for args, _ in made.values()], workers=2)
    return {k: (r, made[k][1]) for k, r in zip(made, done)}


@pytest.mark.parametrize('case', [c.__name__ for c in CASES])
def test_cli_refuses(case, results):
    p, check = results[case]
    check(p)
    assert p.returncode == 2 and len([l for l in p.stderr.splitlines() if l.startswith('error:') or 'error:' in l]) == 1, p.stderr


# The same rules through the Python function behind the command (no process to start): each a PCamError in one line.
@pytest.mark.parametrize('kw,fragment', [
    (dict(lr=-1.), '--lr -1: not a learning rate'),
    (dict(label_smoothing=2.), '--label-smoothing 2: must be at least 0 and below 1'),
    (dict(epochs=0), '--epochs 0: not allowed'),
    (dict(bs=0), '--bs 0: not allowed'),
    (dict(wd=-1.), '--wd -1: weight decay must be 0 or more'),
    (dict(valid_limit=0), '--valid-limit 0: no patches'),
    (dict(size=0), '--size 0'),
    (dict(seed=-1), '--seed -1'),
    (dict(hsv=1.5), '--hsv 1.5'),
    (dict(arch='vgg17_bn'), "unknown architecture 'vgg17_bn'"),
    (dict(weights='/nowhere/w.pth', arch='resnet18'), '/nowhere/w.pth: no such weights file'),
    (dict(arch='simple_cnn', pretrained=True), 'has no pretrained weights'),
    (dict(freeze_epochs=3), '--freeze-epochs 3: applies to fine-tuning only'),
    (dict(resume=True, out=None), '--resume needs --out'),
    (dict(lr_find=True, resume=True, out='x'), '--lr-find trains nothing'),
    (dict(compile='yes'), '--compile yes: not a choice'),
    (dict(limit=0), '--limit 0: no patches'),
    (dict(device='banana'), '--device banana: not a device'),
    (dict(data='/nowhere'), '/nowhere: no such file or folder'),
])
def test_refused_in_one_line(kw, fragment, synth, tmp_path):
    from pcam_nb.train import pcam_train
    from pcam_nb.core import PCamError
    kw = {'data': str(synth), 'device': 'cpu', 'out': str(tmp_path/'r'), **kw}  # (an in-process call raises, exit 2 is pcam_cli's)
    with pytest.raises(PCamError) as e: pcam_train(**kw)
    assert fragment in str(e.value) and '\n' not in str(e.value), str(e.value)
    assert not (tmp_path/'r').exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a CUDA GPU')
def test_cuda_without_gpu(synth, tmp_path):
    from pcam_nb.train import pcam_train
    from pcam_nb.core import PCamError
    with pytest.raises(PCamError, match='--device cuda: no CUDA GPU is usable here'): pcam_train(data=str(synth), device='cuda', out=str(tmp_path/'r'))


def test_out_is_a_file(synth, tmp_path):
    from pcam_nb.train import pcam_train
    from pcam_nb.core import PCamError
    (tmp_path/'f').write_text('x')
    with pytest.raises(PCamError, match='f: is a file, not a folder'): pcam_train(data=str(synth), device='cpu', out=str(tmp_path/'f'))


def test_run_folder_rules(runs, synth, tmp_path):
    "An unfinished run is only resumed, with its own settings; a folder with somebody's config.json is never written."
    from pcam_nb.train import pcam_run
    from pcam_nb.core import PCamError
    out = copy_of(runs, 'unfinished', tmp_path)
    with pytest.raises(PCamError, match='was trained with --arch simple_cnn, --epochs 2, not --arch resnet18, --epochs 5'):
        pcam_run(arch='resnet18', epochs=5, out=out, resume=True)
    with pytest.raises(PCamError, match=f'holds an unfinished run, 1 epoch\\(s\\) done. Continue it with `pcam_train --resume --out {out}`'):
        pcam_run(synth, 'simple_cnn', epochs=2, out=out, device='cpu')
    mine = user_folder(tmp_path)
    for kw in ({}, dict(overwrite=True), dict(resume=True)):
        with pytest.raises(PCamError, match='never overwritten'): pcam_run(synth, 'simple_cnn', epochs=1, out=mine, device='cpu', **kw)
    assert (mine/'config.json').read_text() == '{"learning_rate": 0.1}' and [p.name for p in mine.iterdir()] == ['config.json']


def test_run_folders_are_not_mixed(runs, synth, tmp_path):
    "Finished runs are neither resumed nor overwritten unless asked; a folder with other files is never written; --overwrite starts over."
    from pcam_nb.train import pcam_run
    from pcam_nb.core import PCamError
    fin = copy_of(runs, 'finished', tmp_path)
    with pytest.raises(PCamError, match='holds a finished run. Pick another --out, or pass --overwrite'):
        pcam_run(synth, 'simple_cnn', epochs=1, out=fin, device='cpu')
    with pytest.raises(PCamError, match='nothing to resume'): pcam_run(out=fin, resume=True)
    with pytest.raises(PCamError, match='pass one of them'): pcam_run(out=fin, resume=True, overwrite=True)
    other = tmp_path/'notes'; other.mkdir(); (other/'notes.txt').write_text('mine')
    with pytest.raises(PCamError, match='not a pcam_train run, and they are never overwritten'):
        pcam_run(synth, 'simple_cnn', epochs=1, out=other, device='cpu', overwrite=True)
    assert [p.name for p in other.iterdir()] == ['notes.txt']
    (fin/'eval_valid.json').write_text('{}')       # a report of the old run goes with it
    m = pcam_run(synth, 'simple_cnn', epochs=2, out=fin, bs=32, limit=128, valid_limit=64, device='cpu', progress=False, overwrite=True)
    assert m['epochs'] == 2 and not (fin/'eval_valid.json').exists() and len((fin/'history.csv').read_text().splitlines()) == 3


@pytest.fixture
def readonly_dir(tmp_path):
    "A folder nobody can write to (root ignores permissions: a read-only tmpfs then), or skip."
    d = tmp_path/'ro'; d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555); yield d; d.chmod(0o755); return
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(d)], capture_output=True).returncode:
        pytest.skip('running as root and cannot mount a read-only tmpfs: no folder is read-only for root')
    yield d
    subprocess.run(['umount', str(d)])


def test_read_only_out(readonly_dir, synth):
    from pcam_nb.train import pcam_run
    from pcam_nb.core import PCamError
    for out in (readonly_dir, readonly_dir/'run'):
        with pytest.raises(PCamError, match='cannot be written'): pcam_run(synth, 'simple_cnn', epochs=1, out=out, device='cpu')


def test_full_disk_keeps_the_checkpoint(runs, synth, tmp_path, monkeypatch):
    "A write failing for a full disk ends the run with one line naming the file; the previous checkpoint stays intact and resumes."
    import pcam_nb.runs as runs_mod
    from pcam_nb.train import pcam_run
    from pcam_nb.core import PCamError
    out = copy_of(runs, 'unfinished', tmp_path)
    before = (out/'checkpoint.pth').read_bytes()
    real = runs_mod.torch.save
    def full(obj, f, *a, **k): f.write(b'half'); raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(runs_mod.torch, 'save', full)
    with pytest.raises(PCamError) as e: pcam_run(out=out, resume=True, progress=False)
    monkeypatch.setattr(runs_mod.torch, 'save', real)
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith(f'{out/"checkpoint.pth"}: cannot be written (No space left on device)'), msg
    assert f'pcam_train --resume --out {out}' in msg
    assert (out/'checkpoint.pth').read_bytes() == before and not (out/'metrics.json').exists()
    assert sorted(p.name for p in out.iterdir() if 'tmp' in p.name) == []
    assert pcam_run(out=out, resume=True, progress=False)['epochs'] == 2


def test_export_failure_leaves_the_run_unfinished(runs, tmp_path, monkeypatch):
    "metrics.json, the 'finished' mark, comes after model.pth and export.pkl: a full disk at the export leaves a run that --resume finishes."
    import pcam_nb.train as tr
    from pcam_nb.core import PCamError
    out = copy_of(runs, 'unfinished', tmp_path)
    real = tr.export_learner
    def full(learn, path): raise OSError(errno.ENOSPC, 'No space left on device', str(path))
    monkeypatch.setattr(tr, 'export_learner', full)
    with pytest.raises(PCamError, match='export.pkl: cannot be written'): tr.pcam_run(out=out, resume=True, progress=False)
    assert (out/'model.pth').exists() and not (out/'metrics.json').exists()
    monkeypatch.setattr(tr, 'export_learner', real)
    assert tr.pcam_run(out=out, resume=True, progress=False)['epochs'] == 2 and (out/'export.pkl').exists()


@pytest.fixture
def tiny_disk(tmp_path, runs):
    "A tmpfs just big enough for a run's first checkpoint and best weights, not for the second checkpoint beside them; or skip."
    ck, best = (runs/'unfinished'/'checkpoint.pth').stat().st_size, (runs/'unfinished'/'best.pth').stat().st_size
    d = tmp_path/'disk'; d.mkdir()
    size = ck + best + ck // 2 + 64 * 1024
    if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(d)], capture_output=True).returncode:
        pytest.skip('needs root and tmpfs mounts for a real full disk (the simulated one is tested above)')
    yield d
    subprocess.run(['umount', str(d)])


def test_real_full_disk(tiny_disk, synth):
    "A real full disk (torch's zip writer turns its OSError into a RuntimeError): the same one line, the last checkpoint whole."
    from pcam_nb.train import pcam_run
    from pcam_nb.core import PCamError
    out = tiny_disk/'run'
    with pytest.raises(PCamError) as e:
        pcam_run(synth, 'simple_cnn', epochs=3, out=out, bs=32, limit=128, valid_limit=64, device='cpu', progress=False)
    msg = str(e.value)
    assert '\n' not in msg and 'checkpoint.pth: cannot be written (No space left on device)' in msg and f'pcam_train --resume --out {out}' in msg
    st = json.loads((out/'state.json').read_text())
    ck = torch.load(out/'checkpoint.pth', weights_only=True)          # the last checkpoint that fitted, whole
    assert json.loads(ck['state'])['epochs_done'] == st['epochs_done'] >= 1 and not (out/'metrics.json').exists()
