"End-to-end tests of the data layer's command-line tools (pcam_convert, pcam_info) on good and bad input."
import json, os, shutil
from pathlib import Path

import h5py, numpy as np, pytest
from PIL import Image

from conftest import cli, sample, assert_clean_error, tree_digest, leftovers
from pcam_nb.core import PCamError
from pcam_nb.data import (read_pcam_h5, read_csv_folder, read_class_folders, read_image, pcam_h5_paths, load_patches,
                          convert, write_pcam_h5, Patches, PCAM_CLASSES)


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
    "Greyscale 300x300 chest X-rays with string labels load, resized, through the same entry point, as one channel (the chest X-ray layout)."
    p = load_patches(sample('chest-xray-sample'), 'train', size=64, progress=False)
    assert p.classes == ['normal', 'pneumonia'] and p.x.shape[1:] == (64, 64, 1) and len(p) == 624 - 125


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


# --- labels of any dtype ------------------------------------------------------------------------------------------------
Y = np.random.default_rng(0).permutation(np.r_[np.zeros(280), np.ones(232)]).astype(np.int64)   # a 280/232 split


def h5_split(root, x, y, split='train', **y_attrs):
    "Official file names holding `x` and `y` as given, the way other tools write them."
    root = Path(root); root.mkdir(parents=True, exist_ok=True)
    xp, yp, _ = pcam_h5_paths(root, split)
    with h5py.File(xp, 'w') as f: f['x'] = x
    with h5py.File(yp, 'w') as f:
        f['y'] = y
        for k, v in y_attrs.items(): f['y'].attrs[k] = v
    return root


@pytest.mark.parametrize('dtype', ['int64', 'int32', 'int8', 'uint16', 'float32', 'float64', '>i4', 'uint8'])
def test_labels_read_by_their_dtype(dtype, tmp_path):
    "Labels are read by the dataset's dtype (they were read byte by byte as uint8); conversion carries them over intact."
    src = h5_split(tmp_path/'src', np.zeros((512, 8, 8, 3), np.uint8), Y.astype(dtype).reshape(-1, 1, 1, 1))
    p = read_pcam_h5(src, 'train')
    assert p.counts() == {'normal': 280, 'tumour': 232} and (p.y == Y).all()
    convert(src, tmp_path/'out', progress=False)
    assert (read_pcam_h5(tmp_path/'out', 'train').y == Y).all()


def test_pcam_info_counts_int64_labels(tmp_path):
    src = h5_split(tmp_path, np.zeros((512, 8, 8, 3), np.uint8), Y.reshape(-1, 1, 1, 1))
    r = cli('pcam_info', src)
    assert r.returncode == 0 and "{'normal': 280, 'tumour': 232}" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize('y,attrs,msg', [
    (np.array([0, 0.5, 1]), {}, '1 labels are not whole numbers (row 1: 0.5)'),
    (np.array([0, np.nan, 1]), {}, '(row 1: nan)'),
    (np.array([True, False, True]), {}, 'labels have dtype bool'),
    (np.array([0, 3, 3], np.int64), {'classes': json.dumps(PCAM_CLASSES)}, "labels 3 are outside the 2 classes ['normal', 'tumour']"),
    (np.array([0, -1, 1], np.int32), {}, 'labels -1 are outside'),
], ids=['half', 'nan', 'bool', 'beyond_classes', 'negative'])
def test_labels_that_are_no_class_are_refused(y, attrs, msg, tmp_path):
    src = h5_split(tmp_path, np.zeros((3, 8, 8, 3), np.uint8), y, **attrs)
    with pytest.raises(PCamError, match='train_y.h5: ') as e: read_pcam_h5(src, 'train')
    assert msg in str(e.value)


# --- datasets replaced without asking -------------------------------------------------------------------------------------
def test_convert_refuses_to_replace_a_split(class_folders, tmp_path):
    convert(class_folders, tmp_path/'h5', size=32, progress=False)
    before = tree_digest(tmp_path/'h5')
    with pytest.raises(PCamError, match='already holds the train split .* Pass --overwrite'): convert(class_folders, tmp_path/'h5', progress=False)
    assert tree_digest(tmp_path/'h5') == before
    assert convert(class_folders, tmp_path/'h5', progress=False, overwrite=True) == {'train': 15, 'valid': 3}
    assert read_pcam_h5(tmp_path/'h5', 'train').size == 40


