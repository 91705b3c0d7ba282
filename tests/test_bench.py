"pcam_bench end to end on the CPU with tiny sizes (mechanics only: CPU figures are not GPU figures); bad input: test_bad_inputs_bench."
import json
from conftest import fork_cli


def test_bench_cli_smoke(tmp_path):
    out = tmp_path/'bench.json'
    r = fork_cli('pcam_bench', '--json', out, '--data', tmp_path/'data', '--archs', 'simple_cnn', '--bs', 16, '--steps', 2,
            '--warmup', 1, '--per-item-steps', 2, '--workers', 1, '--n-train', 64, '--n-valid', 16, '--tta-n', 16,
            '--device', 'cpu', '--no-progress', '--profile', tmp_path/'prof', timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    a = res['archs']['simple_cnn']
    for k in ('ceiling', 'ceiling_fused_adamw', 'pipeline', 'per_item'): assert a[k] > 0, k
    assert abs(a['pipeline/per_item'] - a['pipeline'] / a['per_item']) < 1e-9
    assert res['env']['device'] == 'cpu' and res['env']['torch'] and res['settings']['bs'] == 16
    assert res['load']['n'] == 64 and res['tta']['n'] == 16 and res['tta']['views'] == 8
    assert res['epoch']['n_train'] == 64 and res['epoch']['seconds'] >= res['epoch']['train_seconds'] > 0
    md = (tmp_path/'bench.md').read_text()
    assert 'CPU smoke run' in md and '| simple_cnn |' in md and 'D4-TTA' in md
    prof = json.loads((tmp_path/'prof'/'phases.json').read_text())                 # one whole epoch profiled
    assert prof['steps'] == 64 // 16 and res['profile']['phases']['backward']['host_ms'] > 0
    assert '## Where the time goes' in md and '| backward |' in md and (tmp_path/'prof'/'trace.json.gz').stat().st_size > 0
