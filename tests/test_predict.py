"End-to-end tests of pcam_predict: patch rows, heatmap files, bad input, inputs left untouched, large images."
import hashlib, subprocess, sys, textwrap

import numpy as np, pandas as pd, pytest
from PIL import Image

from conftest import fork_cli, run_command, assert_one_line_error, ROOT
from pcam_nb.predict import pcam_predict, tissue_cells

COLS = ['file', 'kind', 'width', 'height', 'prob', 'prob_tta', 'max_prob', 'mean_prob', 'tissue_frac', 'heatmap']


@pytest.fixture
def run(tiny_run_copy):
    "conftest's small trained run (64 px patches) and some of its test patches."
    from pcam_nb.data import load_patches
    run_dir, data = tiny_run_copy
    return run_dir, load_patches(data, 'test', progress=False).x


@pytest.fixture
def images(run, tmp_path):
    "A folder with three 64x64 PNG patches (the run's patch size) and one 300 (wide) x 200 (high) image."
    _, x = run
    d = tmp_path/'in'; d.mkdir()
    for i in range(3): Image.fromarray(x[i]).save(d/f'patch{i}.png')
    big = np.concatenate([np.concatenate(list(x[r * 5:r * 5 + 5]), 1)[:, :300] for r in range(4)])[:200]
    big[:, 250:] = 240                                         # a strip of glass on the right
    Image.fromarray(big).save(d/'region.png')
    return d


def digest(d): return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


def test_predict_folder(run, images, tmp_path):
    run_dir, _ = run
    before = digest(images)
    out = tmp_path/'res'/'pred.csv'
    r = fork_cli('pcam_predict', run_dir, images, '--out', out, '--device', 'cpu', '--bs', 16, '--no-progress')
    assert r.returncode == 0, r.stderr[-3000:]
    assert '3 patches, 1 heatmaps' in r.stdout
    assert 'region.png: 300x200 px, 70 cells of 32 px' in r.stdout and 'windows/s (first batch): about' in r.stdout  # the plan
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
    assert (np.isnan(m) == ~tissue_cells(np.asarray(Image.open(images/'region.png'))).numpy()).all()   # NaN = background
    assert h.max_prob == pytest.approx(np.nanmax(m), abs=1e-5) and h.mean_prob == pytest.approx(np.nanmean(m), abs=1e-5)
    assert h.tissue_frac == pytest.approx(np.mean(~np.isnan(m)), abs=1e-5)
    png = out.parent/'pred_heatmaps'/'region_heatmap.png'
    assert h.heatmap == str(png.with_suffix('.npy')) and Image.open(png).format == 'PNG'
    assert not [f for f in out.parent.rglob('.*tmp*')]             # atomic writes leave no temp files
    assert digest(images) == before                                 # inputs unchanged, nothing added to their folder

    # --no-tta, another stride, every cell, heatmaps elsewhere; single files as inputs (in this process)
    out2 = tmp_path/'pred2.csv'
    r = run_command(pcam_predict, run_dir, images/'region.png', images/'patch1.png', '--out', out2, '--no-tta', '--stride', 64,
                    '--all-cells', '--heatmaps', tmp_path/'maps', '--device', 'cpu', '--no-progress')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'region.png: 300x200 px, 20 cells of 64 px, 20 with tissue; 1 view each' in r.stdout
    d2 = pd.read_csv(out2)
    assert list(d2.kind) == ['heatmap', 'patch'] and d2.prob_tta.isna().all()
    assert d2.prob[1] == pytest.approx(df.prob[1], abs=1e-5)        # the same patch, the same plain prediction
    m2 = np.load(tmp_path/'maps'/'region_heatmap.npy')
    assert m2.shape == (4, 5) and not np.isnan(m2).any() and d2.tissue_frac[0] == 1
    assert digest(images) == before


def test_large_image_memory_is_bounded():
    """An 8000 x 8000 image (192 MB) with D4 TTA and a trivial model: the heatmap needs less extra memory than 60% of the
    image (no padded or float copy of it; windows and TTA views in bounded batches), and the expected time is printed
    before the work. glibc's mmap threshold is fixed so that the resident size counts what is allocated, not what the
    allocator keeps back after a free."""
    code = textwrap.dedent('''
        import numpy as np, torch
        from pcam_nb.predict import Predictor, predict_heatmap
        def kb(key): return int(open('/proc/self/status').read().split(key + ':')[1].split()[0]) * 1024
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
        pr = Predictor(model, ([0.5] * 3, [0.25] * 3), ['normal', 'tumour'], 96, 'cpu')
        img = np.full((8000, 8000, 3), 240, np.uint8); img[:, :160] = (200, 80, 160)   # a strip of tissue, the rest glass
        predict_heatmap(pr, img[:400, :400], progress=False)            # warm up (allocator, kernels)
        open('/proc/self/clear_refs', 'w').write('5')                 # the peak starts again from here
        base = kb('VmRSS')
        hm = predict_heatmap(pr, img, bs=64, progress=False, verbose=True)
        print('EXTRA', kb('VmHWM') - base, img.nbytes, hm.shape, int((~np.isnan(hm)).sum()))
    ''')
    try: open('/proc/self/clear_refs', 'w').write('5')
    except OSError: pytest.skip('needs Linux /proc/self/clear_refs to measure peak memory')
    import os
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={**os.environ, 'MALLOC_MMAP_THRESHOLD_': '131072'})
    assert r.returncode == 0, r.stderr[-3000:]
    plan, res = r.stdout.strip().splitlines()[-2:]
    assert plan.startswith('image: 8000x8000 px, 62,500 cells of 32 px, 1,250 with tissue; 8 views each') and 'about' in plan, plan
    _, extra, nbytes, *_ = res.split(maxsplit=3)
    assert '(250, 250) 1250' in res, res
    assert int(extra) < 0.6 * int(nbytes), (int(extra) / 1e6, 'MB extra for a', int(nbytes) / 1e6, 'MB image')


def test_bad_input(run, images, tmp_path):
    "Bad input: exit 2, one line naming the file or value, no traceback, no CSV, inputs untouched (more in test_bad_inputs_predict)."
    run_dir, _ = run
    out = tmp_path/'x.csv'
    (images/'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    before = digest(images)
    go = lambda *a: run_command(pcam_predict, *a, '--device', 'cpu', '--no-progress')
    assert_one_line_error(go(run_dir, tmp_path/'missing.png', '--out', out), 'missing.png', 'no such file or folder')
    assert_one_line_error(go(run_dir, images, '--out', out), 'broken.png', 'unreadable image')
    assert not out.exists()
    assert digest(images) == before
