"""Bad input to the data layer: `pcam_info`, `pcam_convert` (as a user runs them) and `load_patches`.

Each case ends either in a one-line error naming the file or value (exit 2, no traceback) or in correct behaviour;
in every case the source tree is byte for byte unchanged and the destination holds no temporary file and no
official file that does not read back whole. The command-line cases run in parallel from one fixture (each builds
its input in its own folder); the signal cases kill a real conversion mid-write.
"""
import json, os, signal, struct, subprocess, time, zlib
from pathlib import Path

import h5py, numpy as np, pytest
from PIL import Image

from conftest import BIN, cli, cli_many, assert_clean_error, tree_digest, leftovers
from pcam_nb.data import PCAM_CLASSES, Patches, write_pcam_h5, read_pcam_h5, pcam_h5_paths, load_patches

RNG = np.random.default_rng(0)
CASES = {}  # name -> build(folder) -> dict(args=[...], src=..., dest=..., error=[fragments] | check=f(r, folder), stdout=[...])


def case(f):
    CASES[f.__name__] = f
    return f


# --- inputs -------------------------------------------------------------------------------------------------------------
def patches(n=6, size=16, y=None):
    return Patches(RNG.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 2 if y is None else y, PCAM_CLASSES)

def good_h5(root, split='train', n=6, **kw):
    write_pcam_h5(patches(n, **kw), root, split)
    return Path(root)

def raw_h5(root, split='train', x=None, y=None, y_attrs=None):
    "Official file names holding whatever `x` and `y` are given (as other tools might write them)."
    xp, yp, _ = pcam_h5_paths(root, split); Path(root).mkdir(parents=True, exist_ok=True)
    if x is not None:
        with h5py.File(xp, 'w') as f: f['x'] = x
    if y is not None:
        with h5py.File(yp, 'w') as f:
            f['y'] = y
            for k, v in (y_attrs or {}).items(): f['y'].attrs[k] = v
    return Path(root)

def img(path, size=16, mode='RGB'):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode).save(path)
    return Path(path)

def class_folders(root, classes=('normal', 'tumour'), n=4, name='{i}.png'):
    for c in classes:
        for i in range(n): img(Path(root)/c/name.format(i=i))
    return Path(root)

def csv_folder(root, text, n=6, raw=None):
    "images/p0.png ... and labels.csv with `text` (or the bytes `raw`)."
    for i in range(n): img(Path(root)/'images'/f'p{i}.png')
    (Path(root)/'labels.csv').write_bytes(raw if raw is not None else text.encode())
    return Path(root)

def rows(labels, splits=None):
    "CSV text id,label[,split] for images p0, p1, ..."
    head = 'id,label' + (',split' if splits else '')
    return head + '\n' + ''.join(f'p{i},{l}' + (f',{splits[i]}' if splits else '') + '\n' for i, l in enumerate(labels))

def png_header(w, h):
    "A PNG that declares w x h pixels and holds none: a decompression bomb as Pillow sees it when opening."
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)) + chunk(b'IEND', b'')

def mount_tmpfs(folder, opts):
    "Mount a small tmpfs at `folder` (needs root); False where that is not allowed."
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(['mount', '-t', 'tmpfs', '-o', opts, 'tmpfs', str(folder)], capture_output=True).returncode == 0

Y_512 = RNG.permutation(np.r_[np.zeros(280), np.ones(232)]).astype(np.int64)   # a 280/232 split


def counts_are(expected):
    return lambda r, d: expected in r.stdout


# --- files missing ------------------------------------------------------------------------------------------------------
@case
def info_no_source(d): return dict(args=['pcam_info', d/'nowhere'], error=['nowhere: no such file or folder'])

@case
def convert_no_source(d): return dict(args=['pcam_convert', d/'nowhere', d/'out'], dest=d/'out', error=['nowhere: no such file or folder'])

@case
def info_x_without_y(d):
    src = good_h5(d/'src'); pcam_h5_paths(src, 'train')[1].unlink()
    return dict(args=['pcam_info', src], src=src, error=['no split is complete'], stdout=['train_y.h5 is missing', 'pcam_download'])

