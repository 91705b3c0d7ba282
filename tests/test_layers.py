"The package's layers: the notebook order is the import order, modules import only public names, each imports alone."
import ast, re, subprocess, sys
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parent.parent/'pcam_nb'


def layer_of(py: Path) -> int:
    "The number of the notebook a module is exported from (nbdev's header names it)."
    m = re.search(r'File to edit: \.\./nbs/(\d+)_\w+\.ipynb', py.read_text())
    assert m, f"{py.name}: no nbdev header naming its notebook"
    return int(m.group(1))


MODULES = {p.stem: p for p in sorted(PKG.glob('*.py')) if not p.name.startswith('_')}
LAYERS = {name: layer_of(p) for name, p in MODULES.items()}


def package_imports(py: Path):
    "(module, names, line) for every import of a pcam_nb module in `py`, at any depth (functions included)."
    for node in ast.walk(ast.parse(py.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level == 0 and not mod.startswith('pcam_nb'): continue
            mod = mod.removeprefix('pcam_nb').lstrip('.')
            if not mod:  # `from . import x` / `from pcam_nb import x`: the names are modules
                for a in node.names: yield a.name, [], node.lineno
            else: yield mod.split('.')[0], [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('pcam_nb.'): yield a.name.split('.')[1], [], node.lineno


def test_layers_are_known():
    assert LAYERS['core'] == 0 and len(set(LAYERS.values())) == len(LAYERS), LAYERS


@pytest.mark.parametrize('name', sorted(MODULES))
def test_imports_only_public_names_of_lower_layers(name):
    for mod, names, line in package_imports(MODULES[name]):
        if mod == '__version__' or mod == '__init__': continue
        assert mod in LAYERS, f"{name}.py:{line} imports unknown module {mod!r}"
        assert LAYERS[mod] < LAYERS[name], f"{name}.py:{line} imports {mod} (layer {LAYERS[mod]}), not below {name} (layer {LAYERS[name]})"
        private = [n for n in names if n.startswith('_')]
        assert not private, f"{name}.py:{line} imports private names {private} from {mod}"


def test_checker_catches_violations(tmp_path):
    "The checks above can fail: an upward import and a private name are both found."
    bad = tmp_path/'bad.py'
    bad.write_text("from .train import _finish\ndef f():\n    from pcam_nb.predict import Predictor\n")
    found = list(package_imports(bad))
    assert ('train', ['_finish'], 1) in found and ('predict', ['Predictor'], 3) in found


ALONE = r"""
import importlib, os, sys, traceback, warnings
import numpy, pandas, h5py, torch, torchvision, matplotlib, fastai.vision.all  # third-party, loaded once
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:  # a child with no pcam_nb module loaded imports just this one
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('error')
                importlib.import_module('pcam_nb.' + name)
            os._exit(0)
        except BaseException:
            traceback.print_exc(); os._exit(1)
    _, status = os.waitpid(pid, 0)
    print(name, os.waitstatus_to_exitcode(status), flush=True)
"""


def test_each_module_imports_alone():
    "In a fresh process per module (third-party libraries preloaded), each module imports by itself without warnings."
    r = subprocess.run([sys.executable, '-c', ALONE, *sorted(MODULES)], capture_output=True, text=True, timeout=600)
    codes = dict(l.split() for l in r.stdout.splitlines())
    assert codes == {n: '0' for n in MODULES}, f"{codes}\n{r.stderr[-3000:]}"


def test_core_names_are_defined_once():
    "No module defines its own copy of a core name (a second `PCamError` would escape `pcam_cli`'s handler)."
    core_all = set(__import__('pcam_nb.core', fromlist=['__all__']).__all__)
    for name, py in MODULES.items():
        if name == 'core': continue
        defined = {n.name for n in ast.parse(py.read_text()).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & core_all, f"{name}.py redefines core names {sorted(defined & core_all)}"
