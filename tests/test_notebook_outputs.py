"""nbval: cells marked `# NBVAL_CHECK_OUTPUT` in these notebooks must still print what their saved outputs show.

nbdev_clean strips execution counts, which nbval reads as 'never run', so the test runs nbval on a copy of the
notebook (next to it, so relative paths hold) with the counts restored. --nbval-lax compares only the marked cells;
the others just have to run.
"""
import json, subprocess, sys
import pytest
from conftest import ROOT, sample

NOTEBOOKS = ['01_data.ipynb', '03_synth.ipynb']


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_saved_outputs_hold(name):
    nb = ROOT/'nbs'/name
    if not nb.exists(): pytest.skip(f'{name} not present')
    src = json.loads(nb.read_text())
    code = [c for c in src['cells'] if c['cell_type'] == 'code']
    assert any('NBVAL_CHECK_OUTPUT' in ''.join(c['source']) for c in code), f'{name}: no cell marked NBVAL_CHECK_OUTPUT'
    if any('#| realdata' in ''.join(c['source']) for c in code): sample()
    for i, c in enumerate(code, 1): c['execution_count'] = i
    copy = nb.with_name(f'.nbval_{name}')
    copy.write_text(json.dumps(src))
    try:
        r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--nbval-lax',
                            '--nbval-current-env', copy.name], capture_output=True, text=True, cwd=nb.parent, timeout=900)
    finally: copy.unlink(missing_ok=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
