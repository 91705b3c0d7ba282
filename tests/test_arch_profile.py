"benchmarks/arch_profile.py on the CPU with tiny sizes (mechanics only: the figures are benchmarks/arch_profile.md's job)."
import importlib.util, json, os, subprocess, sys
import pytest
from conftest import ROOT

SCRIPT = ROOT/'benchmarks'/'arch_profile.py'


def _module():
    spec = importlib.util.spec_from_file_location('arch_profile', SCRIPT)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


def test_arch_profile_cpu_smoke(tmp_path):
    out = tmp_path/'ap'
    r = subprocess.run([sys.executable, str(SCRIPT), '--device', 'cpu', '--quick', '--archs', 'simple_cnn', '--sizes', '64',
                        '--bs', '2,4', '--out', str(out), '--data', str(tmp_path/'data')], capture_output=True, text=True,
                       timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.with_suffix('.json').read_text())
    runs = {(q['mode'], q['bs']): q for q in res['runs']}
    assert sorted(runs) == [('infer', 2), ('infer', 4), ('train', 2), ('train', 4)]
    for (mode, bs), q in runs.items():
        phases = ['data', 'forward', 'loss', 'backward', 'optimizer', 'callbacks'] if mode == 'train' else ['data', 'forward']
        assert list(q['ms_per_batch']) == phases and all(v >= 0 for v in q['ms_per_batch'].values()), q
        assert abs(q['img_s'] - bs * 1e3 / sum(q['ms_per_batch'].values())) < 1e-6 * q['img_s']   # img/s = the phases' sum
        assert q['ms_per_batch']['forward'] > 0 and q['base_mb'] > 0, q
        assert q['peak_mb'] >= q['base_mb'] - 8, q   # the kernel's RSS counters lag by a few pages per thread
    from pcam_nb.models import create_model, n_params
    m = res['models']['simple_cnn@64']
    assert m['params'] == n_params(create_model('simple_cnn', img_size=64))
    assert 2 < m['flops_train'] / m['flops_fwd'] <= 3, m          # backward: grads of inputs and weights, not the image's
    # the variants: one change each against the default (channels-last, float32 on the CPU), no compile with --quick
    assert [(v['variant'], v['mode'], v['channels_last'], v['bf16']) for v in res['variants']] == \
           [('NCHW', 'train', False, False), ('NCHW', 'infer', False, False), ('bf16', 'train', True, True), ('bf16', 'infer', True, True)]
    md = out.with_suffix('.md').read_text()
    assert md.splitlines()[2].split(':')[0].endswith(', torch ' + res['env']['torch'])   # hardware named once, at the top
    assert 'not measured yet: `make bench-arch DEVICE=cuda`' in md and '| simple_cnn | 64 | train |' in md
    for name in ('throughput', 'phases'):
        assert (tmp_path/f'ap_{name}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert _module().report_md(res) == md                          # the report is a function of the JSON alone


@pytest.mark.parametrize('args, frag', [(['--bs', '0'], '--bs'), (['--sizes', 'x'], '--sizes'),
                                        (['--device', 'tpu'], "'tpu'"), (['--steps', '0'], '--steps 0')])
def test_arch_profile_bad_args(args, frag, capsys):
    with pytest.raises(SystemExit) as e: _module().parse_args(['--device', 'cpu', *args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith('error: ') and frag in err, err
