"End-to-end tests of the synthetic PCam generator's command-line tool (pcam_synth) on good and bad input."
import h5py, numpy as np, pandas as pd, pytest

from conftest import cli, run_command
from pcam_nb.synth import pcam_synth
from pcam_nb.data import read_pcam_h5, pcam_h5_paths, PCAM_CLASSES


def synth(dest, *args):
    "The console script (a new process)."
    return cli('pcam_synth', '--dest', dest, *args, timeout=120)

def synth_here(dest, *args):
    "The same command in this process (no new process to start)."
    return run_command(pcam_synth, '--dest', dest, '--no-progress', *args)


def test_pcam_synth_writes_official_layout(tmp_path):
    r = synth(tmp_path/'a', '--n-train', 300, '--n-valid', 140, '--n-test', 0, '--seed', 3)
    assert r.returncode == 0, r.stderr
    assert 'train: 300 patches' in r.stdout and 'valid: 140 patches' in r.stdout
    for split, n in (('train', 300), ('valid', 140)):
        xp, yp, mp = pcam_h5_paths(tmp_path/'a', split)
        with h5py.File(xp) as fx, h5py.File(yp) as fy:
            assert fx['x'].shape == (n, 96, 96, 3) and fx['x'].dtype == np.uint8
            assert fy['y'].shape == (n, 1, 1, 1) and set(np.unique(fy['y'][:])) == {0, 1}
            assert fx.attrs['seed'] == 3 and fx.attrs['split'] == split
        meta = pd.read_csv(mp)
        p = read_pcam_h5(tmp_path/'a', split)
        assert p.classes == PCAM_CLASSES and len(p) == n
        assert (meta.center_tumor_patch.values == p.y.astype(bool)).all()       # label = tumour in the centre
        assert (meta.tumor_patch | ~meta.center_tumor_patch).all()             # centre tumour implies tumour
        assert 0.3 < p.y.mean() < 0.7
        assert (meta.tumor_patch & ~meta.center_tumor_patch).sum() > 0         # hard negatives are there
    assert not pcam_h5_paths(tmp_path/'a', 'test')[0].exists()                 # --n-test 0: no test split
    assert not list((tmp_path/'a').glob('.*tmp*'))                             # no temp files left


def test_pcam_synth_is_deterministic(tmp_path):
    for d, go in (('a', synth), ('b', synth_here)):   # two processes, the same bytes
        r = go(tmp_path/d, '--n_train', 200, '--n_valid', 130, '--n_test', 130, '--seed', 7)   # underscores work too
        assert r.returncode == 0, r.stderr
    for split in ('train', 'valid', 'test'):
        (xa, ya, ma), (xb, yb, mb) = pcam_h5_paths(tmp_path/'a', split), pcam_h5_paths(tmp_path/'b', split)
        with h5py.File(xa) as fa, h5py.File(xb) as fb: assert fa['x'][:].tobytes() == fb['x'][:].tobytes(), split
        with h5py.File(ya) as fa, h5py.File(yb) as fb: assert (fa['y'][:] == fb['y'][:]).all(), split
        assert ma.read_bytes() == mb.read_bytes(), split
    with h5py.File(pcam_h5_paths(tmp_path/'a', 'train')[0]) as fa, h5py.File(pcam_h5_paths(tmp_path/'a', 'valid')[0]) as fv:
        assert (fa['x'][:130] != fv['x'][:]).mean() > 0.9                    # splits are different streams
    # a second run with the same parameters leaves the files alone; --force regenerates them
    xp = pcam_h5_paths(tmp_path/'a', 'train')[0]
    t = xp.stat().st_mtime_ns
    r = synth_here(tmp_path/'a', '--n-train', 200, '--n-valid', 130, '--n-test', 130, '--seed', 7)
    assert r.returncode == 0 and xp.stat().st_mtime_ns == t, r.stderr
    r = synth_here(tmp_path/'a', '--n-train', 200, '--n-valid', 130, '--n-test', 130, '--seed', 7, '--force')
    assert r.returncode == 0 and xp.stat().st_mtime_ns != t, r.stderr
