"End-to-end tests of the data layer's command-line tools (pcam_convert, pcam_info) on good and bad input."
import hashlib, shutil
from pathlib import Path

import h5py, numpy as np, pytest
from PIL import Image

from conftest import cli, sample, assert_clean_error
from pcam_nb.data import read_pcam_h5, read_csv_folder, pcam_h5_paths, load_patches


def tree_digest(folder):
    "Hash of every file's path and bytes under `folder`, to prove sources are left untouched."
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob('*')):
        if f.is_file(): h.update(str(f.relative_to(folder)).encode()); h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def class_folders(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path/'src'
    for c, n in (('lymph', 6), ('stroma', 6), ('tumour', 6)):
        (root/c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root/c/f'{i}.png')
    return root


@pytest.fixture
def csv_folder(tmp_path):
    "Kaggle-style: train/<id>.tif + train_labels.csv (id,label), greyscale and RGB mixed."
    rng = np.random.default_rng(1)
    root = tmp_path/'kaggle'; (root/'train').mkdir(parents=True)
    rows = []
    for i in range(10):
        a = rng.integers(0, 256, (96, 96) if i % 2 else (96, 96, 3), dtype=np.uint8)
        Image.fromarray(a).save(root/'train'/f'p{i:03d}.tif'); rows.append(f'p{i:03d},{i % 2}')
    (root/'train_labels.csv').write_text('id,label\n' + '\n'.join(rows) + '\n')
    return root


def test_convert_class_folders(class_folders, tmp_path):
    before = tree_digest(class_folders)
    r = cli('pcam_convert', class_folders, tmp_path/'h5', '--size', 32)
    assert r.returncode == 0, r.stderr
    assert 'train:' in r.stdout and 'valid:' in r.stdout
    tr, va = read_pcam_h5(tmp_path/'h5', 'train'), read_pcam_h5(tmp_path/'h5', 'valid')
    assert tr.classes == ['lymph', 'stroma', 'tumour'] and tr.x.shape[1:] == (32, 32, 3)
    assert len(tr) + len(va) == 18 and set(va.y.tolist()) == {0, 1, 2}
    assert tree_digest(class_folders) == before          # source untouched
    assert not list((tmp_path/'h5').glob('.*tmp*'))      # no temp files left
    r = cli('pcam_info', tmp_path/'h5')
    assert r.returncode == 0 and "'tumour': " in r.stdout, r.stderr


def test_convert_progress_bars_can_be_switched_off(tmp_path):
    "Scripts and logs convert without progress bars; by default a folder of >= 1,000 shows one."
    rng = np.random.default_rng(0)
    for i in range(1000):
        d = tmp_path/'src'/'train'/('ab'[i % 2]); d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d/f'{i}.png')
    bars = lambda r: '100.00% [' in r.stdout + r.stderr
    r = cli('pcam_convert', tmp_path/'src', tmp_path/'a')
    assert r.returncode == 0 and bars(r), r.stderr
    r = cli('pcam_convert', tmp_path/'src', tmp_path/'b', '--no-progress')
    assert r.returncode == 0 and not bars(r) and 'train: 1000 patches' in r.stdout, r.stdout + r.stderr


def test_convert_kaggle_csv(csv_folder, tmp_path):
    r = cli('pcam_convert', csv_folder, tmp_path/'h5')
    assert r.returncode == 0, r.stderr
    p = load_patches(tmp_path/'h5', 'train', progress=False) 
    q = read_csv_folder(csv_folder, 'train', progress=False)
    np.testing.assert_array_equal(p.x, q.x); assert list(p.ids) == list(q.ids) and p.classes == ['normal', 'tumour']


