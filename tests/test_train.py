"End-to-end tests of training: every data source, run records, a real interrupt with the folder lock and --resume, fine-tuning across phases."
import json, os, signal, subprocess, time
from functools import partial
from pathlib import Path

import numpy as np, pandas as pd, pytest, torch
from PIL import Image

from conftest import cli, sample, assert_clean_error, BIN

FAST = ['--arch', 'simple_cnn', '--bs', '64', '--device', 'cpu', '--no-progress']
SMALL = dict(bs=64, limit=256, valid_limit=128, device='cpu', progress=False)  # the same in Python


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    "768 + 256 synthetic patches of 64 px (and 64 test patches)."
    from pcam_nb.synth import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp('synth')/'syn', n_train=768, n_valid=256, n_test=64, size=64, seed=3,
                          progress=False)


@pytest.fixture(scope='module')
def finished(synth):
    "A finished 2-epoch pcam_train run (the function behind the command, in this process), started in the data's parent folder with a relative data path."
    from pcam_nb.train import pcam_train
    import contextlib, io
    out, here = synth.parent/'run', os.getcwd()
    os.chdir(synth.parent)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as said:
            pcam_train(data=synth.name, arch='simple_cnn', bs=64, device='cpu', progress=False, epochs=2, limit=256, valid_limit=128, out=str(out))
    finally: os.chdir(here)
    return out, said.getvalue()


def test_run_record(finished, synth):
    out, said = finished
    m = json.loads((out/'metrics.json').read_text())
    assert {'valid_auc', 'valid_accuracy', 'valid_loss', 'epochs', 'seconds'} <= set(m) and m['epochs'] == 2
    cfg = json.loads((out/'config.json').read_text())
    for k in ('arch', 'epochs', 'lr', 'bs', 'seed', 'torch', 'fastai', 'git_commit', 'device', 'classes', 'stats'): assert k in cfg, k
    assert np.array(cfg['stats']).shape == (2, 3)
    assert cfg['data'] == str(synth.resolve())                 # absolute: the run resumes and evaluates from anywhere
    h = pd.read_csv(out/'history.csv')
    assert list(h.epoch) == [0, 1] and {'train_loss', 'valid_loss', 'accuracy', 'roc_auc_score', 'seconds'} <= set(h.columns)
    assert (out/'curves.png').stat().st_size > 1000 and (out/'export.pkl').exists()
    sd = torch.load(out/'model.pth', weights_only=True)     # plain state_dict: safe loading works
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    last = max((p for p in out.iterdir() if p.name != '.lock'), key=lambda p: p.stat().st_mtime_ns)
    assert last.name == 'metrics.json'                          # the 'finished' mark is written last
    assert 'run folder' in said and f'pcam_evaluate {out}' in said and json.loads(said[:said.index('}') + 1]) == m


def test_export_holds_no_data_and_predicts(finished, synth):
    "export.pkl carries the model and the input pipeline, no patches (it held all 384 of them, 4.7 MB), and predicts on new ones."
    from pcam_nb.runs import load_learner_trusted
    from pcam_nb.data import load_patches
    out, _ = finished
    assert (out/'export.pkl').stat().st_size < 2_000_000, (out/'export.pkl').stat().st_size
    learn = load_learner_trusted(out)
    assert len(learn.dls.train_ds) == len(learn.dls.valid_ds) == 0
    x = load_patches(synth, 'test', progress=False).x[:3]     # patches the run never saw
    with learn.no_bar(): probs = learn.get_preds(dl=learn.dls.test_dl(x))[0]
    with learn.no_bar(): cat, idx, pr = learn.predict(x[0])
    assert probs.shape == (3, 2) and torch.allclose(pr, probs[0], atol=1e-5) and str(cat) == ['normal', 'tumour'][int(idx)]


def test_same_seed_same_run(finished, synth, tmp_path):
    "A second run with the same settings and seed (here in this process) has the same history."
    from pcam_nb.train import pcam_run
    pcam_run(synth, 'simple_cnn', epochs=2, out=tmp_path/'again', **SMALL)
    cols = ['train_loss', 'valid_loss', 'accuracy', 'roc_auc_score']
    pd.testing.assert_frame_equal(pd.read_csv(finished[0]/'history.csv')[cols], pd.read_csv(tmp_path/'again'/'history.csv')[cols])


