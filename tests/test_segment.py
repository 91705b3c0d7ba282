"Segmentation: readers of every layout, bad inputs, loss and metrics by hand, TTA and sliding windows, the command end to end."
import json, configparser
from pathlib import Path
import numpy as np, pytest, torch
import torch.nn.functional as F
from PIL import Image
from conftest import ROOT, sample, run_command, assert_one_line_error, assert_uniform_help, tree_digest, leftovers

from pcam_nb.core import PCamError, d4
from pcam_nb.segdata import load_seg, seg_pairs, seg_layout, mask_codes, synth_seg, seg_dls, bcss_lut, BCSS_CODES
from pcam_nb.segment import (SegLoss, SegNet, seg_model, seg_counts, seg_scores, predict_probs, to_input, D4_INV,
                             pcam_segment, run_config)
from monai.inferers import sliding_window_inference

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _img(h=40, w=48, seed=0): return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
def _save(path, a): path.parent.mkdir(parents=True, exist_ok=True); Image.fromarray(a).save(path)


def _codes(h=40, w=48, k=3):
    m = np.zeros((h, w), np.uint8)
    for i in range(k): m[:, i * w // k:(i + 1) * w // k] = i + 1
    return m


# ---- readers, one per layout ----

def test_sample_layout_jpeg_masks_thresholded(tmp_path):
    m = np.zeros((40, 48), np.uint8); m[:, 24:] = 255
    for i in range(2):
        _save(tmp_path/'images'/f'a{i}.jpg', _img(seed=i)); _save(tmp_path/'masks'/f'a{i}.jpg', m)
    before = tree_digest(tmp_path)
    s = load_seg(tmp_path, 'glas')
    assert seg_layout(tmp_path) == 'sample' and len(s) == 2 and s.classes == ['background', 'gland']
    assert set(np.unique(s.masks[0])) == {1, 2} and (s.masks[0][:, :20] == 1).all() and (s.masks[0][:, 28:] == 2).all()
    assert tree_digest(tmp_path) == before


def test_bcss_kaggle_layout_codes_and_merge(tmp_path):
    raw = np.zeros((40, 48), np.uint8); raw[:10] = 1; raw[10:20] = 20; raw[20:30] = 10; raw[30:] = 0   # tumor, dcis, plasma, outside
    for split in ('train', 'val'):
        _save(tmp_path/split/'x.png', _img()); _save(tmp_path/f'{split}_mask'/'x.png', raw)
    s = load_seg(tmp_path, split='val')
    assert seg_layout(tmp_path) == 'bcss' and s.classes == BCSS_CODES[1:] and set(np.unique(s.masks[0])) == {0, 1, 10, 20}
    mg = load_seg(tmp_path, 'bcss-merged')
    assert mg.classes[:3] == ['tumour', 'stroma', 'inflammatory']
    assert (mg.masks[0][:20] == 1).all() and (mg.masks[0][20:30] == 3).all() and (mg.masks[0][30:] == 0).all()
    assert mg.class_counts()['ignored'] == 10 * 48


def test_glas_layout_instance_ids(tmp_path):
    a = np.zeros((40, 48), np.uint8); a[5:15, 5:15] = 1; a[20:30, 20:40] = 7   # two glands, ids 1 and 7
    _save(tmp_path/'train_1.bmp', _img()); _save(tmp_path/'train_1_anno.bmp', a)
    s = load_seg(tmp_path)
    assert seg_layout(tmp_path) == 'glas' and s.names == ['train_1.bmp']
    assert (s.masks[0] == np.where(a > 0, 2, 1)).all()


def test_csv_layout(tmp_path):
    m = np.zeros((40, 48), np.uint8); m[20:] = 255
    _save(tmp_path/'i'/'p.png', _img()); _save(tmp_path/'m'/'p_mask.png', m)
    (tmp_path/'pairs.csv').write_text('image,mask\ni/p.png,m/p_mask.png\n')
    s = load_seg(tmp_path/'pairs.csv')
    assert seg_layout(tmp_path/'pairs.csv') == 'csv' and (s.masks[0][25:] == 2).all() and (s.masks[0][:15] == 1).all()


def test_palette_masks_of_jpeg_damaged_colours():
    pal = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    a = np.array([[[245, 8, 3], [6, 250, 9], [3, 2, 1]]], np.uint8)
    assert mask_codes(a, 2, 'palette', palette=pal).tolist() == [[1, 2, 0]]


# ---- bad inputs: one line naming the file, nothing written under the source ----

def _bad_trees(tmp_path):
    "name -> (source folder, file the message must name, fragment)."
    cases = {}
    d = tmp_path/'size'; _save(d/'images'/'a.png', _img()); _save(d/'masks'/'a.png', np.zeros((20, 20), np.uint8))
    cases['size'] = (d, 'a.png', '20x20 px but its image a.png is 48x40')
    d = tmp_path/'codes'; _save(d/'train'/'b.png', _img()); _save(d/'train_mask'/'b.png', np.full((40, 48), 30, np.uint8))
    cases['codes'] = (d, str(d/'train_mask'/'b.png'), 'holds codes 30 outside the classes 0..21')
    d = tmp_path/'missing'; _save(d/'images'/'c.png', _img()); _save(d/'images'/'e.png', _img()); _save(d/'masks'/'c.png', _codes())
    cases['missing'] = (d, str(d/'images'/'e.png'), 'no mask e.*')
    d = tmp_path/'empty'; (d/'images').mkdir(parents=True); (d/'masks').mkdir()
    cases['empty'] = (d, str(d), 'no images found')
    return cases


@pytest.mark.parametrize('case', ['size', 'codes', 'missing', 'empty'])
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    src, name, fragment = _bad_trees(tmp_path)[case]
    before = tree_digest(src)
    with pytest.raises(PCamError) as e: load_seg(src)
    msg = str(e.value)
    assert name in msg and fragment in msg and '\n' not in msg, msg
    r = run_command(pcam_segment, 'train', '--data', src, '--out', tmp_path/'run', '--no-progress', '--device', 'cpu')
    assert_one_line_error(r, fragment)
    assert tree_digest(src) == before and not (tmp_path/'run').exists() and not leftovers(src)


def test_not_a_layout_and_bad_names(tmp_path):
    (tmp_path/'x').mkdir()
    with pytest.raises(PCamError, match='holds no images/'): load_seg(tmp_path/'x')
    with pytest.raises(PCamError, match='nope: not found'): seg_pairs(tmp_path/'nope')
    _save(tmp_path/'ok'/'images'/'a.png', _img()); _save(tmp_path/'ok'/'masks'/'a.png', _codes())
    with pytest.raises(PCamError, match="preset='bcs'"): load_seg(tmp_path/'ok', 'bcs')
    r = run_command(pcam_segment, 'train', '--arch', 'fcn', '--out', tmp_path/'r', '--device', 'cpu')
    assert_one_line_error(r, 'fcn')
    assert_one_line_error(run_command(pcam_segment, 'evaluate', '--out', tmp_path/'x'), 'not a pcam_segment run')
    assert_one_line_error(run_command(pcam_segment, 'resume', '--out', tmp_path/'x', '--epochs', 3), 'resume takes its settings')


# ---- loss and metrics against a hand-computed case ----

def test_loss_by_hand_and_ignored_pixels():
    logits = torch.tensor([np.log(3.), 0.]).view(1, 2, 1, 1).expand(1, 2, 2, 2).clone()   # p = 0.75, 0.25 everywhere
    y = torch.tensor([[[1, 2], [0, 2]]])
    ce = -(np.log(.75) + 2 * np.log(.25)) / 3
    dice = 1 - (2 * .75 / (2.25 + 1) + 2 * .5 / (.75 + 2)) / 2
    assert SegLoss()(logits, y).item() == pytest.approx(ce + dice, abs=1e-4)
    logits[0, :, 1, 0] = torch.tensor([-5., 9.])
    assert SegLoss()(logits, y).item() == pytest.approx(ce + dice, abs=1e-4)
    assert torch.isfinite(SegLoss()(logits, torch.zeros_like(y)))   # every pixel ignored: finite, no NaN


def test_scores_by_hand():
    y = np.array([[1, 1], [2, 0]])
    c = seg_counts(np.array([[1, 2], [2, 1]]), y, 2)          # the pixel with code 0 is not counted
    assert c['confusion'].tolist() == [[1, 1], [0, 1]]
    r = seg_scores([c], ['a', 'b'], n_boot=50)
    assert r['dice']['a']['value'] == pytest.approx(2 / 3) and r['dice']['b']['value'] == pytest.approx(2 / 3)
    assert r['iou']['a']['value'] == pytest.approx(1 / 2) and r['pixel_accuracy'] == pytest.approx(2 / 3)
    assert r['mean_dice']['value'] == pytest.approx(2 / 3)


# ---- prediction: D4 views mapped back, sliding window ----

def test_each_d4_view_mapped_back_is_the_identity():
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).view(1, 2, 3, 5)
    views = [d4(x, k) for k in range(8)]
    assert len({(tuple(v.shape), tuple(v.flatten().tolist())) for v in views}) == 8
    for k, v in enumerate(views): assert torch.equal(d4(v, D4_INV[k]), x), k


