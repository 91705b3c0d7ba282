"The DVC pipeline (dvc.yaml + params.yaml): `dvc repro` runs synth -> convert -> train -> evaluate end to end on tiny settings, and a changed training setting re-runs training, not the data stages."
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
import yaml
from conftest import ROOT, BIN

DVC = shutil.which('dvc', path=str(BIN)) or shutil.which('dvc')
pytestmark = pytest.mark.skipif(DVC is None, reason="DVC is not installed (pip install 'pcam_nb[pipeline]')")
TINY = dict(synth=dict(n_train=64, n_valid=32, n_test=32, size=64, seed=0), train=dict(epochs=1, bs=32, limit=64),
            evaluate=dict(n_boot=20))


def dvc(*args, cwd):
    env = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'PYTHONPATH': str(ROOT),
           'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1', 'DVC_NO_ANALYTICS': '1'}
    r = subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (args, r.stdout[-3000:], r.stderr[-3000:])
    return r.stdout


def test_repro_tiny(tmp_path):
    shutil.copy(ROOT/'dvc.yaml', tmp_path)
    params = yaml.safe_load((ROOT/'params.yaml').read_text())
    assert set(params) == {'synth', 'convert', 'train', 'evaluate'}, params
    for k, v in TINY.items(): params[k].update(v)
    (tmp_path/'params.yaml').write_text(yaml.safe_dump(params))
    dvc('init', '--no-scm', '-q', cwd=tmp_path)
    out = dvc('repro', cwd=tmp_path)
    for stage in ('synth', 'convert', 'train', 'evaluate'): assert f"Running stage '{stage}'" in out, out
    for f in ('camelyonpatch_level_2_split_train_x.h5', 'camelyonpatch_level_2_split_test_y.h5'):
        assert (tmp_path/'data'/'pipeline'/'pcam'/f).exists(), f
    m = json.loads((tmp_path/'runs'/'pipeline'/'metrics.json').read_text())
    assert m['epochs'] == 1 and 0 <= m['valid_auc'] <= 1, m
    e = json.loads((tmp_path/'runs'/'pipeline'/'eval_test.json').read_text())
    assert e['split'] == 'test' and e['n'] == 32 and 0 <= e['auc'] <= 1, e
    cfg = json.loads((tmp_path/'runs'/'pipeline'/'config.json').read_text())
    assert cfg['lr'] == params['train']['lr'] and cfg['limit'] == 64, cfg       # the settings came from params.yaml
    assert 'up to date' in dvc('status', cwd=tmp_path)
    params['train']['lr'] = 1e-3                                                  # a training setting changes ...
    (tmp_path/'params.yaml').write_text(yaml.safe_dump(params))
    st = dvc('status', cwd=tmp_path)                                              # ... training is stale,
    assert 'train:' in st and 'synth:' not in st and 'convert:' not in st, st    # the data stages are not
