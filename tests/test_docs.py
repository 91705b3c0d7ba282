"""The docs site as a reader gets it: `_docs/` built by `nbdev_docs`, served over HTTP on 127.0.0.1 and opened in
headless Chromium (Playwright driving the system's `chromium`; no browser download).

The site is rebuilt when `_docs/` is older than the notebooks or the site config (`make test` builds it just before,
with `make docs-test`). Screenshots of the index and two chapters are written to `_docs/screenshots/`.
"""
import functools, http.server, importlib, json, os, re, shutil, subprocess, sys, threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

from conftest import ROOT, BIN, quarto_env

DOCS, NBS = ROOT/'_docs', ROOT/'nbs'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
# Entries of the API reference a reader looks for first; found on whichever page documents them.
API = ['load_patches', 'pcam_dls', 'pcam_learner', 'evaluate_run', 'predict_heatmap']


def test_notebook_cells_fit_the_docs_build():
    "Title cells hold only title and summary; cells nbdev_docs runs (they import) hold only imports."
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'docs_cells.py'), '--check'], capture_output=True, text=True,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr


def _sources():
    return [p for p in [*NBS.rglob('*'), ROOT/'settings.ini'] if p.is_file() and not p.name.startswith('.')
            and p.name not in ('sidebar.yml', 'nbdev.yml')]


def _fresh():
    idx = DOCS/'index.html'
    return idx.exists() and idx.stat().st_mtime >= max(p.stat().st_mtime for p in _sources())