def test_tta_of_a_pointwise_model_equals_no_tta():
    "A 1x1-conv model commutes with every D4 element: its TTA average equals its single view only if the views are mapped back."
    torch.manual_seed(0)
    net = SegNet(torch.nn.Conv2d(3, 3, 1), 32).eval()
    img, stats = _img(37, 53), ([.5] * 3, [.25] * 3)
    torch.testing.assert_close(predict_probs(net, img, stats, tta=True), predict_probs(net, img, stats, tta=False), atol=1e-5, rtol=0)


def test_sliding_window_equals_direct_on_a_tile_that_needs_no_window():
    torch.manual_seed(0)
    net = SegNet(seg_model('unet', 3, 64, width=8), 64).eval()
    x = to_input(_img(64, 64), ([.5] * 3, [.25] * 3))
    with torch.no_grad():
        direct = net.net(x)
        torch.testing.assert_close(sliding_window_inference(x, (64, 64), 2, net.net), direct, atol=1e-5, rtol=0)
        torch.testing.assert_close(net(x), direct)
        assert net(to_input(_img(70, 90), ([.5] * 3, [.25] * 3))).shape == (1, 3, 70, 90)


def test_loader_batches():
    s = synth_seg(6, 64)
    for resident in (True, False):   # the data held as device tensors, or cut from the host arrays
        dls = seg_dls(s[:4], s[4:], crop=32, bs=4, device='cpu', resident=resident)
        xb, yb = dls.train.one_batch()
        assert xb.shape == (4, 3, 32, 32) and yb.shape == (4, 32, 32) and yb.dtype == torch.long and 1 <= yb.min() and yb.max() <= 4
        vx, vy = dls.valid.one_batch()
        assert vx.shape == (2, 3, 64, 64) and (vy == torch.from_numpy(np.stack(s.masks[4:])).long()).all()
    small = seg_dls(s[:4], s[4:], crop=96, bs=2, device='cpu')            # crops larger than the tiles are padded with code 0
    xb, yb = small.train.one_batch()
    assert xb.shape == (2, 3, 96, 96) and (yb == 0).sum() == 2 * (96 * 96 - 64 * 64)


