"End-to-end tests of pcam_train: every data source, run records, a real kill and --resume, bad input."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np, pandas as pd, pytest, torch
from PIL import Image

from conftest import cli, sample, assert_clean_error, BIN

FAST = ['--arch', 'simple_cnn', '--bs', '64', '--device', 'cpu', '--no-progress']


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    from pcam_nb.synth import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp('synth'), n_train=768, n_valid=256, n_test=64, seed=3, progress=False)


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


def test_run_record(synth, tmp_path):
    out = tmp_path/'run'
    r = cli('pcam_train', '--data', synth, *FAST, '--epochs', 2, '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert {'valid_auc', 'valid_accuracy', 'valid_loss', 'epochs', 'seconds'} <= set(m) and m['epochs'] == 2
    cfg = json.loads((out/'config.json').read_text())
    for k in ('arch', 'epochs', 'lr', 'bs', 'seed', 'torch', 'fastai', 'git_commit', 'device', 'classes', 'stats'): assert k in cfg, k
    assert np.array(cfg['stats']).shape == (2, 3)
    h = pd.read_csv(out/'history.csv')
    assert list(h.epoch) == [0, 1] and {'train_loss', 'valid_loss', 'accuracy', 'roc_auc_score', 'seconds'} <= set(h.columns)
    assert (out/'curves.png').stat().st_size > 1000 and (out/'export.pkl').exists()
    sd = torch.load(out/'model.pth', weights_only=True)     # plain state_dict: safe loading works
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert 'run folder' in r.stdout and f'pcam_evaluate {out}' in r.stdout


@pytest.mark.parametrize('kind', ['class_folders', 'csv_sample'])
def test_every_source(kind, class_folders, tmp_path):
    data = class_folders if kind == 'class_folders' else sample()
    extra = ['--limit', 256, '--valid-limit', 128] if kind == 'csv_sample' else ['--size', 32]
    r = cli('pcam_train', '--data', data, *FAST, '--epochs', 1, '--out', tmp_path/'run', *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((tmp_path/'run'/'config.json').read_text())
    assert cfg['classes'] == (['adipose', 'stroma', 'tumour'] if kind == 'class_folders' else ['normal', 'tumour'])


def kill_and_resume(args, out, n_epochs):
    "Start `pcam_train ARGS --out OUT`, SIGKILL it after its first checkpoint, then --resume it; returns the history."
    p = subprocess.Popen([str(BIN/'pcam_train'), *map(str, args), '--out', str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 240:
        st = out/'state.json'
        if st.exists() and json.loads(st.read_text())['epochs_done'] >= 1: break
        if p.poll() is not None: pytest.fail('run ended before it could be killed')
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL); p.wait()
    done = json.loads((out/'state.json').read_text())['epochs_done']
    assert 1 <= done < n_epochs and not (out/'metrics.json').exists()
    r = cli('pcam_train', '--out', out, '--resume', '--no-progress')
    assert r.returncode == 0, r.stderr[-3000:]
    h = pd.read_csv(out/'history.csv')
    assert list(h.epoch) == list(range(n_epochs))
    return h


def test_resume_after_kill(synth, tmp_path):
    "SIGKILL a run after its first checkpoint; --resume finishes it with the same record as an uninterrupted run."
    out = tmp_path/'run'
    h = kill_and_resume(['--data', synth, *FAST, '--epochs', 3, '--limit', 512], out, 3)
    m = json.loads((out/'metrics.json').read_text())
    assert m['epochs'] == 3 and 0 <= m['valid_auc'] <= 1 and m['resumes'] == 1
    # the run's time covers the epochs of the killed process too, not only the resumed one's
    assert m['seconds'] >= h.seconds.sum() - 0.5, (m['seconds'], h.seconds.sum())
    # the fastai export predicts on new, unlabelled patches (test_dl over an array; predict on one patch)
    from pcam_nb.runs import load_learner_trusted
    from pcam_nb.data import load_patches
    learn = load_learner_trusted(out)
    x = load_patches(synth, 'valid', progress=False).x[:3]
    with learn.no_bar(): probs = learn.get_preds(dl=learn.dls.test_dl(x))[0]
    with learn.no_bar(): cat, idx, pr = learn.predict(x[0])
    assert probs.shape == (3, 2) and torch.allclose(pr, probs[0], atol=1e-5) and str(cat) == ['normal', 'tumour'][int(idx)]


def test_fine_tune_from_weights_resumes_across_phases(synth, tmp_path):
    "--weights runs the fine-tuning recipe (frozen body, then unfrozen); a run killed after the frozen phase resumes into the unfrozen one."
    import torchvision
    w = tmp_path/'r18.pth'; torch.save(torchvision.models.resnet18().state_dict(), w)
    out = tmp_path/'ft'
    h = kill_and_resume(['--data', synth, '--arch', 'resnet18', '--bs', 64, '--device', 'cpu', '--no-progress', '--limit', 256,
                         '--valid-limit', 128, '--weights', w, '--epochs', 2, '--freeze-epochs', 1], out, 3)
    assert list(h.phase) == ['frozen', 'unfrozen', 'unfrozen']
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['weights'] == str(w) and cfg['stats'][0] == pytest.approx([0.485, 0.456, 0.406], abs=1e-3)  # ImageNet stats


def test_same_seed_same_run_and_early_stop(synth, tmp_path):
    "Two runs with one seed give the same history; --early-stop ends a run whose AUC stops improving."
    hist = []
    for k in range(2):
        r = cli('pcam_train', '--data', synth, *FAST, '--epochs', 2, '--limit', 256, '--valid-limit', 128, '--seed', 7,
                '--out', tmp_path/f'seed{k}')
        assert r.returncode == 0, r.stderr[-3000:]
        hist.append(pd.read_csv(tmp_path/f'seed{k}'/'history.csv'))
    cols = ['train_loss', 'valid_loss', 'accuracy', 'roc_auc_score']
    pd.testing.assert_frame_equal(hist[0][cols], hist[1][cols])
    r = cli('pcam_train', '--data', synth, *FAST, '--epochs', 8, '--limit', 256, '--valid-limit', 128, '--lr', 1e-9,
            '--early-stop', 1, '--out', tmp_path/'early')
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path/'early'/'metrics.json').read_text())
    assert m['epochs'] < 8 and json.loads((tmp_path/'early'/'config.json').read_text())['early_stop'] == 1


def test_augmentation_options_are_recorded(synth, tmp_path):
    r = cli('pcam_train', '--data', synth, *FAST, '--epochs', 1, '--limit', 256, '--valid-limit', 128, '--no-d4',
            '--hsv', 0.05, '--stain', 0.05, '--no-pretrained', '--out', tmp_path/'aug')
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((tmp_path/'aug'/'config.json').read_text())
    assert (cfg['d4'], cfg['aug'], cfg['hsv'], cfg['stain'], cfg['lighting'], cfg['pretrained']) == (False, True, 0.05, 0.05, 0.1, False)


def test_lr_find_trains_nothing(synth, tmp_path):
    "pcam_train --lr-find: fastai's finder on the run's data and model; a plot, the curve and suggestions, no run record."
    out = tmp_path/'lr'
    r = cli('pcam_train', '--data', synth, *FAST, '--limit', '512', '--out', out, '--lr-find')
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((out/'lr_find.json').read_text())
    assert set(rec['suggestions']) == {'valley', 'slide', 'minimum', 'steep'}
    assert len(rec['lrs']) == len(rec['losses']) > 10 and (out/'lr_find.png').stat().st_size > 5000
    assert f"--lr {rec['suggestions']['valley']:.1e}" in r.stdout and 'learning-rate finder: valley' in r.stdout
    assert not (out/'metrics.json').exists() and not (out/'config.json').exists() and not list(out.glob('*.pth'))


@pytest.mark.parametrize('args,fragments', [
    (['--data', '/nowhere'], ['no such file or folder']),
    (['--arch', 'vgg17_bn'], ['vgg17_bn']),
    (['--resume'], ['--resume needs --out']),
    (['--lr-find', '--resume'], ['--lr-find and --resume contradict']),
    (['--pretrained', '--no-pretrained'], ['--pretrained and --no-pretrained contradict']),
    (['--weights', '/nowhere/w.pth'], ['/nowhere/w.pth']),
])
def test_bad_input(args, fragments, synth, tmp_path):
    base = ['--data', str(synth), '--epochs', '1', '--device', 'cpu', '--out', str(tmp_path/'r')]
    r = cli('pcam_train', *base, *args) if args != ['--resume'] else cli('pcam_train', '--resume')
    assert_clean_error(r, *fragments)
    assert not (tmp_path/'r').exists()                                   # bad input leaves no run folder behind


def test_no_aug_and_compile(synth, tmp_path):
    "--no-aug is recorded and turns augmentation off; --compile runs the recipe with a torch.compile'd model (inductor on CPU)."
    out = tmp_path/'run'
    r = cli('pcam_train', '--data', synth, *FAST, '--epochs', 1, '--limit', 128, '--valid-limit', 64, '--out', out,
            '--no-aug', '--compile', timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['aug'] is False and cfg['compile'] is True
    assert json.loads((out/'metrics.json').read_text())['epochs'] == 1
    from pcam_nb.runs import load_model
    assert load_model(out)(torch.zeros(1, 3, 96, 96)).shape == (1, 2)


def test_aug_off_in_loader(synth):
    from pcam_nb.loaders import pcam_dls, RandomD4
    on, off = (pcam_dls(synth, bs=32, limit=64, valid_limit=32, device='cpu', progress=False, aug=a) for a in (True, False))
    has_d4 = lambda d: any(isinstance(t, RandomD4) for t in d.train.after_batch.fs)
    assert has_d4(on) and not has_d4(off)


def test_compile_flags_contradict(synth, tmp_path):
    r = cli('pcam_train', '--data', synth, '--device', 'cpu', '--out', tmp_path/'r', '--compile', '--no-compile')
    assert_clean_error(r, '--compile and --no-compile')


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