@case
def info_only_gz(d):
    src = d/'src'; src.mkdir()
    for f in pcam_h5_paths(src, 'valid')[:2]: f.with_name(f.name + '.gz').write_bytes(b'\x1f\x8b')
    return dict(args=['pcam_info', src], src=src, error=['no split is complete'], stdout=['valid_x.h5 is only compressed', 'gunzip -k'])

@case
def convert_split_only_gz(d):
    src = good_h5(d/'src', 'valid')
    for f in pcam_h5_paths(src, 'train')[:2]: f.with_name(f.name + '.gz').write_bytes(b'\x1f\x8b')
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['the train split is incomplete', 'gunzip -k'])

@case
def csv_image_missing(d):
    src = csv_folder(d/'src', rows([0, 1, 0, 1, 0, 1, 1])); return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['ids have no image', 'p6'])

@case
def folder_of_nothing_known(d):
    src = d/'src'; src.mkdir(); (src/'README.txt').write_text('hello')
    return dict(args=['pcam_info', src], src=src, error=['not a data source pcam_nb knows'])


# --- truncated ----------------------------------------------------------------------------------------------------------
def cut(path, keep):
    data = Path(path).read_bytes(); Path(path).write_bytes(data[:keep(len(data))])

@case
def h5_x_cut_in_half(d):
    src = good_h5(d/'src'); cut(pcam_h5_paths(src, 'train')[0], lambda n: n // 2)
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['train_x.h5: not a readable HDF5 file'])

@case
def h5_x_last_page_missing(d):
    src = good_h5(d/'src', size=96); cut(pcam_h5_paths(src, 'train')[0], lambda n: n - 4096)
    return dict(args=['pcam_info', src], src=src, error=['train_x.h5: ', 'truncated'])

@case
def h5_y_cut_in_half(d):
    src = good_h5(d/'src'); cut(pcam_h5_paths(src, 'train')[1], lambda n: n // 2)
    return dict(args=['pcam_info', src], src=src, error=['train_y.h5: not a readable HDF5 file'])

@case
def png_cut_in_half(d):
    src = class_folders(d/'src'); cut(src/'tumour'/'2.png', lambda n: n // 2)
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['2.png: unreadable image'])


# --- wrong type ---------------------------------------------------------------------------------------------------------
@case
def png_named_h5(d):
    src = good_h5(d/'src'); img(d/'a.png'); pcam_h5_paths(src, 'train')[0].write_bytes((d/'a.png').read_bytes())
    return dict(args=['pcam_info', src], src=src, error=['train_x.h5: not a readable HDF5 file'])

@case
def folder_named_h5(d):
    src = good_h5(d/'src'); x = pcam_h5_paths(src, 'train')[0]; x.unlink(); x.mkdir()
    return dict(args=['pcam_info', src], src=src, error=['train_x.h5: is a folder, not an HDF5 file'])

@case
def binary_csv(d):
    src = csv_folder(d/'src', '', raw=png_header(4, 4) + bytes(64)); return dict(args=['pcam_info', src], src=src, error=['labels.csv: is a binary file'])

@case
def text_named_png(d):
    src = class_folders(d/'src'); (src/'normal'/'1.png').write_text('not an image')
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['1.png: unreadable image'])

@case
def gz_file_given(d):
    f = d/'camelyonpatch_level_2_split_train_x.h5.gz'; f.write_bytes(b'\x1f\x8b')
    return dict(args=['pcam_info', f], src=d, error=['is compressed', 'gunzip -k'])

@case
def h5_with_other_name(d):
    good_h5(d/'src'); f = d/'src'/'data.h5'; pcam_h5_paths(d/'src', 'train')[0].rename(f)
    return dict(args=['pcam_info', f], src=d/'src', error=['data.h5: is not an official PCam file name'])


# --- wrong dtype or shape -----------------------------------------------------------------------------------------------
@case
def x_float32(d):
    src = raw_h5(d/'src', x=np.zeros((6, 16, 16, 3), np.float32), y=np.zeros((6, 1, 1, 1), np.uint8))
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['train_x.h5: x is (6, 16, 16, 3) float32'])