@pytest.fixture(scope='module')
def class_folders(tmp_path_factory):
    "Three classes of 48 px images in class folders."
    root = tmp_path_factory.mktemp('classes')
    rng = np.random.default_rng(0)
    for c, shade in (('adipose', 230), ('stroma', 150), ('tumour', 70)):
        (root/c).mkdir()
        for i in range(24):
            a = np.clip(rng.normal(shade, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root/c/f'{i}.png')
    return root


@pytest.mark.parametrize('kind', ['class_folders', 'csv_sample'])
def test_every_source(kind, class_folders, tmp_path):
    from pcam_nb.train import pcam_run
    data = class_folders if kind == 'class_folders' else sample()
    extra = dict(limit=256, valid_limit=128) if kind == 'csv_sample' else dict(size=32)
    pcam_run(data, 'simple_cnn', epochs=1, out=tmp_path/'run', bs=64, device='cpu', progress=False, **extra)
    cfg = json.loads((tmp_path/'run'/'config.json').read_text())
    assert cfg['classes'] == (['adipose', 'stroma', 'tumour'] if kind == 'class_folders' else ['normal', 'tumour'])
    assert json.loads((tmp_path/'run'/'metrics.json').read_text())['epochs'] == 1


def sigint_as_in_a_terminal():
    "In the child before exec: SIGINT at its default and not blocked, whatever this process inherited or a library set."
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_interrupt_lock_and_resume(synth, tmp_path):
    """A real run: while it trains, a second pcam_train on its folder is refused naming it; Ctrl-C (SIGINT) after its first
    checkpoint ends it with one line saying how to resume (exit 130); the resume finishes it with the record of an uninterrupted run."""
    out = tmp_path/'run'
    # 10 epochs: the run is still training when it is stopped, however slowly this test's own process is scheduled
    args = ['--data', synth, *FAST, '--bs', 32, '--epochs', 10, '--limit', 128, '--valid-limit', 64, '--out', out]
    a = subprocess.Popen([str(BIN/'pcam_train'), *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True, env={**os.environ, 'MPLBACKEND': 'Agg'},
                         preexec_fn=sigint_as_in_a_terminal)
    t0 = time.time()
    while not ((out/'state.json').exists() and json.loads((out/'state.json').read_text())['epochs_done'] >= 1):
        if a.poll() is not None: pytest.fail(f'the run ended before its first checkpoint: {a.stderr.read()[-2000:]}')
        if time.time() - t0 > 240: a.kill(); pytest.fail('no checkpoint after 240 s')
        time.sleep(0.05)
    a.send_signal(signal.SIGSTOP)  # it holds the folder's lock while stopped
    try:
        b = cli('pcam_train', '--resume', '--out', out)
        assert_clean_error(b, f'{out}: in use by another process (pid {a.pid})')
    finally:
        a.send_signal(signal.SIGINT); a.send_signal(signal.SIGCONT)
    err = a.communicate(timeout=120)[1]
    assert a.returncode == 130, err[-2000:]
    assert 'Traceback' not in err and f'interrupted: continue it with: pcam_train --resume --out {out}' in err.splitlines()[-1], err[-2000:]
    done = json.loads((out/'state.json').read_text())['epochs_done']
    assert 1 <= done < 10 and not (out/'metrics.json').exists()
    from pcam_nb.train import pcam_run
    pcam_run(out=out, resume=True, progress=False)  # (the command's resume is pcam_run's; the refusal above shows the command)
    h = pd.read_csv(out/'history.csv')
    assert list(h.epoch) == list(range(10))
    m = json.loads((out/'metrics.json').read_text())
    assert m['epochs'] == 10 and 0 <= m['valid_auc'] <= 1 and m['resumes'] == 1
    # the run's time covers the epochs of the interrupted process too, not only the resumed one's
    assert m['seconds'] >= h.seconds.sum() - 0.5, (m['seconds'], h.seconds.sum())
    assert len(json.loads((out/'config.json').read_text())['resumed_on']) == 1


def stop_after_first_epoch(monkeypatch):
    "Make pcam_run's learners raise KeyboardInterrupt (as Ctrl-C would) after their first epoch that trained."
    import pcam_nb.train as tr
    from fastai.callback.core import Callback
    class Stop(Callback):
        order = 99
        def after_epoch(self):
            if self.learn.final_record: raise KeyboardInterrupt
    made = tr.pcam_learner
    monkeypatch.setattr(tr, 'pcam_learner', lambda *a, **k: made(*a, **k).add_cb(Stop()))
    return lambda: monkeypatch.setattr(tr, 'pcam_learner', made)


def test_fine_tune_from_weights_resumes_across_phases(synth, tmp_path, monkeypatch):
    "weights= runs the fine-tuning recipe (frozen body, then unfrozen); a run stopped after the frozen phase resumes into the unfrozen one."
    import torchvision
    from pcam_nb.train import pcam_run
    w = tmp_path/'r18.pth'; torch.save(torchvision.models.resnet18().state_dict(), w)
    out = tmp_path/'ft'
    kw = dict(bs=32, limit=64, valid_limit=32, device='cpu', progress=False)
    undo = stop_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt): pcam_run(synth, 'resnet18', epochs=1, freeze_epochs=1, weights=w, out=out, **kw)
    undo()
    assert json.loads((out/'state.json').read_text())['epochs_done'] == 1
    m = pcam_run(out=out, resume=True, progress=False)
    h = pd.read_csv(out/'history.csv')
    assert list(h.phase) == ['frozen', 'unfrozen'] and m['resumes'] == 1
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['weights'] == str(w.resolve()) and cfg['stats'][0] == pytest.approx([0.485, 0.456, 0.406], abs=1e-3)  # ImageNet stats


def test_early_stop_and_augmentation_options(synth, tmp_path):
    "early_stop ends a run whose AUC stops improving, its last epoch recorded; augmentation options are recorded."
    from pcam_nb.train import pcam_run
    out = tmp_path/'early'
    with_out = pcam_run(synth, 'simple_cnn', epochs=8, lr=1e-9, early_stop=1, d4=False, hsv=0.05, stain=0.05, out=out,
                        bs=32, limit=128, valid_limit=64, device='cpu', progress=False)
    assert with_out['epochs'] < 8 and with_out['stopped_early'] and len(pd.read_csv(out/'history.csv')) == with_out['epochs']
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['early_stop'] == 1
    assert (cfg['d4'], cfg['aug'], cfg['hsv'], cfg['stain'], cfg['lighting'], cfg['pretrained']) == (False, True, 0.05, 0.05, 0.1, False)


def test_lr_find_trains_nothing(synth, tmp_path, capsys):
    "pcam_train --lr-find: fastai's finder on the run's data and model; a plot, the curve and suggestions, no run record."
    from pcam_nb.train import pcam_train
    out = tmp_path/'lr'
    pcam_train(data=str(synth), arch='simple_cnn', bs=16, limit=256, device='cpu', progress=False, out=str(out), lr_find=True)
    said = capsys.readouterr().out
    rec = json.loads((out/'lr_find.json').read_text())
    assert set(rec['suggestions']) == {'valley', 'slide', 'minimum', 'steep'}
    assert len(rec['lrs']) == len(rec['losses']) > 10 and (out/'lr_find.png').stat().st_size > 5000
    assert f"--lr {rec['suggestions']['valley']:.1e}" in said and 'learning-rate finder: valley' in said
    assert not (out/'metrics.json').exists() and not (out/'config.json').exists() and not list(out.glob('*.pth'))


def test_no_aug_and_compile(synth, tmp_path, monkeypatch):
    "aug=False is recorded; compile='on' runs the recipe with a torch.compile'd model and exports the plain one (aot_eager here, to be quick)."
    import pcam_nb.train as tr
    monkeypatch.setattr(tr, 'pcam_learner', partial(tr.pcam_learner, compile_kw=dict(backend='aot_eager')))
    out = tmp_path/'run'
    tr.pcam_run(synth, 'simple_cnn', epochs=1, aug=False, compile='on', out=out, bs=64, limit=128, valid_limit=64,
                device='cpu', progress=False)
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['aug'] is False and cfg['compile'] is True
    assert json.loads((out/'metrics.json').read_text())['epochs'] == 1
    from pcam_nb.runs import load_model, load_learner_trusted
    assert load_model(out)(torch.zeros(1, 3, 64, 64)).shape == (1, 2)
    assert load_learner_trusted(out).model._compiled_call_impl is None


def test_aug_off_in_loader(synth):
    from pcam_nb.loaders import pcam_dls, RandomD4
    on, off = (pcam_dls(synth, bs=32, limit=64, valid_limit=32, device='cpu', progress=False, aug=a) for a in (True, False))
    has_d4 = lambda d: any(isinstance(t, RandomD4) for t in d.train.after_batch.fs)
    assert has_d4(on) and not has_d4(off)


def test_valid_split_with_one_class(tmp_path):
    "A valid split holding one class only would leave valid AUC undefined (no best epoch): a clear error up front."
    from pcam_nb.train import pcam_run
    from pcam_nb.core import PCamError
    (tmp_path/'images').mkdir()
    rows = []
    for i in range(24):
        split, label = ('valid', 0) if i >= 16 else ('train', i % 2)
        Image.fromarray(np.full((32, 32, 3), 8 * i, np.uint8)).save(tmp_path/'images'/f'p{i}.png')
        rows.append(dict(id=f'p{i}', label=label, split=split))
    pd.DataFrame(rows).to_csv(tmp_path/'labels.csv', index=False)
    with pytest.raises(PCamError, match="valid split holds only class 'normal'"):
        pcam_run(tmp_path, 'simple_cnn', epochs=1, out=tmp_path/'run', bs=8, device='cpu', progress=False)
    assert not (tmp_path/'run').exists()
