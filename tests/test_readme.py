"README.md is what `nbdev_readme` makes of nbs/index.ipynb, and it works on GitHub."
import re, shutil, subprocess
from conftest import ROOT, BIN, quarto_env



def _inputs():
    "What nbdev_readme reads: settings.ini, index.ipynb and the site files beside it (config, filters, styles, images)."
    nbs = ROOT/'nbs'
    return [ROOT/'settings.ini', *(p for p in nbs.rglob('*') if p.is_file() and not p.name.startswith('.')
            and (p.suffix != '.ipynb' or p.name == 'index.ipynb') and p.name != 'sidebar.yml')]


def test_readme_is_current(tmp_path):
    "nbdev_readme, run on a copy of its inputs, writes the README.md that is checked in."
    env = quarto_env()
    for f in _inputs():
        (tmp_path/f.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, tmp_path/f.relative_to(ROOT))
    r = subprocess.run([str(BIN/'nbdev_readme')], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path/'README.md').read_text() == (ROOT/'README.md').read_text(), \
        'README.md is out of date: run `make readme` (nbdev_readme writes it from nbs/index.ipynb)'


def test_readme_has_the_two_commands_and_working_paths():
    text = (ROOT/'README.md').read_text()
    assert 'make train' in text and 'make test' in text
    assert text.startswith('# pcam_nb') and '\n> ' in text.split('## ')[0], 'title and summary first'
    targets = re.findall(r'\]\(([^)\s]+)\)', text) + re.findall(r'src="([^"]+)"', text)
    local = [t.split('#')[0] for t in targets if not re.match(r'[a-z]+:|#', t)]
    assert 'nbs/images/pcam_sample.png' in local
    assert [t for t in local if not (ROOT/t).exists()] == [], 'README links to files that are not in the repository'
