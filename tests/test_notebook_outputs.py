"""nbval: cells marked `#| check_output` must still print what their saved outputs show.

The marker is an nbdev directive, so the docs do not show it; the test runs nbval on a copy of the notebook (next to
it, so relative paths hold) with nbval's own markers put in: `# NBVAL_CHECK_OUTPUT` for the marked cells and
`# NBVAL_SKIP` for cells that `nbdev_test` skips too (`#| slow`, `#| gpu`, and `#| eval: false`). nbdev_clean strips
execution counts, which nbval reads as 'never run', so the copy gets them back. --nbval-lax compares only the marked
cells; the others just have to run.
"""
import json, re, subprocess, sys
import pytest
from conftest import ROOT, sample

MARK, SKIP = re.compile(r'^#\|\s*check_output\s*$', re.M), re.compile(r'^#\|\s*(slow|gpu|eval:\s*false)\s*$', re.M)


def _marked(path): return any(MARK.search(''.join(c['source'])) for c in json.loads(path.read_text())['cells'])


NOTEBOOKS = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb') if _marked(p))


def test_some_cells_are_checked():
    assert len(NOTEBOOKS) >= 2, NOTEBOOKS


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_saved_outputs_hold(name):
    nb = ROOT/'nbs'/name
    src = json.loads(nb.read_text())
    code = [c for c in src['cells'] if c['cell_type'] == 'code']
    marked = [c for c in code if MARK.search(''.join(c['source']))]
    assert marked and all(c['outputs'] for c in marked), f'{name}: a cell marked check_output has no saved output'
    if any('#| realdata' in ''.join(c['source']) for c in code): sample()
    for i, c in enumerate(code, 1):
        c['execution_count'] = i
        s = ''.join(c['source'])
        if MARK.search(s): c['source'] = '# NBVAL_CHECK_OUTPUT\n' + s
        elif SKIP.search(s): c['source'] = '# NBVAL_SKIP\n' + s
    copy = nb.with_name(f'.nbval_{name}')
    copy.write_text(json.dumps(src))
    try:
        r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--nbval-lax',
                            '--nbval-current-env', copy.name], capture_output=True, text=True, cwd=nb.parent, timeout=900)
    finally: copy.unlink(missing_ok=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