# ---- the command end to end ----

TINY = ('--n-train', 8, '--n-valid', 3, '--crop', 64, '--width', 8, '--bs', 4, '--epoch-crops', 8, '--device', 'cpu', '--no-progress')


def test_cli_train_resume_evaluate(tmp_path):
    out = tmp_path/'run'
    r = run_command(pcam_segment, 'train', '--out', out, '--epochs', 1, *TINY)
    assert r.returncode == 0, r.stderr
    names = {p.name for p in out.iterdir()}
    assert {'config.json', 'history.csv', 'metrics.json', 'curves.png', 'model.pth', 'checkpoint.pth', 'best.pth'} <= names
    m = json.loads((out/'metrics.json').read_text())
    assert m['epochs'] == 1 and 0 <= m['valid_dice'] <= 1 and m['resumes'] == 0
    # a finished run is neither trained over nor resumed
    assert_one_line_error(run_command(pcam_segment, 'train', '--out', out, *TINY), 'holds a finished run')
    assert_one_line_error(run_command(pcam_segment, 'resume', '--out', out), 'nothing to resume')
    # the same folder as a kill after epoch 1 of 2 leaves it: config says 2 epochs, no model.pth or metrics.json
    cfg = run_config(out); cfg['epochs'] = 2; (out/'config.json').write_text(json.dumps(cfg))
    (out/'metrics.json').unlink(); (out/'model.pth').unlink()
    assert_one_line_error(run_command(pcam_segment, 'train', '--out', out, *TINY), 'pcam_segment resume')
    r = run_command(pcam_segment, 'resume', '--out', out, '--device', 'cpu', '--no-progress')
    assert r.returncode == 0, r.stderr
    m = json.loads((out/'metrics.json').read_text())
    assert m['epochs'] == 2 and m['resumes'] == 1
    assert len((out/'history.csv').read_text().strip().splitlines()) == 3
    r = run_command(pcam_segment, 'evaluate', '--out', out, '--no-tta', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    rep = json.loads((out/'evaluation.json').read_text())
    assert rep['n_images'] == 3 and set(rep['dice']) <= set(cfg['classes']) and len(rep['confusion']) == 4
    assert len(list((out/'masks').glob('*.png'))) == 3 and (out/'overlays.png').exists() and not leftovers(out)
    assert 'mean' in r.stdout and 'pixel accuracy' in r.stdout


def _layout(root, kind, n=4, size=64):
    "A tiny source of `n` images with masks in layout `kind`; the path to give `--data`."
    rng = np.random.default_rng(1)
    def mask(i):                                   # two regions, the image darker where the mask says 'tumour'
        m = np.zeros((size, size), np.uint8); m[:, : size // 2 + 4 * i] = 1; return m
    def img(m): return np.where(m[..., None] > 0, 70, 200).astype(np.uint8) + rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    for i in range(n):
        m = mask(i)
        if kind == 'sample': _save(root/'images'/f'a{i}.png', img(m)); _save(root/'masks'/f'a{i}.png', m * 255)
        if kind == 'glas': _save(root/f'train_{i}.bmp', img(m)); _save(root/f'train_{i}_anno.bmp', m * (i + 1))
        if kind == 'csv': _save(root/'i'/f'p{i}.png', img(m)); _save(root/'m'/f'p{i}.png', m * 255)
        if kind == 'bcss':
            split = 'val' if i == n - 1 else 'train'
            _save(root/split/f'x{i}.png', img(m)); _save(root/f'{split}_mask'/f'x{i}.png', np.where(m > 0, 1, 2).astype(np.uint8))
    if kind == 'csv':
        (root/'pairs.csv').write_text('image,mask\n' + ''.join(f'i/p{i}.png,m/p{i}.png\n' for i in range(n))); return root/'pairs.csv'
    return root


@pytest.mark.parametrize('kind', ['sample', 'bcss', 'glas', 'csv'])
def test_cli_on_every_layout(kind, tmp_path):
    "pcam_segment trains, resumes and evaluates on each layout it reads; the source is left as it was."
    src = _layout(tmp_path/'src', kind); before = tree_digest(tmp_path/'src')
    out, small = tmp_path/'run', ('--crop', 32, '--width', 4, '--bs', 2, '--epoch-crops', 4, '--valid', 1, '--device', 'cpu', '--no-progress')
    r = run_command(pcam_segment, 'train', '--data', src, '--out', out, '--epochs', 1, *small)
    assert r.returncode == 0, r.stderr
    cfg = run_config(out); cfg['epochs'] = 2; (out/'config.json').write_text(json.dumps(cfg))   # as a run killed after epoch 1 of 2
    (out/'metrics.json').unlink(); (out/'model.pth').unlink()
    r = run_command(pcam_segment, 'resume', '--out', out, '--device', 'cpu', '--no-progress')
    assert r.returncode == 0, r.stderr
    assert json.loads((out/'metrics.json').read_text())['resumes'] == 1
    r = run_command(pcam_segment, 'evaluate', '--out', out, '--no-tta', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    rep = json.loads((out/'evaluation.json').read_text())
    assert rep['n_images'] == 1 and len(list((out/'masks').glob('*.png'))) == 1
    assert tree_digest(tmp_path/'src') == before and not leftovers(tmp_path/'src')


def test_cli_help_and_registration():
    flags = assert_uniform_help(run_command(pcam_segment, '--help'))
    assert {'--no-tta', '--no-aug', '--no-progress', '--overwrite'} <= flags
    cp = configparser.ConfigParser(); cp.read(ROOT/'settings.ini')
    d = cp['DEFAULT']
    assert 'pcam_segment=pcam_nb.segment:pcam_segment' in d['console_scripts'].split()
    assert 'monai>=1.4,<1.7' in d['requirements'].split() and 'einops>=0.7' in d['requirements'].split()


# ---- the real samples ----

def test_real_glas_sample():
    p = sample('glas-sample')
    before = tree_digest(p)
    s = load_seg(p, 'glas')
    assert len(s) == 16 and all(i.shape[:2] == m.shape for i, m in zip(s.images, s.masks))
    assert all(set(np.unique(m)) == {1, 2} for m in s.masks)              # JPEG masks thresholded to two classes
    frac = s.class_counts()['gland'] / sum(s.class_counts().values())
    assert 0.2 < frac < 0.8, frac
    assert tree_digest(p) == before


def test_real_bcss_sample():
    p = sample('bcss-sample')
    s = load_seg(p, 'bcss-binary', max_side=256)
    assert len(s) == 5 and s.classes == ['other', 'tumour'] and max(max(m.shape) for m in s.masks) == 256
    assert {n.rsplit('.', 1)[1] for n in s.names} == {'png', 'jpg'}
    assert all(set(np.unique(m)) <= {1, 2} for m in s.masks) and s.class_counts()['tumour'] > 0