@case
def x_without_channels(d):
    src = raw_h5(d/'src', x=np.zeros((6, 96, 96), np.uint8), y=np.zeros((6, 1, 1, 1), np.uint8))
    return dict(args=['pcam_info', src], src=src, error=['x is (6, 96, 96) uint8, expected N x H x W x 3'])

@case
def y_longer_than_x(d):
    src = raw_h5(d/'src', x=np.zeros((6, 16, 16, 3), np.uint8), y=np.zeros((7, 1, 1, 1), np.uint8))
    return dict(args=['pcam_info', src], src=src, error=['train_y.h5: has 7 labels but camelyonpatch_level_2_split_train_x.h5 has 6'])

@case
def y_two_columns(d):
    src = raw_h5(d/'src', x=np.zeros((6, 16, 16, 3), np.uint8), y=np.zeros((6, 2), np.uint8))
    return dict(args=['pcam_info', src], src=src, error=['y has shape (6, 2)'])

@case
def y_strings(d):
    src = raw_h5(d/'src', x=np.zeros((2, 16, 16, 3), np.uint8), y=np.array([b'normal', b'tumour']))
    return dict(args=['pcam_info', src], src=src, error=['labels have dtype |S6'])

@case
def y_half(d):
    src = raw_h5(d/'src', x=np.zeros((3, 16, 16, 3), np.uint8), y=np.array([0, 0.5, 1]))
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['train_y.h5: 1 labels are not whole numbers (row 1: 0.5)'])

@case
def y_nan(d):
    src = raw_h5(d/'src', x=np.zeros((3, 16, 16, 3), np.uint8), y=np.array([0, 1, np.nan], np.float32))
    return dict(args=['pcam_info', src], src=src, error=['(row 2: nan)'])

@case
def y_outside_classes(d):
    src = raw_h5(d/'src', x=np.zeros((3, 16, 16, 3), np.uint8), y=np.array([0, 7, 1], np.int64), y_attrs={'classes': json.dumps(PCAM_CLASSES)})
    return dict(args=['pcam_info', src], src=src, error=["train_y.h5: labels 7 are outside the 2 classes ['normal', 'tumour']"])

@case
def x_is_a_group(d):
    src = raw_h5(d/'src', y=np.zeros((1, 1, 1, 1), np.uint8))
    with h5py.File(pcam_h5_paths(src, 'train')[0], 'w') as f: f.create_group('x')
    return dict(args=['pcam_info', src], src=src, error=["train_x.h5: has no dataset 'x'"])

@case
def images_of_two_sizes(d):
    src = class_folders(d/'src'); img(src/'tumour'/'big.png', size=20)
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['big.png: is 20x20 but', '--size'])

@case
def y_int64_correct(d):   # read by its dtype, not byte by byte
    src = raw_h5(d/'src', x=np.zeros((512, 8, 8, 3), np.uint8), y=Y_512.reshape(-1, 1, 1, 1))
    return dict(args=['pcam_info', src], src=src, check=counts_are("{'normal': 280, 'tumour': 232}"))

@case
def y_float64_flat_correct(d):
    src = raw_h5(d/'src', x=np.zeros((512, 8, 8, 3), np.uint8), y=Y_512.astype(np.float64))
    return dict(args=['pcam_info', src], src=src, check=counts_are("{'normal': 280, 'tumour': 232}"))


# --- empty --------------------------------------------------------------------------------------------------------------
@case
def h5_zero_rows(d):
    src = raw_h5(d/'src', x=np.zeros((0, 96, 96, 3), np.uint8), y=np.zeros((0, 1, 1, 1), np.uint8))
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['train_x.h5: holds no patches (0 rows)'])

@case
def csv_header_only(d):
    src = csv_folder(d/'src', 'id,label\n'); return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['labels.csv: has a header (id, label) but no rows'])

@case
def csv_zero_bytes(d):
    src = csv_folder(d/'src', ''); return dict(args=['pcam_info', src], src=src, error=['labels.csv: is empty'])

@case
def class_folder_without_images(d):
    src = class_folders(d/'src'); (src/'stroma').mkdir()
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['stroma: class folder has no images'])

@case
def empty_folder(d):
    src = d/'src'; src.mkdir(); return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['not a data source'])

