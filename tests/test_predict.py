"End-to-end tests of pcam_predict: patch rows, heatmap files, bad input, inputs left untouched."
import hashlib

import numpy as np, pandas as pd, pytest
from PIL import Image

from conftest import cli, assert_clean_error

COLS = ['file', 'kind', 'width', 'height', 'prob', 'prob_tta', 'max_prob', 'mean_prob', 'tissue_frac', 'heatmap']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A finished pcam_train run (baseline CNN, 1 epoch) on a small synthetic set, and some of its test patches."
    from pcam_nb.synth import make_synthetic
    from pcam_nb.train import pcam_run
    from pcam_nb.data import load_patches
    root = tmp_path_factory.mktemp('predict')
    data = make_synthetic(root/'synth', n_train=256, n_valid=64, n_test=16, seed=3, progress=False)
    pcam_run(data, 'simple_cnn', epochs=1, out=root/'run', bs=64, device='cpu', progress=False)
    return root/'run', load_patches(data, 'test', progress=False).x


@pytest.fixture
def images(run, tmp_path):
    "A folder with three 96x96 PNG patches and one 300 (wide) x 200 (high) image."
    _, x = run
    d = tmp_path/'in'; d.mkdir()
    for i in range(3): Image.fromarray(x[i]).save(d/f'patch{i}.png')
    big = np.concatenate([np.concatenate(list(x[r * 4:r * 4 + 4]), 1)[:, :300] for r in range(3)])[:200]
    big[:, 250:] = 240                                         # a strip of glass on the right
    Image.fromarray(big).save(d/'region.png')
    return d


def digest(d): return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


def test_predict_folder(run, images, tmp_path):
    run_dir, _ = run
    before = digest(images)
    out = tmp_path/'res'/'pred.csv'
    r = cli('pcam_predict', run_dir, images, '--out', out, '--device', 'cpu', '--bs', 16, '--no-progress')
    assert r.returncode == 0, r.stderr[-3000:]
    assert '3 patches, 1 heatmaps' in r.stdout
    df = pd.read_csv(out)
    assert list(df.columns) == COLS
    assert list(df.file.map(lambda f: f.split('/')[-1])) == ['patch0.png', 'patch1.png', 'patch2.png', 'region.png']
    assert list(df.kind) == ['patch'] * 3 + ['heatmap']
    p, h = df[df.kind == 'patch'], df[df.kind == 'heatmap'].iloc[0]
    assert p[['prob', 'prob_tta']].notna().all().all() and p.prob.between(0, 1).all() and p.prob_tta.between(0, 1).all()
    assert p[['max_prob', 'mean_prob', 'heatmap']].isna().all().all()
    assert (h.width, h.height) == (300, 200) and pd.isna(h.prob)
    m = np.load(h.heatmap)
    assert m.shape == (7, 10) and m.dtype == np.float32             # ceil(200/32) x ceil(300/32)
    assert np.isnan(m[:, 8:]).all() and (~np.isnan(m[:, :7])).mean() > 0.7   # the glass strip (x >= 250) is skipped
    from pcam_nb.predict import tissue_cells
    assert (np.isnan(m) == ~tissue_cells(np.asarray(Image.open(images/'region.png'))).numpy()).all()   # NaN = background
    assert h.max_prob == pytest.approx(np.nanmax(m), abs=1e-5) and h.mean_prob == pytest.approx(np.nanmean(m), abs=1e-5)
    assert h.tissue_frac == pytest.approx(np.mean(~np.isnan(m)), abs=1e-5)
    png = out.parent/'pred_heatmaps'/'region_heatmap.png'
    assert h.heatmap == str(png.with_suffix('.npy')) and Image.open(png).format == 'PNG'
    assert not [f for f in out.parent.rglob('.*tmp*')]             # atomic writes leave no temp files
    assert digest(images) == before                                 # inputs unchanged, nothing added to their folder

    # --no-tta, another stride, every cell, heatmaps elsewhere; single files as inputs
    out2 = tmp_path/'pred2.csv'
    r = cli('pcam_predict', run_dir, images/'region.png', images/'patch1.png', '--out', out2, '--no-tta', '--stride', 64,
            '--all-cells', '--heatmaps', tmp_path/'maps', '--device', 'cpu', '--no-progress')
    assert r.returncode == 0, r.stderr[-3000:]
    d2 = pd.read_csv(out2)
    assert list(d2.kind) == ['heatmap', 'patch'] and d2.prob_tta.isna().all()
    assert d2.prob[1] == pytest.approx(df.prob[1], abs=1e-5)        # the same patch, the same plain prediction
    m2 = np.load(tmp_path/'maps'/'region_heatmap.npy')
    assert m2.shape == (4, 5) and not np.isnan(m2).any() and d2.tissue_frac[0] == 1
    assert digest(images) == before


def test_bad_input(run, images, tmp_path, monkeypatch, capsys):
    "Bad input: exit 2, one line naming the file or value, no traceback, no CSV, inputs untouched."
    run_dir, _ = run
    out = tmp_path/'x.csv'
    (images/'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    Image.fromarray(np.full((80, 200, 3), 200, np.uint8)).save(tmp_path/'small.png')
    (tmp_path/'norun').mkdir()
    before = digest(images)
    go = lambda *a: cli('pcam_predict', *a, '--device', 'cpu', '--no-progress')
    for r, frags in [(go(run_dir, tmp_path/'missing.png', '--out', out), ['missing.png', 'no such file or folder']),
                     (go(run_dir, images, '--out', out), ['broken.png', 'unreadable image'])]:
        assert_clean_error(r, *frags)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # the rest in this process (starting the console script costs seconds): the same argument parsing and error path
    from pcam_nb.predict import pcam_predict
    def run_cli(*args):
        monkeypatch.setattr('sys.argv', ['pcam_predict', *map(str, args), '--device', 'cpu', '--no-progress'])
        with pytest.raises(SystemExit) as e: pcam_predict()
        err = capsys.readouterr().err
        return e.value.code, err
    cases = [
        ((run_dir, tmp_path/'small.png', '--out', out), ['small.png', '200x80 px is smaller than one 96x96 window']),
        ((tmp_path/'norun', images/'patch0.png', '--out', out), ['norun', 'config.json', 'not found']),
        ((run_dir, images/'patch0.png', '--out', out, '--stride', 0), ['stride 0', 'from 1 to 96']),
        ((run_dir, images/'patch0.png', '--out', out, '--stride', 128), ['stride 128']),
        ((run_dir, images/'patch0.png', '--out', images/'patch0.png'), ['patch0.png', 'is one of the inputs']),
        ((run_dir, images/'patch0.png'), ['--out']),
        ((run_dir, images/'patch0.png', '--out', out, '--tta', '--no-tta'), ['--tta and --no-tta']),
    ]
    for args, frags in cases:
        code, err = run_cli(*args)
        assert code == 2, (args, err)
        assert err.startswith('error: ') and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
        for f in frags: assert f in err, (f, err)
    assert not out.exists()
    assert digest(images) == before