@pytest.mark.parametrize('case,fragments', [
    ('missing', ['no such file or folder']),
    ('no_labels', ['rows have no label']),
    ('missing_image', ['ids have no image']),
    ('unreadable', ['unreadable image']),
    ('empty_class', ['class folder has no images']),
    ('truncated_h5', ['truncated']),
    ('corrupt_h5', ['not a readable HDF5 file']),
    ('length_mismatch', ['has 4 labels but']),
    ('wrong_dtype', ['float32']),
])
def test_bad_input(case, fragments, tmp_path, csv_folder, class_folders):
    src = tmp_path/case
    if case == 'missing': src = tmp_path/'nowhere'
    elif case in ('no_labels', 'missing_image', 'unreadable'):
        shutil.copytree(csv_folder, src)
        csv = src/'train_labels.csv'
        if case == 'no_labels': csv.write_text(csv.read_text().replace('p003,1', 'p003,'))
        for i in range(1, 10):  # every image but the first, so both the train and the valid hold-out are hit
            f = src/'train'/f'p{i:03d}.tif'
            if case == 'missing_image': f.unlink()
            if case == 'unreadable': f.write_bytes(b'II*\x00garbage')
    elif case == 'empty_class':
        shutil.copytree(class_folders, src); (src/'empty').mkdir()
    else:
        x = np.zeros((5, 96, 96, 3), np.float32 if case == 'wrong_dtype' else np.uint8)
        src.mkdir(); xp, yp, _ = pcam_h5_paths(src, 'train')
        with h5py.File(xp, 'w') as f: f['x'] = x
        with h5py.File(yp, 'w') as f: f['y'] = np.zeros((4 if case == 'length_mismatch' else 5, 1, 1, 1), np.uint8)
        data = xp.read_bytes()
        if case == 'truncated_h5': xp.write_bytes(data[:len(data) - 4096])
        if case == 'corrupt_h5': xp.write_bytes(b'\x00' * 64 + data[64:])
    before = tree_digest(src) if src.exists() else None
    r = cli('pcam_convert', src, tmp_path/'out', '--splits', 'train')
    assert_clean_error(r, *fragments)
    assert not (tmp_path/'out').exists() or not list((tmp_path/'out').glob('camelyonpatch*'))  # nothing half-written
    if before: assert tree_digest(src) == before                                               # source untouched


def test_convert_real_sample(tmp_path):
    "The real PCam sample's valid split converts to HDF5 and reads back identically, fast paths included."
    src = sample()
    r = cli('pcam_convert', src, tmp_path/'h5', '--splits', 'valid')
    assert r.returncode == 0, r.stderr
    a = read_csv_folder(src, 'valid', progress=False)
    for mode in ('memory', 'memmap'):
        b = read_pcam_h5(tmp_path/'h5', 'valid', mode)
        np.testing.assert_array_equal(np.asarray(b.x), a.x)
        assert list(b.ids) == list(a.ids) and (b.y == a.y).all() and list(b.meta.pcam_index) == list(a.meta.pcam_index)


def test_chest_xray_sample():
    "Greyscale 300x300 chest X-rays with string labels load, resized, through the same entry point."
    p = load_patches(sample('chest-xray-sample'), 'train', size=64, progress=False)
    assert p.classes == ['normal', 'pneumonia'] and p.x.shape[1:] == (64, 64, 3) and len(p) == 624 - 125


def test_real_sample_every_source_into_dataloaders(tmp_path):
    "The same real patches as image folder + CSV, converted HDF5 and class folders give the same fastai DataLoaders data."
    import pandas as pd
    from pcam_nb.loaders import pcam_dls
    src = sample()
    df = pd.read_csv(src/'labels.csv')
    sub = pd.concat([df[df.split == 'train'].groupby('label').head(150), df[df.split == 'valid'].groupby('label').head(50)])
    csvdir = tmp_path/'csv'; (csvdir/'images').mkdir(parents=True)
    for i in sub.id: (csvdir/'images'/f'{i}.jpg').symlink_to(src/'images'/f'{i}.jpg')   # links, not copies
    sub.to_csv(csvdir/'labels.csv', index=False)
    cls = tmp_path/'classes'
    for r in sub.itertuples():
        d = cls/r.split/('tumour' if r.label else 'normal'); d.mkdir(parents=True, exist_ok=True)
        (d/f'{r.id}.jpg').symlink_to(src/'images'/f'{r.id}.jpg')
    assert cli('pcam_convert', csvdir, tmp_path/'h5').returncode == 0
    got = {}
    for kind, path in (('csv', csvdir), ('hdf5', tmp_path/'h5'), ('folders', cls)):
        dls = pcam_dls(path, bs=32, device='cpu', progress=False)
        assert dls.vocab == ['normal', 'tumour'] and len(dls.train_ds) == 300 and len(dls.valid_ds) == 100
        xb, yb = dls.one_batch()
        assert xb.shape == (32, 3, 96, 96)
        ids = [str(i).split('/')[-1].removesuffix('.jpg') for i in dls.valid_ds.ids]
        got[kind] = {i: (dls.valid_ds.x[k].sum().item(), int(dls.valid_ds.y[k])) for k, i in enumerate(ids)}
    assert got['csv'] == got['hdf5'] == got['folders']