def test_convert_source_without_known_splits(csv_folder, tmp_path):
    "A split column naming none of train/valid/test: exit 2 saying what it holds (it exited 0 having written nothing)."
    csv = csv_folder/'train_labels.csv'
    csv.write_text('id,label,split\n' + ''.join(f'p{i:03d},{i % 2},{"fold1" if i < 6 else "fold2"}\n' for i in range(10)))
    r = cli('pcam_convert', csv_folder, tmp_path/'out')
    assert_clean_error(r, "its split column names none of train/valid/test: it holds 'fold1' (6), 'fold2' (4) in 10 rows", one_line=True)
    assert not (tmp_path/'out').exists()


@pytest.mark.parametrize('where,msg', [('inside', 'is inside the source folder'), ('same', 'is the source folder'),
                                       ('file', 'is a file, not a folder')])
def test_convert_destination_checks(where, msg, class_folders, tmp_path):
    dest = {'inside': class_folders/'h5', 'same': class_folders, 'file': tmp_path/'f'}[where]
    if where == 'file': dest.write_text('')
    before = tree_digest(class_folders)
    with pytest.raises(PCamError, match=msg): convert(class_folders, dest, progress=False)
    assert tree_digest(class_folders) == before


# --- silent wrong results -------------------------------------------------------------------------------------------------
def test_info_reports_incomplete_splits(tmp_path):
    rng = np.random.default_rng(0)
    p = Patches(rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), [0, 1, 0, 1], PCAM_CLASSES)
    for s in ('train', 'valid', 'test'): write_pcam_h5(p, tmp_path, s)
    pcam_h5_paths(tmp_path, 'test')[1].unlink()                         # x without y
    for f in pcam_h5_paths(tmp_path, 'train')[:2]: f.rename(f.with_name(f.name + '.gz'))   # not yet decompressed
    r = cli('pcam_info', tmp_path)
    assert r.returncode == 0 and 'valid:       4' in r.stdout, r.stdout + r.stderr
    assert 'test : incomplete: camelyonpatch_level_2_split_test_y.h5 is missing: fetch it with `pcam_download --splits test --dest' in r.stdout
    assert 'train: incomplete: camelyonpatch_level_2_split_train_x.h5 is only compressed: `gunzip -k' in r.stdout


def test_16bit_png_scaled_to_8bit(tmp_path):
    Image.fromarray(np.array([[0, 257, 32768, 65535]], np.uint16)).save(tmp_path/'a.png')
    assert read_image(tmp_path/'a.png')[0, :, 0].tolist() == [0, 1, 128, 255]   # was [0, 255, 255, 255]


def test_csv_repeated_ids(csv_folder, capsys):
    csv = csv_folder/'train_labels.csv'; text = csv.read_text()
    csv.write_text(text + 'p003,1\n')                                     # the same row again: counted once, with a note
    assert len(read_csv_folder(csv_folder, 'train', progress=False)) + len(read_csv_folder(csv_folder, 'valid', progress=False)) == 10
    assert "1 repeated rows (same id, label) counted once, e.g. id 'p003'" in capsys.readouterr().err
    csv.write_text(text + 'p003,0\n')                                     # two labels for one image
    with pytest.raises(PCamError, match=r"train_labels.csv: id 'p003' has 2 rows with different labels \['0', '1'\]"):
        read_csv_folder(csv_folder, 'train', progress=False)


def test_positive_class_is_named_not_sorted(tmp_path):
    "negative/metastasis: metastasis is index 1, the positive class (sorted order made it 'negative'); pcam_info says so."
    rng = np.random.default_rng(0)
    for c in ('negative', 'metastasis'):
        (tmp_path/'cf'/c).mkdir(parents=True)
        for i in range(5): Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path/'cf'/c/f'{i}.png')
    assert read_class_folders(tmp_path/'cf', progress=False).classes == ['negative', 'metastasis']
    (tmp_path/'csv'/'images').mkdir(parents=True)
    for c in ('negative', 'metastasis'):
        for i in range(5): shutil.copy(tmp_path/'cf'/c/f'{i}.png', tmp_path/'csv'/'images'/f'{c}{i}.png')
    (tmp_path/'csv'/'labels.csv').write_text('id,label\n' + ''.join(f'{c}{i},{c}\n' for c in ('negative', 'metastasis') for i in range(5)))
    assert read_csv_folder(tmp_path/'csv', progress=False).classes == ['negative', 'metastasis']
    r = cli('pcam_info', tmp_path/'csv')
    assert "positive class (index 1, P(positive) in metrics and predictions): 'metastasis', a known positive name" in r.stdout, r.stdout + r.stderr


