"""End-to-end tests of the `pcam_download` command against a local HTTP server on 127.0.0.1.

The server (written here, independently of the notebook's) serves small gzipped HDF5 files in the official PCam
layout, supports `Range: bytes=N-`, and can misbehave: drop a transfer halfway, or ignore `Range`.
"""
import gzip, hashlib, http.server, re, shutil, socket, threading, time
from pathlib import Path

import h5py, numpy as np, pytest

from conftest import cli, assert_clean_error
from pcam_nb.core import PCamError
from pcam_nb.download import pcam_download

SPLITS = ('train', 'valid', 'test')
N = 6  # patches per split


def stem(split): return f'camelyonpatch_level_2_split_{split}'
def md5_of(path): return hashlib.md5(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- test data and server
@pytest.fixture(scope='module')
def files(tmp_path_factory):
    "Small official-layout files: {'root': folder served, 'arrays': {file name: array}, 'md5sums': MD5SUMS path}."
    root = tmp_path_factory.mktemp('served')
    rng, arrays = np.random.default_rng(1), {}
    for s in SPLITS:
        for key, a in (('x', rng.integers(0, 256, (N, 96, 96, 3), dtype=np.uint8)),
                       ('y', rng.integers(0, 2, (N, 1, 1, 1), dtype=np.uint8))):
            h5 = root/f'{stem(s)}_{key}.h5'
            with h5py.File(h5, 'w') as f: f[key] = a
            (root/(h5.name + '.gz')).write_bytes(gzip.compress(h5.read_bytes()))
            h5.unlink()
            arrays[h5.name] = a
        (root/f'{stem(s)}_meta.csv').write_text(',coord_y,coord_x,wsi\n' + ''.join(f'{i},{i*7},{i*11},slide_{s}\n' for i in range(N)))
    md5sums = root.parent/'MD5SUMS'
    md5sums.write_text(''.join(f'{md5_of(o)}  {o.name}\n' for o in sorted(root.iterdir())))
    return dict(root=root, arrays=arrays, md5sums=md5sums)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_GET(self):
        srv, rng = self.server, self.headers.get('Range')
        folder, _, name = self.path.split('?')[0].rpartition('/')
        srv.log.append((name, rng))
        f = srv.root/name
        if folder != '/records/2546921/files' or not f.is_file(): return self.send_error(404)
        data, start = f.read_bytes(), 0
        m = re.fullmatch(r'bytes=(\d+)-', rng or '')
        if m and not srv.ignore_range and int(m[1]) < len(data):
            start = int(m[1])
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        elif m and not srv.ignore_range:
            self.send_response(416); self.send_header('Content-Range', f'bytes */{len(data)}')
            self.send_header('Content-Length', '0'); self.end_headers(); return
        else: self.send_response(200)
        self.send_header('Content-Length', str(len(data) - start)); self.end_headers()
        body = data[start:]
        if name in srv.cut:  # send half, then drop the connection (once)
            srv.cut.discard(name)
            self.wfile.write(body[:len(body) // 2]); self.wfile.flush(); self.close_connection = True; return
        self.wfile.write(body)


@pytest.fixture(scope='module')
def _server(files):
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    srv.daemon_threads = True
    srv.root, srv.log, srv.cut, srv.ignore_range = files['root'], [], set(), False
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    yield srv
    srv.shutdown(); srv.server_close()


@pytest.fixture
def server(_server, files):
    "The running server, reset: serving `files`, empty log, well behaved."
    _server.root, _server.ignore_range = files['root'], False
    _server.log.clear(); _server.cut.clear()
    _server.url = f'http://127.0.0.1:{_server.server_port}/records/2546921/files'
    return _server


def closed_port():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
    return port


# ---------------------------------------------------------------- running the command
def run(*args, timeout=60):
    "Run the installed `pcam_download` console script; the result has `.seconds`."
    t = time.time()
    r = cli('pcam_download', *args, timeout=timeout)
    r.seconds = time.time() - t
    return r

def fetch(server, files, dest, *args):
    "Run pcam_download against the local server with the small files' checksums."
    return run('--dest', dest, '--base-url', server.url, '--md5', files['md5sums'], '--no-progress', *args)

def names(folder): return sorted(o.name for o in Path(folder).iterdir()) if Path(folder).exists() else []

def check_content(dest, files, splits=SPLITS):
    for s in splits:
        for key in 'xy':
            with h5py.File(Path(dest)/f'{stem(s)}_{key}.h5', 'r') as f:
                np.testing.assert_array_equal(f[key][:], files['arrays'][f'{stem(s)}_{key}.h5'])
        assert (Path(dest)/f'{stem(s)}_meta.csv').read_bytes() == (files['root']/f'{stem(s)}_meta.csv').read_bytes()


# ---------------------------------------------------------------- tests
def test_full_download_then_nothing_to_do(server, files, tmp_path):
    dest = tmp_path/'pcam'
    r = fetch(server, files, dest)
    assert r.returncode == 0, r.stderr
    assert names(dest) == sorted(f'{stem(s)}_{k}' for s in SPLITS for k in ('x.h5', 'y.h5', 'meta.csv'))  # no .gz/.part/temp
    check_content(dest, files)
    assert len(server.log) == 9 and all(rng is None for _, rng in server.log)
    for s in SPLITS: assert f'{s}: {N} patches' in r.stdout
    server.log.clear()
    r = fetch(server, files, dest)  # everything present and verified: no request at all
    assert r.returncode == 0, r.stderr
    assert server.log == []


def test_keep_gz(server, files, tmp_path):
    r = fetch(server, files, tmp_path, '--splits', 'valid', '--keep-gz', '--no-meta')
    assert r.returncode == 0, r.stderr
    gz = tmp_path/f'{stem("valid")}_x.h5.gz'
    assert md5_of(gz) == md5_of(files['root']/gz.name)
    assert names(tmp_path) == sorted(f'{stem("valid")}_{k}' for k in ('x.h5', 'x.h5.gz', 'y.h5', 'y.h5.gz'))


def test_resume_on_the_next_run(server, files, tmp_path):
    name = f'{stem("valid")}_x.h5.gz'
    size = (files['root']/name).stat().st_size
    server.cut.add(name)
    r = fetch(server, files, tmp_path, '--splits', 'valid', '--retries', '0')
    assert_clean_error(r, 'broke off', 'run again to resume')
    assert names(tmp_path) == [name + '.part']  # nothing under an official name
    assert (tmp_path/(name + '.part')).stat().st_size == size // 2
    server.log.clear()
    r = fetch(server, files, tmp_path, '--splits', 'valid')
    assert r.returncode == 0, r.stderr
    assert server.log[0] == (name, f'bytes={size // 2}-')  # only the missing half was asked for
    check_content(tmp_path, files, ['valid'])
    assert not list(tmp_path.glob('*.part'))


def test_resume_within_one_run(server, files, tmp_path):
    name = f'{stem("test")}_y.h5.gz'
    server.cut.add(name)
    r = fetch(server, files, tmp_path, '--splits', 'test')
    assert r.returncode == 0, r.stderr
    assert [rng for n, rng in server.log if n == name] == [None, f'bytes={(files["root"]/name).stat().st_size // 2}-']
    assert 'resuming' in r.stdout
    check_content(tmp_path, files, ['test'])


def test_server_ignoring_range_restarts_cleanly(server, files, tmp_path):
    name = f'{stem("valid")}_x.h5.gz'
    (tmp_path/(name + '.part')).write_bytes(b'stale bytes from some other file' * 100)
    server.ignore_range = True
    r = fetch(server, files, tmp_path, '--splits', 'valid')
    assert r.returncode == 0, r.stderr
    assert (name, 'bytes=3200-') in server.log
    check_content(tmp_path, files, ['valid'])


def test_checksum_mismatch(server, files, tmp_path):
    bad = tmp_path/'MD5SUMS'
    bad.write_text(files['md5sums'].read_text().replace(md5_of(files['root']/f'{stem("valid")}_y.h5.gz'), 'f' * 32))
    dest = tmp_path/'pcam'
    r = run('--dest', dest, '--base-url', server.url, '--md5', bad, '--splits', 'valid', '--no-progress')
    assert_clean_error(r, 'checksum mismatch', 'f' * 32, f'{stem("valid")}_y.h5.gz', 'deleted')
    assert not any(n.startswith(f'{stem("valid")}_y') for n in names(dest))  # no .part, no .gz, no .h5
    # the official checksums (the default) do not match the small files either
    with pytest.raises(PCamError, match='checksum mismatch.*d8c2d60d490dbd479f8199bdfa0cf6ec'):
        pcam_download(dest=tmp_path/'official', base_url=server.url, splits='test', progress=False)
    assert names(tmp_path/'official') == []


def test_no_half_written_h5(server, files, tmp_path):
    "A .gz that verifies but is truncated, or holds the wrong data, never produces an .h5 under the official name."
    root = tmp_path/'served'; shutil.copytree(files['root'], root)
    xgz = root/f'{stem("valid")}_x.h5.gz'
    xgz.write_bytes(xgz.read_bytes()[:-2000])  # cut short
    ygz = root/f'{stem("test")}_y.h5.gz'
    with h5py.File(tmp_path/'other.h5', 'w') as f: f['labels'] = np.zeros((N, 1, 1, 1), np.uint8)
    ygz.write_bytes(gzip.compress((tmp_path/'other.h5').read_bytes()))  # a valid HDF5 file, but not PCam's layout
    sums = tmp_path/'MD5SUMS'
    sums.write_text(''.join(f'{md5_of(o)}  {o.name}\n' for o in sorted(root.iterdir())))
    server.root = root
    dest = tmp_path/'pcam'
    r = run('--dest', dest, '--base-url', server.url, '--md5', sums, '--splits', 'valid', '--no-progress')
    assert_clean_error(r, 'not a complete gzip file', xgz.name)
    assert f'{stem("valid")}_x.h5' not in names(dest)
    assert not [n for n in names(dest) if n.startswith('.')]  # no temporary file left
    with pytest.raises(PCamError, match="decompresses to an invalid file.*no dataset 'y'"):
        pcam_download(dest=dest, base_url=server.url, md5=str(sums), splits='test', progress=False)
    assert f'{stem("test")}_x.h5' in names(dest) and f'{stem("test")}_y.h5' not in names(dest)
    assert not [n for n in names(dest) if n.startswith('.')]


def test_offline_fails_fast(tmp_path):
    port = closed_port()
    r = run('--dest', tmp_path, '--base-url', f'http://127.0.0.1:{port}/files', timeout=30)
    assert_clean_error(r)
    assert r.seconds < 10, f'took {r.seconds:.1f} s'
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1
    assert f'Cannot reach http://127.0.0.1:{port}/files/{stem("train")}_x.h5.gz' in err
    assert 'Connection refused' in err and 'https://zenodo.org/records/2546921' in err and '--base-url' in err
    assert str(tmp_path.resolve()) in err
    assert names(tmp_path) == []


def test_silent_server_times_out(tmp_path):
    mute = socket.socket(); mute.bind(('127.0.0.1', 0)); mute.listen(4)  # accepts connections, never answers
    try:
        r = run('--dest', tmp_path, '--base-url', f'http://127.0.0.1:{mute.getsockname()[1]}', '--timeout', '1', timeout=30)
    finally: mute.close()
    assert_clean_error(r, 'no answer within 1 s')
    assert r.seconds < 10, f'took {r.seconds:.1f} s'


def test_bad_inputs(server, files, tmp_path):
    r = fetch(server, files, tmp_path/'a', '--splits', 'train val')
    assert_clean_error(r, "Unknown split 'val'")
    assert r.returncode == 2 and not (tmp_path/'a').exists() and server.log == []  # nothing done before the check
    (tmp_path/'afile').write_text('')
    r = fetch(server, files, tmp_path/'afile'/'pcam')
    assert_clean_error(r, 'cannot write there', str(tmp_path/'afile'/'pcam'))
    with pytest.raises(PCamError, match='checksum file not found'):
        pcam_download(dest=tmp_path/'b', base_url=server.url, md5=str(tmp_path/'nope.txt'), splits='valid', progress=False)
    with pytest.raises(PCamError, match='HTTP 404'):
        pcam_download(dest=tmp_path/'c', base_url=server.url + '/wrong', splits='valid', progress=False)