@case
def holdout_too_small(d):
    src = class_folders(d/'src', n=1)
    return dict(args=['pcam_info', src, '--splits', 'valid'], src=src, error=["the 'valid' part of a 20% hold-out of 2 patches is empty"])


# --- huge ---------------------------------------------------------------------------------------------------------------
@case
def decompression_bomb(d):
    src = class_folders(d/'src'); (src/'tumour'/'bomb.png').write_bytes(png_header(20000, 10000))
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out',
                error=['bomb.png: 200,000,000 pixels, over the limit of 178,956,970', '--max-pixels 200000000'])

@case
def decompression_bomb_limit_raised(d):   # past the limit, the image is decoded, and this one has no pixel data
    src = class_folders(d/'src'); (src/'tumour'/'bomb.png').write_bytes(png_header(20000, 10000))
    return dict(args=['pcam_convert', src, d/'out', '--max-pixels', 300_000_000], src=src, dest=d/'out', error=['bomb.png: unreadable image'])

@case
def png_16bit_correct(d):
    src = d/'src'
    for c in ('normal', 'tumour'):
        for i in range(4): (src/c).mkdir(parents=True, exist_ok=True); Image.fromarray(np.full((8, 8), 32768 + i, np.uint16)).save(src/c/f'{i}.png')
    def check(r, d):
        x = np.concatenate([read_pcam_h5(d/'out', s).x for s in ('train', 'valid')])
        return r.returncode == 0 and (x == 128).all()
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', check=check)


# --- odd names ----------------------------------------------------------------------------------------------------------
@case
def spaces_and_unicode_correct(d):
    src = class_folders(d/'sp ace é'/'src', classes=('normal', 'tumeur maligne é'), name='image {i} ü.png')
    def check(r, d):
        p = read_pcam_h5(d/'out put ü', 'train')
        return p.classes == ['normal', 'tumeur maligne é'] and any('image 0 ü.png' in i for i in p.ids)
    return dict(args=['pcam_convert', src, d/'out put ü'], src=src, dest=d/'out put ü', check=check)

@case
def non_utf8_image_name(d):
    src = class_folders(d/'src'); img(src/'tumour'/os.fsdecode(b'\xff\xfe.png'))
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=['tumour/\\xff\\xfe.png: the name is not valid UTF-8'])

@case
def non_utf8_class_folder(d):
    src = class_folders(d/'src', classes=('normal', os.fsdecode(b'tum\xe9ur')))
    return dict(args=['pcam_info', src], src=src, error=['tum\\xe9ur: the name is not valid UTF-8'])

@case
def non_utf8_folder_names_correct(d):   # the folders' names are not data: they only need printing
    src = class_folders(d/os.fsdecode(b'src\xff'))
    out = d/os.fsdecode(b'out\xff')
    return dict(args=['pcam_convert', src, out], src=src, dest=out,
                check=lambda r, d: 'out\\xff/camelyonpatch_level_2_split_train_x.h5' in r.stdout and len(read_pcam_h5(out, 'valid')) == 2)

@case
def csv_latin1(d):
    src = csv_folder(d/'src', '', raw=rows(['normal', 'tumeur'] * 3).replace('tumeur', 'tumeür').encode('latin1'))
    return dict(args=['pcam_info', src], src=src, error=['labels.csv: is not UTF-8 text (byte 0xfc'])

@case
def csv_cr_line_endings_correct(d):
    src = csv_folder(d/'src', rows([0, 1, 0, 1, 0, 1], ['train'] * 4 + ['valid'] * 2).replace('\n', '\r'))
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out',
                check=lambda r, d: 'train: 4 patches' in r.stdout and 'valid: 2 patches' in r.stdout)

@case
def csv_split_column_of_unknown_names(d):
    src = csv_folder(d/'src', rows([0, 1] * 3, ['holdout'] * 4 + ['dev'] * 2))
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out',
                error=["labels.csv: its split column names none of train/valid/test: it holds 'holdout' (4), 'dev' (2) in 6 rows"])

