"End-to-end tests of pcam_evaluate and checks of the metric code against scikit-learn."
import json, re

import numpy as np, pandas as pd, pytest, torch
from sklearn.metrics import (roc_auc_score, roc_curve, accuracy_score, balanced_accuracy_score, f1_score, recall_score, log_loss)

from conftest import fork_cli, run_command, assert_clean_error
from pcam_nb.core import PCamError
from pcam_nb.data import pcam_h5_paths
from pcam_nb.evaluate import (roc_auc, _weighted_auc, auc_ci, classification_metrics, ece, fit_temperature,
                              calibrated_probs, rotation_robustness, evaluate_run, compare_runs, pcam_evaluate)
from pcam_nb.core import D4_NAMES
from pcam_nb.core import d4


@pytest.fixture
def run(tiny_run_copy):
    "A finished pcam_train run (baseline CNN, 1 epoch) on a small synthetic set with a test split: conftest's `tiny_run_copy`."
    return tiny_run_copy


@pytest.mark.parametrize('seed', range(5))
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 3000))
    y = rng.integers(0, 2, n)
    p1 = rng.random(n) if seed % 2 else np.round(rng.random(n), 1).clip(.05, .95)   # odd seeds continuous, even tied
    probs = np.stack([1 - p1, p1], 1)
    m = classification_metrics(y, probs, threshold=0.4, n_boot=100, seed=seed)
    pred = (p1 >= 0.4).astype(int)
    assert m['auc'] == pytest.approx(roc_auc_score(y, p1), abs=1e-12)
    assert m['accuracy'] == pytest.approx(accuracy_score(y, pred))
    assert m['balanced_accuracy'] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m['f1'] == pytest.approx(f1_score(y, pred))
    assert m['sensitivity'] == pytest.approx(recall_score(y, pred))
    assert m['specificity'] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m['nll'] == pytest.approx(log_loss(y, probs), rel=1e-6)
    fpr, tpr, thr = roc_curve(y, p1, drop_intermediate=False)            # thresholds high to low
    k = int(np.argmax(tpr >= 0.95))                                      # the highest one reaching 95% sensitivity
    assert m['threshold_at_target'] == pytest.approx(thr[k]) and m['specificity_at_target'] == pytest.approx(1 - fpr[k])
    conf, correct = probs.max(1), (probs.argmax(1) == y)                 # ECE, one bin at a time
    bins = [[i for i in range(n) if min(int(conf[i] * 15), 14) == b] for b in range(15)]
    ref = sum(len(ix) * abs(conf[ix].mean() - correct[ix].mean()) for ix in bins if ix) / n
    assert m['ece'] == pytest.approx(ref, abs=1e-12)
    w = rng.integers(0, 3, n)
    if len(np.unique(np.repeat(y, w))) == 2:
        assert _weighted_auc(y, p1, w)[0] == pytest.approx(roc_auc_score(np.repeat(y, w), np.repeat(p1, w)), abs=1e-12)


def test_auc_ci_covers_and_shrinks():
    rng = np.random.default_rng(0)
    def ci(n):
        y = rng.integers(0, 2, n); s = y + rng.normal(0, 1, n)
        return roc_auc(y, s), auc_ci(y, s, n_boot=300)
    a, (lo, hi) = ci(400)
    b, (lo2, hi2) = ci(6400)
    assert lo < a < hi and lo2 < b < hi2
    assert (hi2 - lo2) < 0.4 * (hi - lo)                                   # about 1/4 the width with 16x the data


def test_ece_and_temperature():
    rng = np.random.default_rng(1)
    logit = rng.normal(0, 2, 8000)
    y = (rng.random(8000) < 1 / (1 + np.exp(-logit))).astype(int)
    lg = torch.tensor(np.stack([np.zeros(8000), logit / 2], 1))          # underconfident by a factor 2
    assert ece(calibrated_probs(lg), y) > 0.05
    T = fit_temperature(lg, y)
    assert T == pytest.approx(0.5, abs=0.08)
    assert ece(calibrated_probs(lg, T), y) < 0.02


def test_d4_views_are_the_group():
    img = torch.arange(16).view(1, 4, 4)
    views = [tuple(d4(img, k).flatten().tolist()) for k in range(8)]
    assert len(set(views)) == 8 == len(D4_NAMES)
    rots = {tuple(torch.rot90(img, r, (-2, -1)).flatten().tolist()) for r in range(4)}
    assert rots <= set(views)


def test_rotation_robustness_of_invariant_and_not():
    p = torch.rand(50, 1, 2).softmax(-1)
    assert rotation_robustness(p.expand(-1, 8, -1))['max_spread'] == 0
    q = torch.rand(50, 8, 2).softmax(-1)
    assert rotation_robustness(q)['mean_spread'] > 0.05


