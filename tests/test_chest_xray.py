"Chest X-ray layouts: Kermany's class folders and a normal/pneumonia CSV, read as one channel; bad inputs are one-line errors; pcam_train and pcam_evaluate run on them."
import json
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from conftest import sample, run_command, assert_one_line_error, tree_digest
from pcam_nb.chest import chest_table, read_chest_xray, cv_folds, is_chest_xray, CHEST_CLASSES
from pcam_nb.data import source_kind, load_patches, available_splits
from pcam_nb.train import pcam_train
from pcam_nb.evaluate import pcam_evaluate

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def write(root, names, size=36, colour=(), seed=0):
    "Small JPEGs `names` under `root`: grey stored as RGB, except those in `colour`."
    rng = np.random.default_rng(seed)
    for n in names:
        p = Path(root)/n; p.parent.mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        if n not in colour: a = np.repeat(a[..., :1], 3, -1)
        Image.fromarray(a).save(p, quality=95)


def kermany(root, n_train=8, n_test=3):
    "A tree in Kermany's layout: chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}, patient names, a 2-image val split."
    names = [f'{s}/PNEUMONIA/person{i}_virus_{j}.jpeg' for s, n in (('train', n_train), ('test', n_test), ('val', 1)) for i in range(n) for j in range(2)]
    names += [f'{s}/NORMAL/IM-{i:04d}-0001.jpeg' for s, n in (('train', n_train), ('test', n_test), ('val', 1)) for i in range(n)]
    write(Path(root)/'chest_xray', names)
    return Path(root)


