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


def test_train_and_evaluate_on_the_layout(tmp_path):
    root, out = kermany(tmp_path/'k'), tmp_path/'run'
    r = run_command(pcam_train, '--data', root, '--arch', 'simple_cnn', '--size', '32', '--epochs', '1', '--bs', '8',
                    '--device', 'cpu', '--no-progress', '--out', out)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['data_kind'] == 'chest_xray' and cfg['channels'] == 1 and not cfg['d4'] and cfg['balance'] and cfg['rotate'] == 10
    r = run_command(pcam_evaluate, out, '--no-tta', '--n-boot', '50', '--no-plots', '--no-progress', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    rep = json.loads((out/'eval_test.json').read_text())
    assert rep['split'] == 'test' and rep['n'] == 9 and 0 <= rep['auc'] <= 1


def test_real_sample():
    src = sample('chest-xray-sample')
    assert source_kind(src) == 'chest_xray'
    p = load_patches(src, 'valid', progress=False)
    assert p.x.shape[1:] == (224, 224, 1) and p.counts() == {'normal': 47, 'pneumonia': 78}
    assert chest_table(src).patient.isna().all()   # chest_N.jpeg names carry no patient