@case
def csv_id_with_two_labels(d):
    src = csv_folder(d/'src', rows([0, 1, 0, 1, 0, 1]) + 'p1,0\n')
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out', error=["labels.csv: id 'p1' has 2 rows with different labels ['0', '1']"])

@case
def csv_repeated_row_correct(d):
    src = csv_folder(d/'src', rows([0, 1, 0, 1, 0, 1]) + 'p1,1\n')
    return dict(args=['pcam_convert', src, d/'out'], src=src, dest=d/'out',
                check=lambda r, d: 'counted once' in r.stderr and len(read_pcam_h5(d/'out', 'train')) + len(read_pcam_h5(d/'out', 'valid')) == 6)

@case
def csv_label_missing(d):
    src = csv_folder(d/'src', rows([0, 1, '', 1, 0, 1])); return dict(args=['pcam_info', src], src=src, error=["1 rows have no label (e.g. 'p2')"])

@case
def csv_without_label_column(d):
    src = csv_folder(d/'src', rows([0, 1, 0, 1, 0, 1]).replace('id,label', 'id,class'))
    return dict(args=['pcam_info', src], src=src, error=["needs an id column (id/file) and a 'label' column, has ['id', 'class']"])

@case
def csv_label_not_whole(d):
    src = csv_folder(d/'src', rows([0, 1, 0.5, 1, 0, 1])); return dict(args=['pcam_info', src], src=src, error=["0.5 found (e.g. 'p2')"])

@case
def csv_negative_metastasis_correct(d):
    src = csv_folder(d/'src', rows(['negative', 'metastasis'] * 3))
    return dict(args=['pcam_info', src], src=src,
                check=lambda r, d: "{'negative': 2, 'metastasis': 2}" in r.stdout and "positive class" in r.stdout and "'metastasis', a known positive name" in r.stdout)


# --- destination folders ------------------------------------------------------------------------------------------------
@case
def dest_read_only(d):
    src, dest = good_h5(d/'src'), d/'ro'
    if os.geteuid() == 0:
        if not mount_tmpfs(dest, 'ro,size=64k'): return dict(skip='mounting a read-only tmpfs is not allowed here')
    else: dest.mkdir(); dest.chmod(0o555)
    return dict(args=['pcam_convert', src, dest/'out'], src=src, dest=dest, error=['cannot write to', 'read-only or no permission'], mount=dest)

@case
def dest_full(d):
    src, dest = good_h5(d/'src', n=40, size=96), d/'full'
    if not mount_tmpfs(dest, 'size=200k'): return dict(skip='mounting a tmpfs is not allowed here (needs root)')
    return dict(args=['pcam_convert', src, dest/'out'], src=src, dest=dest,
                error=['writing the train split failed (No space left on device); nothing was saved'], mount=dest)

@case
def dest_is_a_file(d):
    src = good_h5(d/'src'); (d/'out').write_text('a file')
    return dict(args=['pcam_convert', src, d/'out'], src=src, error=['out: is a file, not a folder'])

@case
def dest_inside_source(d):
    src = class_folders(d/'src'); return dict(args=['pcam_convert', src, src/'h5'], src=src, error=['h5: is inside the source folder'])

@case
def dest_is_source(d):
    src = good_h5(d/'src'); return dict(args=['pcam_convert', src/'..'/'src', src], src=src, error=['src: is the source folder'])

@case
def dest_holds_the_split(d):
    src, dest = good_h5(d/'src'), good_h5(d/'out')
    return dict(args=['pcam_convert', src, dest], src=src, dest=dest, keep=dest,
                error=['out: already holds the train split (camelyonpatch_level_2_split_train_x.h5, camelyonpatch_level_2_split_train_y.h5)', '--overwrite'])

@case
def dest_overwrite_correct(d):
    src, dest = good_h5(d/'src', n=8), good_h5(d/'out', n=3)
    return dict(args=['pcam_convert', src, dest, '--overwrite'], src=src, dest=dest,
                check=lambda r, d: (read_pcam_h5(d/'out', 'train').x == read_pcam_h5(d/'src', 'train').x).all())


# --- arguments ----------------------------------------------------------------------------------------------------------
@case
def size_zero(d): src = class_folders(d/'src'); return dict(args=['pcam_convert', src, d/'out', '--size', 0], src=src, dest=d/'out', error=['size=0: must be a whole number >= 1'])