def csv_folder(root, n=12, missing=None):
    (Path(root)/'images').mkdir(parents=True, exist_ok=True)
    files = [f'chest_{i}.jpeg' for i in range(n)]
    write(Path(root)/'images', [f for f in files if f != missing])
    pd.DataFrame(dict(file=files, label=['normal', 'pneumonia'] * (n // 2))).to_csv(Path(root)/'labels.csv', index=False)
    return Path(root)


def test_kermany_reader(tmp_path):
    root = kermany(tmp_path/'k')
    assert is_chest_xray(root) and source_kind(root) == 'chest_xray' and available_splits(root) == ['train', 'valid', 'test']
    t = chest_table(root)
    assert len(t) == 3 * 8 + 3 * 3 + 3 and t.patient.notna().all() and set(t.label) == set(CHEST_CLASSES)
    trn, val, tst = (load_patches(root, s, 32, progress=False) for s in ('train', 'valid', 'test'))
    assert trn.x.shape[1:] == (32, 32, 1) and trn.classes == CHEST_CLASSES and len(tst) == 9
    assert len(trn) + len(val) == 24 + 3   # official val joins the pool that train/valid are split from
    assert not set(trn.meta.patient) & set(val.meta.patient)
    folds, unit = cv_folds(trn.y, trn.meta.patient.to_numpy(), k=2)
    assert unit == 'patient' and all(not set(trn.meta.patient[a]) & set(trn.meta.patient[b]) for a, b in folds)


def test_csv_reader(tmp_path):
    root = csv_folder(tmp_path/'c')
    assert source_kind(root) == 'chest_xray' and available_splits(root) == ['train', 'valid']
    p = read_chest_xray(root, 'train', size=32, progress=False)
    assert p.x.shape[1:] == (32, 32, 1) and p.meta.patient.isna().all()
    assert cv_folds(p.y, p.meta.patient.to_numpy(), k=2)[1] == 'image'


def test_bad_inputs_are_one_line_errors(tmp_path):
    "A colour image, an empty class folder, a CSV naming a missing image: pcam_train exits 2 naming the file; nothing changes."
    colour = kermany(tmp_path/'colour')
    bad_img = 'train/NORMAL/IM-0003-0001.jpeg'
    write(colour/'chest_xray', [bad_img], colour={bad_img})
    empty = kermany(tmp_path/'empty')
    for f in (empty/'chest_xray'/'test'/'NORMAL').iterdir(): f.unlink()
    missing = csv_folder(tmp_path/'missing', missing='chest_5.jpeg')
    cases = [(colour, 'IM-0003-0001.jpeg: is a colour image'), (empty, 'test/NORMAL: class folder has no images'),
             (missing, "image(s) not in")]
    for data, frag in cases:
        before = tree_digest(data)
        r = run_command(pcam_train, '--data', data, '--arch', 'simple_cnn', '--size', '32', '--epochs', '1',
                        '--device', 'cpu', '--no-progress', '--out', tmp_path/f'run-{data.name}')
        assert_one_line_error(r, frag)
        assert tree_digest(data) == before
    assert "'chest_5.jpeg'" in r.stderr
    with pytest.raises(ValueError, match='exactly the classes'): read_chest_xray(colour, classes=['normal'])


@pytest.fixture(scope='module')
def chest_run(tmp_path_factory):
    "A one-epoch run on a Kermany tree, with the layout's defaults (one channel, no D4, class weights)."
    tmp = tmp_path_factory.mktemp('chest')
    root, out = kermany(tmp/'k'), tmp/'run'
    r = run_command(pcam_train, '--data', root, '--arch', 'simple_cnn', '--size', '32', '--epochs', '1', '--bs', '8',
                    '--device', 'cpu', '--no-progress', '--out', out)
    assert r.returncode == 0, r.stderr
    return out


def test_train_and_evaluate_on_the_layout(chest_run):
    cfg = json.loads((chest_run/'config.json').read_text())
    assert cfg['data_kind'] == 'chest_xray' and cfg['channels'] == 1 and not cfg['d4'] and cfg['balance'] and cfg['rotate'] == 10
    assert cfg['whole_images'] and cfg['img_size'] == 32
    r = run_command(pcam_evaluate, chest_run, '--no-tta', '--n-boot', '50', '--no-plots', '--no-progress', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    rep = json.loads((chest_run/'eval_test.json').read_text())
    assert rep['split'] == 'test' and rep['n'] == 9 and 0 <= rep['auc'] <= 1


def test_layout_defaults_can_be_switched(tmp_path):
    "--no-balance and --d4 override the chest layout's class weights and its no-D4 default; left out, the layout decides."
    root, out = kermany(tmp_path/'k'), tmp_path/'run'
    r = run_command(pcam_train, '--data', root, '--arch', 'simple_cnn', '--size', '16', '--epochs', '1', '--bs', '8',
                    '--device', 'cpu', '--no-progress', '--no-balance', '--d4', '--out', out)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['balance'] is False and cfg['d4'] is True and cfg['rotate'] == 10   # the rest of the layout's settings stay


def test_predict_and_serve_whole_images(chest_run, tmp_path):
    "pcam_predict and pcam_serve on a one-channel run: radiographs of any size resized as in training; a colour image refused."
    from pcam_nb.predict import pcam_predict, Predictor, predict_patches
    from conftest import serving
    import io, httpx
    imgs = tmp_path/'new'
    write(imgs, ['a.jpeg', 'b.jpeg'], size=50); write(imgs, ['c.png'], size=64)
    before = tree_digest(imgs)
    r = run_command(pcam_predict, chest_run, imgs, '--out', tmp_path/'p.csv', '--device', 'cpu', '--no-progress')
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path/'p.csv')
    assert list(df.kind) == ['image'] * 3 and list(df.width) == [50, 50, 64] and df.prob.between(0, 1).all()
    assert df.heatmap.isna().all() and tree_digest(imgs) == before and not (tmp_path/'p_heatmaps').exists()
    pr = Predictor.from_run(chest_run, 'cpu')
    assert (pr.whole, pr.channels, pr.views) == (True, 1, False)
    ref = predict_patches(pr, sorted(imgs.iterdir()), tta=False)
    np.testing.assert_allclose(df.prob, ref.prob, atol=1e-5)
    write(imgs, ['colour.jpeg'], colour={'colour.jpeg'})
    r = run_command(pcam_predict, chest_run, imgs/'colour.jpeg', '--out', tmp_path/'q.csv', '--device', 'cpu', '--no-progress')
    assert_one_line_error(r, 'colour.jpeg: is a colour image')
    assert not (tmp_path/'q.csv').exists()
    with serving(chest_run, '--no-calibrate') as c:
        files = [('files', (f.name, f.read_bytes(), 'image/jpeg')) for f in sorted(imgs.glob('[ab].jpeg'))]
        res = c.post('/v1/predict', files=files).json()
        colour = c.post('/v1/predict', files=[('files', ('colour.jpeg', (imgs/'colour.jpeg').read_bytes(), 'image/jpeg'))])
        hm = c.post('/v1/heatmap', files={'file': ('a.jpeg', (imgs/'a.jpeg').read_bytes(), 'image/jpeg')})
        info, prom = c.get('/v1/model').json(), c.get('/metrics').text
    assert res['tta'] is False and [o['class'] for o in res['results']] == ['pneumonia' if p >= 0.5 else 'normal' for p in df.prob[:2]]
    np.testing.assert_allclose([o['p_pneumonia'] for o in res['results']], df.prob[:2], atol=1e-4)
    assert colour.status_code == 422 and 'is a colour image' in colour.json()['detail']
    assert hm.status_code == 422 and 'classifies whole images' in hm.json()['detail']
    assert (info['channels'], info['whole_images'], info['tta']) == (1, True, False)
    assert 'pcam_input_channel_mean_count{channel="grey"} 2.0' in prom


def test_real_sample():
    src = sample('chest-xray-sample')
    assert source_kind(src) == 'chest_xray'
    p = load_patches(src, 'valid', progress=False)
    assert p.x.shape[1:] == (224, 224, 1) and p.counts() == {'normal': 47, 'pneumonia': 78}
    assert chest_table(src).patient.isna().all()   # chest_N.jpeg names carry no patient