# --- tracebacks instead of messages ---------------------------------------------------------------------------------------
def test_empty_splits(tmp_path, csv_folder):
    src = h5_split(tmp_path/'h5', np.zeros((0, 96, 96, 3), np.uint8), np.zeros((0, 1, 1, 1), np.uint8))
    with pytest.raises(PCamError, match=r'train_x.h5: holds no patches \(0 rows\)'): load_patches(src, progress=False)
    (csv_folder/'train_labels.csv').write_text('id,label\n')
    with pytest.raises(PCamError, match=r'train_labels.csv: has a header \(id, label\) but no rows'): load_patches(csv_folder, progress=False)


def test_decompression_bomb(tmp_path):
    "Pillow's limit is named with the way to lift it for one run; Pillow's own setting is left as it is."
    from PIL import Image as PILImage
    import struct, zlib
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    (tmp_path/'bomb.png').write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 20000, 10000, 8, 0, 0, 0, 0)) + chunk(b'IEND', b''))
    limit = PILImage.MAX_IMAGE_PIXELS
    with pytest.raises(PCamError, match=r'bomb.png: 200,000,000 pixels, over the limit of 178,956,970 .* --max-pixels 200000000'):
        read_image(tmp_path/'bomb.png')
    with pytest.raises(PCamError, match='unreadable image'): read_image(tmp_path/'bomb.png', max_pixels=3 * 10**8)   # past the limit
    assert PILImage.MAX_IMAGE_PIXELS == limit


def test_non_utf8_file_names(class_folders):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(class_folders/'tumour'/os.fsdecode(b'\xff.png'))
    with pytest.raises(PCamError, match=r'tumour/\\xff.png: the name is not valid UTF-8'): read_class_folders(class_folders, progress=False)


def test_arguments_checked_before_reading(class_folders, tmp_path):
    (class_folders/'tumour'/'0.png').write_text('broken')                # reading would fail on this image first
    for kw, msg in ((dict(compression='zip'), "compression='zip'"), (dict(size=-1), 'size=-1'), (dict(max_pixels=0), 'max_pixels=0'),
                    (dict(splits='train tset'), "Unknown split 'tset'")):
        with pytest.raises(PCamError, match=msg): convert(class_folders, tmp_path/'out', progress=False, **kw)
    assert not (tmp_path/'out').exists()


def test_csv_that_is_not_a_csv(csv_folder):
    (csv_folder/'train_labels.csv').write_bytes(b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR')
    with pytest.raises(PCamError, match='train_labels.csv: is a binary file, not a CSV table'): load_patches(csv_folder, progress=False)


# --- the contiguous reader ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('direct', [True, False], ids=['O_DIRECT', 'buffered'])
def test_contiguous_reader(direct, tmp_path):
    "Both paths of the reader give h5py's array, any dtype, at an unaligned offset, over many blocks, in fresh writable memory."
    from pcam_nb.data import _read_contiguous
    rng = np.random.default_rng(0)
    for dtype, shape in ((np.uint8, (50, 16, 16, 3)), ('>i8', (5000,)), (np.float32, (300, 7))):
        a = (rng.integers(0, 200, shape) if np.dtype(dtype).kind in 'iu' else rng.random(shape)).astype(dtype)
        with h5py.File(tmp_path/'a.h5', 'w') as f: ds = f.create_dataset('a', data=a); off = ds.id.get_offset()
        assert off % 4096 != 0
        b = _read_contiguous(tmp_path/'a.h5', off, a.shape, a.dtype, block=8192, direct=direct)
        assert b.dtype == a.dtype and (b == a).all() and b.flags.writeable
