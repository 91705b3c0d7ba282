"Equivariant models (escnn): numerical invariance on CPU in fp32, export, state dicts, and training through pcam_train."
import json

import pytest, torch

from conftest import run_command
from pcam_nb.equivariant import (gcnn, cnn_baseline, d4_spread, d4_logits, escnn_modules, EscnnMissingError, ensure_arch,
                                 ESCNN_INSTALL, GCNN)
from pcam_nb.models import create_model, n_params

from pcam_nb.core import D4_ROTATIONS as ROT  # identity, 90, 180, 270 degrees


def _settled(model, seed=0):
    "`model` after one train-mode batch (non-trivial batch-norm statistics), in eval mode."
    torch.manual_seed(seed)
    model.train()(torch.randn(16, 3, 32, 32))
    return model.eval()


@pytest.fixture(scope='module')
def x():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope='module')
def small():
    torch.manual_seed(0)
    return {g: _settled(gcnn(g, width=2, depth=2, img_size=32)) for g in ('d4', 'c4', 'c8')}


def test_d4_gcnn_invariant_baseline_not(small, x):
    "The 8 D4 views of a random input give the same logits (fp32, within 1e-4) for the D4 GCNN; the same check fails for a plain CNN."
    g = small['d4']
    y = d4_logits(g, x)
    assert y.shape == (8, 4, 2) and y.dtype == torch.float32
    assert (y - y[0]).abs().max() < 1e-4
    assert y.std() > 1e-3, 'logits must vary across inputs, or the check is empty'
    base = _settled(cnn_baseline(width=6, depth=2, img_size=32))
    assert d4_spread(base, x) > 1e-2
    assert d4_spread(base, x, ROT) > 1e-2


def test_c4_invariant_to_rotations_only(small, x):
    c4 = small['c4']
    assert d4_spread(c4, x, ROT) < 1e-4
    assert d4_spread(c4, x) > 1e-3  # mirrorings are not in C4 (random weights)


def test_c8_invariant_to_the_square_rotations(small, x):
    "C8 holds C4: the 90-degree rotations (exact on the pixel grid) leave it invariant; mirrorings do not."
    c8 = small['c8']
    assert d4_spread(c8, x, ROT) < 1e-4
    assert d4_spread(c8, x) > 1e-3


def test_export_same_outputs(small, x):
    g = small['d4']
    plain = g.export()
    assert not any(type(m).__module__.startswith('escnn') for m in plain.modules())
    with torch.no_grad(): assert torch.allclose(plain(x), g(x), atol=1e-5)
    assert d4_spread(plain, x) < 1e-4
    assert not g.training  # export left the model in its mode


def test_state_dict_across_modes(small, x):
    g = small['d4']
    sd = g.state_dict()
    assert all('filter' not in k and 'basisexpansion' not in k for k in sd)
    fresh = gcnn('d4', width=2, depth=2, img_size=32)  # train mode
    fresh.load_state_dict(sd)
    fresh.eval()
    with torch.no_grad(): assert torch.allclose(fresh(x), g(x), atol=1e-6)


def test_registry_names():
    assert ensure_arch('gcnn_c8_w3_d2').meta['group'] == 'c8'
    m = create_model('gcnn_c8_w3_d2', n_out=3, img_size=32)
    assert isinstance(m, GCNN) and m(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert ensure_arch('vgg16_bn_w3') is None
    # the defaults are matched in size: baseline within 10% of the D4 GCNN
    p = {n: n_params(create_model(n, img_size=32)) for n in ('gcnn_d4', 'cnn_baseline')}
    assert abs(p['cnn_baseline'] / p['gcnn_d4'] - 1) < 0.1, p


def test_missing_escnn_message(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'escnn' else real(name, *a))
    with pytest.raises(EscnnMissingError, match='pip install --no-deps escnn'):
        escnn_modules.__wrapped__()
    assert 'escnn==' in ESCNN_INSTALL


def test_pcam_train_gcnn_d4(tmp_path):
    "One epoch of the default D4 GCNN through the CLI (64 px, few patches: escnn's layers are slow on a CPU); the run folder rebuilds an invariant model."
    from pcam_nb.synth import make_synthetic
    from pcam_nb.runs import load_model
    data = make_synthetic(tmp_path/'synth', n_train=64, n_valid=32, n_test=0, seed=5, size=64, progress=False)
    from pcam_nb.train import pcam_train
    out = tmp_path/'run'
    r = run_command(pcam_train, '--data', data, '--arch', 'gcnn_d4', '--epochs', 1, '--bs', 32, '--device', 'cpu',
                    '--no-progress', '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert m['epochs'] == 1 and 0 <= m['valid_auc'] <= 1
    assert (out/'model.pth').stat().st_size < 4 * 4 * n_params(create_model('gcnn_d4', img_size=32))  # weights only, no bases
    model = load_model(out)
    assert isinstance(model, GCNN) and not model.training
    x64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert d4_spread(model, x64) < 1e-4
    from pcam_nb.evaluate import evaluate_run                          # pcam_evaluate's path, figures (Grad-CAM) included
    rep = evaluate_run(out, split='valid', tta=True, n_boot=50, device='cpu', progress=False)
    assert rep['robustness']['max_spread'] < 1e-4 and rep['robustness']['class_flip_rate'] == 0
    assert abs(rep['auc'] - rep['tta']['auc']) < 1e-4                 # TTA cannot change an invariant model's ranking
    assert (out/'eval_valid'/'grad_cam.png').stat().st_size > 5000


def test_study_spaces_are_shared_and_real():
    "Every family of the study searches the same settings over one valid pcam_tune space, around a real architecture."
    import importlib.util
    from conftest import ROOT
    from pcam_nb.equivariant import parse_arch
    from pcam_nb.models import arch_info
    pytest.importorskip('yaml', reason="PyYAML is not installed (pip install 'pcam_nb[tune]')")
    from pcam_nb.tune import load_space, trial_settings
    spec = importlib.util.spec_from_file_location('equivariance_study', ROOT/'benchmarks'/'equivariance_study.py')
    study = importlib.util.module_from_spec(spec); spec.loader.exec_module(study)
    assert study.FAMILIES['baseline_noaug'] == ('baseline', False) and study.FAMILIES['baseline_aug'] == ('baseline', True)
    for scale in ('full', 'cpu', 'smoke'):
        keys = {frozenset(study.space(f, scale)) for f in study.FAMILIES}
        assert keys == {frozenset({'lr', 'wd', 'width', 'depth', 'd4'})}, keys           # one search for every family
        for fam, (kind, aug) in study.FAMILIES.items():
            arch = study.base_arch(fam, scale)
            sp = load_space(study.space(fam, scale), arch)
            assert sp['d4'] == ('fixed', aug) and sp['depth'] == ('fixed', study.DEPTH[scale]), sp
            p = parse_arch(arch)
            assert p['group'] == (None if kind == 'baseline' else kind) and p['depth'] == study.DEPTH[scale]
            lo, hi = study.WIDTHS[scale][kind]
            for w in (lo, hi):                                  # both ends of the width range are architectures
                name, kw = trial_settings(arch, {'width': w, 'depth': study.DEPTH[scale], 'lr': 1e-3, 'wd': 0.01, 'd4': aug})
                assert parse_arch(name)['width'] == w and arch_info(name).family == ('baseline' if kind == 'baseline' else 'gcnn')