@case
def size_negative(d): src = class_folders(d/'src'); return dict(args=['pcam_info', src, '--size', -3], src=src, error=['size=-3'])

@case
def size_not_a_number(d):   # argparse's own two-line usage error, exit 2
    src = class_folders(d/'src'); return dict(args=['pcam_info', src, '--size', 'abc'], src=src, error=["invalid int value: 'abc'"], one_line=False)

@case
def compression_unknown(d):   # refused before any image is read: the broken image is never reached
    src = class_folders(d/'src'); (src/'tumour'/'0.png').write_text('broken')
    return dict(args=['pcam_convert', src, d/'out', '--compression', 'zip'], src=src, dest=d/'out', error=["compression='zip'"])

@case
def compression_lzf_correct(d):
    src = good_h5(d/'src', n=300, size=8)
    def check(r, d):
        with h5py.File(pcam_h5_paths(d/'out', 'train')[0]) as f: lzf = f['x'].compression == 'lzf'
        return lzf and (read_pcam_h5(d/'out', 'train').x == read_pcam_h5(d/'src', 'train').x).all()
    return dict(args=['pcam_convert', src, d/'out', '--compression', 'lzf'], src=src, dest=d/'out', check=check)

@case
def split_unknown(d): src = good_h5(d/'src'); return dict(args=['pcam_convert', src, d/'out', '--splits', 'train tset'], src=src, dest=d/'out', error=["Unknown split 'tset'"])

@case
def max_pixels_zero(d): src = class_folders(d/'src'); return dict(args=['pcam_convert', src, d/'out', '--max-pixels', 0], src=src, dest=d/'out', error=['max_pixels=0'])

@case
def csv_without_splits_asked_test(d):
    src = csv_folder(d/'src', rows([0, 1] * 3)); return dict(args=['pcam_convert', src, d/'out', '--splits', 'test'], src=src, dest=d/'out', error=['no split column, so there is no test split'])

@case
def size_of_hdf5_contradicted(d):
    src = good_h5(d/'src', size=96); return dict(args=['pcam_convert', src, d/'out', '--size', 32], src=src, dest=d/'out', error=['patches are 96 px, size=32 asked'])

@case
def info_of_splits_not_there(d):
    src = good_h5(d/'src', 'valid'); return dict(args=['pcam_info', src, '--splits', 'test'], src=src, error=['holds none of the splits asked (test)', 'It holds: valid'])


# --- running the command-line cases -------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def results(tmp_path_factory):
    "Every case built in its own folder, its command run (in parallel), and the state of its source before and after."
    root = tmp_path_factory.mktemp('bad')
    built = {}
    for name, build in CASES.items():
        d = root/name; d.mkdir()
        built[name] = c = build(d); c['dir'] = d
        c['before'] = tree_digest(c['src']) if c.get('src') else None
        c['kept'] = tree_digest(c['keep']) if c.get('keep') else None
    todo = [n for n, c in built.items() if 'skip' not in c]
    for n, r in zip(todo, cli_many([built[n]['args'] for n in todo], timeout=120)): built[n]['r'] = r
    yield built
    for c in built.values():
        if c.get('mount'): subprocess.run(['umount', str(c['mount'])], capture_output=True)
        elif c['dir'].exists() and (c['dir']/'ro').exists(): (c['dir']/'ro').chmod(0o755)


@pytest.mark.parametrize('name', list(CASES))
def test_cli_case(name, results):
    c = results[name]
    if 'skip' in c: pytest.skip(c['skip'])
    r = c['r']
    if 'error' in c: assert_clean_error(r, *c['error'], one_line=c.get('one_line', True))
    else: assert r.returncode == 0 and c['check'](r, c['dir']), r.stdout + r.stderr
    for f in c.get('stdout', []): assert f in r.stdout, (f, r.stdout)
    if c.get('src'): assert tree_digest(c['src']) == c['before'], "the source changed"
    if c.get('keep'): assert tree_digest(c['keep']) == c['kept'], "a split that was not to be replaced changed"
    dest = c.get('dest')
    if dest:
        assert not leftovers(dest), leftovers(dest)
        for x in Path(dest).rglob('camelyonpatch_level_2_split_*_x.h5'):   # an official file is whole, or absent
            read_pcam_h5(x.parent, x.name.split('_')[4])


