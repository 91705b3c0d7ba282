"Places365's official layout on a fabricated tree: the reader, a list naming a missing image, an unknown --classes name, and pcam_train on a category subset."
import json
from pathlib import Path
import numpy as np, pytest
from conftest import run_command, assert_one_line_error, tree_digest
from pcam_nb.places import write_places_like, read_places365, read_categories, places_table, LISTS, CATEGORIES
from pcam_nb.data import source_kind, available_splits, load_patches
from pcam_nb.train import pcam_train

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture
def tree(tmp_path):
    return write_places_like(tmp_path/'places', ('airfield', 'bedroom', 'coast', 'kitchen'), n_train=10, n_val=3, size=32)


def test_reader_on_the_official_layout(tree):
    assert (tree/CATEGORIES).read_text().splitlines()[0] == '/a/airfield 0'
    assert (tree/LISTS['train']).read_text().splitlines()[0] == '/a/airfield/00000001.jpg 0'
    assert (tree/LISTS['test']).read_text().splitlines()[0] == 'Places365_val_00000001.jpg 0'
    assert source_kind(tree) == 'places365' and available_splits(tree) == ['train', 'valid', 'test']
    assert read_categories(tree) == ['airfield', 'bedroom', 'coast', 'kitchen']
    trn = load_patches(tree, 'train', 32, progress=False, classes=['kitchen', 'bedroom'])
    val = load_patches(tree, 'valid', 32, progress=False, classes=['kitchen', 'bedroom'])
    tst = read_places365(tree, 'test', 32, progress=False)
    assert trn.classes == ['bedroom', 'kitchen'] and trn.counts() == {'bedroom': 8, 'kitchen': 8} and len(val) == 4
    assert not set(trn.ids) & set(val.ids) and tst.counts() == {c: 3 for c in read_categories(tree)}
    assert trn.ids[0] == 'b/bedroom/00000001.jpg' and trn.x.shape[1:] == (32, 32, 3)
    # the large-image folders of the official release are found as well
    (tree/'val_256').rename(tree/'val_large')
    assert len(places_table(tree, 'test')[0]) == 12


def test_list_naming_a_missing_image(tree, tmp_path):
    (tree/'data_256'/'c'/'coast'/'00000004.jpg').unlink()
    before = tree_digest(tree)
    r = run_command(pcam_train, '--data', tree, '--classes', 'coast,kitchen', '--arch', 'simple_cnn', '--size', '32',
                    '--epochs', '1', '--device', 'cpu', '--no-progress', '--out', tmp_path/'run')
    assert_one_line_error(r, 'places365_train_standard.txt: line', 'names c/coast/00000004.jpg, which is not in')
    assert tree_digest(tree) == before and not (tmp_path/'run'/'config.json').exists()
    load_patches(tree, 'train', 32, progress=False, classes=['airfield', 'kitchen'])   # other categories still read


def test_unknown_class_name(tree, tmp_path):
    r = run_command(pcam_train, '--data', tree, '--classes', 'airfield,kitchn', '--arch', 'simple_cnn', '--size', '32',
                    '--epochs', '1', '--device', 'cpu', '--no-progress', '--out', tmp_path/'run')
    assert_one_line_error(r, '--classes kitchn: is not a Places365 category', 'Did you mean kitchen?')


def test_train_on_a_subset(tree, tmp_path):
    out = tmp_path/'run'
    r = run_command(pcam_train, '--data', tree, '--classes', 'coast,airfield,kitchen', '--arch', 'simple_cnn', '--size', '32',
                    '--epochs', '1', '--bs', '8', '--device', 'cpu', '--no-progress', '--out', out)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['classes'] == ['airfield', 'coast', 'kitchen'] and cfg['class_subset'] == ['coast', 'airfield', 'kitchen']
    assert cfg['data_kind'] == 'places365' and cfg['channels'] == 3 and not cfg['d4']
    assert cfg['whole_images']
    from pcam_nb.predict import pcam_predict
    from conftest import serving
    imgs = sorted((tree/'val_256').iterdir())[:4]   # 32 px images of the generated set: resized to the run's 32 px
    r = run_command(pcam_predict, out, *imgs, '--out', tmp_path/'p.csv', '--device', 'cpu', '--no-progress', '--no-tta')
    assert r.returncode == 0, r.stderr
    import pandas as pd
    df = pd.read_csv(tmp_path/'p.csv')
    assert list(df.kind) == ['image'] * 4 and set(df.pred) <= set(cfg['classes']) and df.prob.between(1 / 3, 1).all()
    with serving(out, '--no-calibrate') as c:
        res = c.post('/v1/predict', files=[('files', (f.name, f.read_bytes(), 'image/jpeg')) for f in imgs]).json()['results']
    assert [o['class'] for o in res] == list(df.pred) and all(len(o['top5']) == 3 and o['top5'][0][0] == o['class'] for o in res)
    np.testing.assert_allclose([o['p'] for o in res], df.prob, atol=1e-4)