@pytest.fixture(scope='session')
def site():
    "The built site's folder: `_docs/` as it is when fresh, else rebuilt with `nbdev_docs`."
    if not CHROMIUM: pytest.skip('chromium not found on PATH (Debian: apt-get install chromium)')
    try: importlib.import_module('playwright.sync_api')
    except ImportError: pytest.skip('playwright not installed (pip install playwright; it drives the system chromium)')
    if not _fresh():
        r = subprocess.run([str(BIN/'nbdev_docs')], cwd=ROOT, env=quarto_env(), capture_output=True, text=True,
                           timeout=900, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return DOCS


@pytest.fixture(scope='session')
def server(site):
    "Base URL of `_docs/` served by http.server on 127.0.0.1 (a free port)."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown(); srv.server_close()


def _pages(site): return sorted(p.relative_to(site).as_posix() for p in site.glob('*.html'))


@pytest.fixture(scope='session')
def visited(server, site):
    "Every page opened in Chromium: {page: {'title', 'h1', 'summary', 'errors', 'broken_images', 'links', 'ids', 'text'}}."
    from playwright.sync_api import sync_playwright
    res, shots = {}, site/'screenshots'
    shots.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        errors, external = [], []
        page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
        page.on('pageerror', lambda e: errors.append(str(e)))
        def elsewhere(route):   # the site loads nothing from other hosts; such a request is recorded and refused
            external.append(route.request.url); route.abort()
        page.route(lambda url: not url.startswith(server), elsewhere)
        for name in _pages(site):
            errors.clear(); external.clear()
            resp = page.goto(server + name, wait_until='load')
            page.wait_for_load_state('networkidle')
            info = page.evaluate('''() => ({
                h1: document.querySelector('h1.title')?.innerText ?? null,
                summary: document.querySelector('.description')?.innerText ?? null,
                broken_images: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
                figures: [...document.querySelectorAll('.cell-output-display img')].map(i => [i.src, i.clientWidth, i.naturalWidth]),
                links: [...document.querySelectorAll('a[href]')].map(a => a.href),
                ids: [...document.querySelectorAll('[id]')].map(e => e.id),
                text: document.querySelector('main')?.innerText ?? document.body.innerText,
                code: [...document.querySelectorAll('main div.sourceCode pre')].map(e => e.innerText).join('\\n'),
                stderr: document.querySelectorAll('.cell-output-stderr').length,
            })''')
            res[name] = dict(info, status=resp.status, title=page.title(), errors=list(errors), external=list(external))
        page.goto(server + 'index.html', wait_until='networkidle')
        page.screenshot(path=str(shots/'index.png'), full_page=True)
        for name in ('loaders.html', 'evaluate.html'):   # chapters with figures: the first one in view
            if name not in res: continue
            page.goto(server + name, wait_until='networkidle')
            fig = page.locator('.cell-output-display img').first
            if fig.count(): fig.scroll_into_view_if_needed()
            page.screenshot(path=str(shots/name.replace('.html', '.png')))
        browser.close()
    return res


def test_every_page_loads_with_title_and_summary(visited):
    assert 'index.html' in visited and len(visited) >= 5, sorted(visited)
    for name, v in visited.items():
        assert v['status'] == 200, name
        assert v['h1'], f'{name}: no title'
        assert v['h1'] in v['title'], (name, v['title'], v['h1'])
        assert v['summary'], f'{name}: no one-line summary under the title'


def test_no_console_errors(visited):
    assert {n: v['errors'] for n, v in visited.items() if v['errors']} == {}


def test_nothing_loaded_from_other_hosts(visited):
    "Fonts, maths and scripts all come from the site itself (it works offline and tells no third party of a visit)."
    assert {n: v['external'] for n, v in visited.items() if v['external']} == {}


def test_every_image_loads(visited):
    assert {n: v['broken_images'] for n, v in visited.items() if v['broken_images']} == {}
    assert any(v['figures'] for v in visited.values()), 'no figures on any page'


def test_figures_fit_the_page(visited):
    "Figures are shown within the text column, not cropped or scrolled sideways."
    wide = {n: [f for f in v['figures'] if f[1] == 0 or f[1] > 1000] for n, v in visited.items()}
    assert {n: f for n, f in wide.items() if f} == {}


def _ids(site, page):
    return set(re.findall(r'\bid="([^"]+)"', (site/page).read_text()))


def test_internal_links_resolve(visited, server, site):
    """Every link to this site names a file the site has (the browser loaded each page above), and a link to
    `page#anchor` finds the anchor there."""
    links = {urldefrag(l) for v in visited.values() for l in v['links'] if l.startswith(server)}
    assert links, 'no internal links'
    bad, ids = [], {}
    for url, frag in sorted(links):
        page = unquote(urlparse(url).path).lstrip('/')
        f = site/page
        if not page or f.is_dir(): page, f = f'{page}index.html'.lstrip('/'), f/'index.html'
        if not f.is_file(): bad.append((url, 'missing')); continue
        if frag and page.endswith('.html'):
            if page not in ids: ids[page] = _ids(site, page)
            if frag not in ids[page]: bad.append((url, '#' + frag))
    assert bad == []


def _exported():
    "Exported functions and classes of every pcam_nb module (their __all__; constants have no API entry)."
    from pcam_nb._modidx import d
    names = {}
    for mod in d['syms']:
        m = importlib.import_module(mod)
        for n in getattr(m, '__all__', []):
            if callable(getattr(m, n)): names[n] = mod
    return names


def test_search_index_holds_the_exported_names(site):
    text = ' '.join(e['title'] + ' ' + e['section'] + ' ' + e['text'] for e in json.loads((site/'search.json').read_text()))
    words = set(re.findall(r'[A-Za-z_][A-Za-z0-9_]*', text))
    names = _exported()
    assert len(names) > 20, names
    assert sorted(n for n in names if n not in words) == []


def test_api_reference_entries(visited):
    "Each API entry is on some page: its heading anchor and its signature."
    for name in API:
        pages = [n for n, v in visited.items() if name.lower() in v['ids'] and re.search(rf'\b{name}\s*\(', v['text'])]
        assert pages, f'{name}: no page documents it'


def test_pages_show_no_build_traces(visited):
    "No traceback, warning output, test marker, nbdev directive or path of the machine that built the site."
    home = str(Path.home())
    machine = [str(ROOT.parent) + '/', home + '/'] if home not in ('/', '') else [str(ROOT.parent) + '/']
    for name, v in visited.items():
        t = v['text']
        assert v['stderr'] == 0, f'{name}: {v["stderr"]} stderr/warning outputs shown'
        for bad in ('Traceback (most recent call last)', 'NBVAL_', 'from nbdev.showdoc import', *machine):
            assert bad not in t, f'{name}: shows {bad!r}'
        directives = [l for l in v['code'].splitlines() if l.lstrip().startswith('#|')]
        assert directives == [], f'{name}: code shows nbdev directives'
        assert not re.search(r'(?<![\w.~])/(?:home|root|Users|work)/\w', t), \
            f'{name}: shows an absolute path: {re.search(r"/(?:home|root|Users|work)/[^ ]*", t).group()}'