# --- load_patches from Python ----------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def h5dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('api'); good_h5(d, 'valid'); class_folders(d/'classes'); return d

API = {
    'file_of_another_split': (lambda d: load_patches(pcam_h5_paths(d, 'valid')[0], 'train'), "holds the 'valid' split, not 'train'"),
    'valid_pct_too_big': (lambda d: load_patches(d/'classes', valid_pct=1.5), 'valid_pct=1.5: must be a fraction between 0 and 1'),
    'valid_pct_zero': (lambda d: load_patches(d/'classes', valid_pct=0), 'valid_pct=0'),
    'mode_unknown': (lambda d: load_patches(d, 'valid', mode='fast'), "mode 'fast'"),
    'size_fractional': (lambda d: load_patches(d/'classes', size=2.5), 'size=2.5: must be a whole number'),
    'size_bool': (lambda d: load_patches(d/'classes', size=True), 'size=True'),
    'split_misspelt': (lambda d: load_patches(d, 'val'), "Unknown split 'val'"),
    'max_pixels_small': (lambda d: load_patches(d/'classes', max_pixels=10), '256 pixels, over the limit of 10'),
    'no_such_split': (lambda d: load_patches(d, 'test'), 'test_x.h5: file not found'),
}


@pytest.mark.parametrize('name', list(API))
def test_load_patches_case(name, h5dir):
    from pcam_nb.core import PCamError
    f, msg = API[name]
    before = tree_digest(h5dir)
    with pytest.raises(PCamError) as e: f(h5dir)
    assert msg in str(e.value) and '\n' not in str(e.value), str(e.value)
    assert tree_digest(h5dir) == before


def test_load_patches_int32_labels(tmp_path):
    "Correct behaviour from Python too: int32 labels of shape N x 1 read as the same classes."
    raw_h5(tmp_path, x=np.zeros((512, 8, 8, 3), np.uint8), y=Y_512.astype(np.int32).reshape(-1, 1))
    assert load_patches(tmp_path, progress=False).counts() == {'normal': 280, 'tumour': 232}


# --- signals: a conversion interrupted mid-write ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def big_source(tmp_path_factory):
    "1,024 random 96 x 96 patches (28 MB): gzip takes about a second to write them, a window to interrupt."
    return good_h5(tmp_path_factory.mktemp("sig")/"src", n=1024, size=96)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGKILL], ids=['SIGINT', 'SIGKILL'])
def test_interrupted_conversion(sig, big_source, tmp_path):
    dest = tmp_path/'out'
    before = tree_digest(big_source)
    args = [str(BIN/'pcam_convert'), str(big_source), str(dest), '--compression', 'gzip', '--no-progress']
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # as in a terminal, also under `nohup` or `&`
    def x_tmp():
        try: return [f for f in leftovers(dest) if '_x.h5' in f.name and f.stat().st_size > (1 << 20)]
        except FileNotFoundError: return []
    t = time.time()
    while not x_tmp() and p.poll() is None and time.time() - t < 60: time.sleep(0.005)   # until x is being written
    if p.poll() is not None: pytest.fail(f"the conversion ended (rc {p.returncode}) before it could be interrupted: {p.stderr.read()}")
    p.send_signal(sig); out, err = p.communicate(timeout=60)
    assert p.returncode != 0
    assert not list(dest.glob('camelyonpatch*')), list(dest.iterdir())   # nothing under an official name
    if sig == signal.SIGINT: assert not leftovers(dest), leftovers(dest)  # cleaned up on the way out
    r = cli('pcam_convert', big_source, dest, '--compression', 'gzip', '--no-progress')
    assert r.returncode == 0, r.stderr
    assert not leftovers(dest), leftovers(dest)         # a killed writer's temporary files are removed by the next
    np.testing.assert_array_equal(read_pcam_h5(dest, 'train').x, read_pcam_h5(big_source, 'train').x)
    assert tree_digest(big_source) == before