def test_evaluate_cli(run, tmp_path):
    out, data = run
    r = fork_cli('pcam_evaluate', out, '--n-boot', 200, '--device', 'cpu', '--no-progress')    # the console script; D4 TTA by default
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out/'eval_test.json').read_text())                  # default split: test, when the data has one
    assert {'auc', 'auc_ci', 'accuracy', 'nll', 'ece', 'n', 'tta', 'robustness', 'calibration'} <= set(rep)
    assert rep['n'] == 256 and rep['split'] == 'test' and not rep['selection_split'] and rep['note'] is None
    assert rep['auc_ci'][0] <= rep['auc'] <= rep['auc_ci'][1]
    for f in ('roc', 'confusion', 'reliability', 'mistakes', 'grad_cam'):
        assert (out/'eval_test'/f'{f}.png').stat().st_size > 5000, f
    pred = pd.read_csv(out/'eval_test'/'predictions.csv')
    assert list(pred.columns) == ['id', 'label', 'prob', 'prob_tta'] and len(pred) == 256
    assert roc_auc_score(pred.label, pred.prob) == pytest.approx(rep['auc'], abs=1e-5)
    assert 'D4 TTA' in r.stdout and 'rotation robustness' in r.stdout and 'auc' in r.stdout
    # the rest in this process: the same parsing and error handling, without a new process to start
    r2 = run_command(pcam_evaluate, out, '--split', 'valid', '--no-tta', '--n-boot', 200, '--device', 'cpu', '--no-progress', '--no-plots')
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert 'optimistic' in r2.stdout and 'D4 TTA' not in r2.stdout       # valid chose the best epoch; --no-tta: plain only
    # the same model evaluated again (in this process) gives the same numbers
    v1 = json.loads((out/'eval_valid.json').read_text())
    assert 'tta' not in v1 and not (out/'eval_valid'/'roc.png').exists()
    v2 = evaluate_run(out, split='valid', tta=False, n_boot=200, device='cpu', progress=False, plots=False)
    drop = lambda d: {k: v for k, v in d.items() if k not in ('seconds', 'evaluated', 'predict_seconds_per_1000')}
    assert drop(v1) == drop(v2)
    r4 = run_command(pcam_evaluate, out, out, '--compare', '--split', 'test', '--no-progress')
    assert r4.returncode == 0, r4.stderr[-3000:]
    assert r4.stdout.count('simple_cnn') == 2 and re.search(r'^\|\s*run\s*\|\s*arch', r4.stdout, re.M), r4.stdout


def test_evaluate_a_single_file_and_fresh_compare(run):
    """Another source of the same patches (one HDF5 file) scores the same; a file never stands in for another split;
    --compare re-evaluates when the stored report answers another question (other data)."""
    from pcam_nb.train import pcam_train
    out, data = run
    own = evaluate_run(out, split='valid', tta=False, n_boot=50, device='cpu', progress=False, plots=False)
    vf = pcam_h5_paths(data, 'valid')[0]
    opts = ['--n-boot', 50, '--device', 'cpu', '--no-progress', '--no-plots', '--no-tta']
    r = run_command(pcam_evaluate, out, '--data', vf, '--split', 'valid', *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out/'eval_valid.json').read_text())
    assert rep['data'] == str(vf) and rep['n'] == own['n'] and rep['auc'] == pytest.approx(own['auc'], abs=1e-6)
    assert rep['selection_split'] and 'optimistic' in r.stdout        # the same valid patches that picked the epoch
    assert_clean_error(run_command(pcam_evaluate, out, '--data', vf, '--split', 'test', *opts), "holds the 'valid' split, not 'test'")
    assert_clean_error(run_command(pcam_train, '--data', vf, '--epochs', 1, '--device', 'cpu', '--out', out.parent/'x'),
                       "holds the 'valid' split, not 'train'", 'Pass its folder')
    df = compare_runs([out], 'valid', tta=False, n_boot=50, device='cpu', progress=False, plots=False)
    assert json.loads((out/'eval_valid.json').read_text())['data'] == str(data)  # re-evaluated on the run's own data
    assert df.auc[0].startswith(f"{own['auc']:.4f}")


def test_evaluate_bad_input(run, tmp_path):
    out, data = run
    assert_clean_error(run_command(pcam_evaluate, tmp_path/'nope', out), '--compare')
    with pytest.raises(PCamError, match='config.json'): evaluate_run(tmp_path/'nope')
    with pytest.raises(PCamError, match='missing'): evaluate_run(out, data=tmp_path/'missing', progress=False)
    with pytest.raises(PCamError, match='classes'): evaluate_run(out, data=class_folders(tmp_path), progress=False)
    empty = tmp_path/'run-empty'; empty.mkdir()
    (empty/'config.json').write_text(json.dumps({'arch': 'simple_cnn', 'classes': ['normal', 'tumour'], 'img_size': 64, 'data': str(data)}))
    with pytest.raises(PCamError, match='model.pth'): evaluate_run(empty, progress=False)


def class_folders(root):
    "Three classes of 96 px PNGs: data the run's two classes don't fit."
    from PIL import Image
    for c in ('a', 'b', 'c'):
        (root/'cls'/c).mkdir(parents=True)
        for i in range(4): Image.fromarray(np.full((96, 96, 3), 40 * i, np.uint8)).save(root/'cls'/c/f'{i}.png')
    return root/'cls'
