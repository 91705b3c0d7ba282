"README.md is generated from nbs/index.ipynb and must be current."
import subprocess, sys
from conftest import ROOT


def test_readme_is_current():
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_readme_has_the_two_commands():
    text = (ROOT/'README.md').read_text()
    assert 'make train' in text and 'make test' in text and 'nbs/images/pcam_sample.png' in text
    assert (ROOT/'nbs'/'images'/'pcam_sample.png').exists()
