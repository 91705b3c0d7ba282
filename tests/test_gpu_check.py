"benchmarks/gpu_check.py: the --smoke run end to end on the CPU, its refusals, and the time-budget planning."
import contextlib, importlib.util, io, json, subprocess, sys
import pytest
from conftest import ROOT

SCRIPT = ROOT/'benchmarks'/'gpu_check.py'
spec = importlib.util.spec_from_file_location('gpu_check', SCRIPT)
gc = importlib.util.module_from_spec(spec); spec.loader.exec_module(gc)


def run(*args, timeout=400):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**__import__('os').environ, 'MPLBACKEND': 'Agg'})


def test_smoke_run_writes_one_results_folder(tmp_path):
    out = tmp_path/'res'
    r = run('--smoke', '--out', out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for f in ['summary.md', 'gpu_check.json', 'bench.json', 'bench.md', 'train/config.json', 'train/metrics.json',
              'train/history.csv', 'train/eval_valid.json'] + [f'logs/{s}.log' for s in ('synth', 'train', 'evaluate_valid', 'bench')]:
        assert (out/f).stat().st_size > 0, f
    md = (out/'summary.md').read_text()
    for s in ['# pcam_nb GPU check: CPU smoke run', '**CPU smoke run:', 'not GPU figures', "Hardware (from the training run's",
              'Command: `python benchmarks/gpu_check.py --smoke', '## Training and evaluation',
              '| measure | CPU smoke value |', '| epochs | 1 of 1 planned |', '| valid AUC, 95% CI (64 patches) |',
              '| valid AUC with D4 TTA, 95% CI |', '| valid ECE', '## Bench (pcam_bench)', '| simple_cnn |', 'D4-TTA inference (8 views)',
              '## Steps and time budget', '| train | done |', '| bench | done |', '## Files']:
        assert s in md, s
    assert 'cuda' not in md and 'no test split' in md
    res = json.loads((out/'gpu_check.json').read_text())
    env = res['train']['env']
    assert res['smoke'] and env['device'] == 'cpu' and res['bench']['env']['device'] == 'cpu'
    assert f"{env['device_name']} (cpu), torch {env['torch']}, " in md                        # the run's own record
    assert [s['status'] for s in res['steps']] == ['done'] * 4 and res['wall_s'] <= res['budget_s']
    assert 0 <= res['eval']['valid']['auc'] <= 1 and res['train']['img_per_s'] > 0
    assert not list(out.rglob('.*.tmp'))                                                  # written atomically
    # the same record with a test split, a shortened bench and a GPU environment renders those parts
    res['eval']['test'] = dict(res['eval']['valid'], n=32768, selection_split=False)
    res['sizes']['test'], res['notes'] = 32768, ['bench shortened (vgg16_bn alone, fewer steps): too little time was left.']
    res.update(smoke=False, command='python benchmarks/gpu_check.py --data data/pcam-h5', bench_plan='short')
    res['train']['env'] = dict(res['train']['env'], device='cuda:0', device_name='NVIDIA H100')
    md2 = gc.summary_md(res)
    assert '# pcam_nb GPU check: NVIDIA H100' in md2 and 'smoke' not in md2.split('## Steps')[0].lower()
    assert '| test AUC, 95% CI (32,768 patches) |' in md2 and '- bench shortened' in md2 and 'no test split' not in md2


def test_refusals(tmp_path):
    "One line, exit 2, nothing written: no CUDA (without --smoke), missing or wrong data, an existing results folder."
    import torch
    if not torch.cuda.is_available():
        r = run('--data', tmp_path, '--out', tmp_path/'o')
        assert r.returncode == 2 and 'no CUDA GPU found' in r.stderr and '--smoke' in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path/'o').exists()
    (tmp_path/'full').mkdir(); (tmp_path/'full'/'x').write_text('')
    for args, frag in [(['--data', tmp_path/'missing'], 'no such file or folder'),
                       (['--data', tmp_path/'full'], 'not a data source'),
                       (['--data', tmp_path/'missing', '--convert-from', tmp_path/'nosample'], 'does not exist'),
                       (['--out', tmp_path/'full'], 'not an empty folder')]:
        err = io.StringIO()   # the script's main in this process: the same parsing and refusals, no process to start
        with contextlib.redirect_stderr(err): code = gc.main(['--smoke', *map(str, args)])
        assert code == 2 and frag in err.getvalue() and 'Traceback' not in err.getvalue(), (args, err.getvalue())
        assert len(err.getvalue().strip().splitlines()) == 1
    assert not list(tmp_path.glob('**/logs'))


def test_time_budget_plans():
    assert gc.plan_epochs(20000, 3000, 270) == 30                 # the default recipe fits
    assert gc.plan_epochs(20000, 3000, 100) == 18                 # (100 - 35) s // 3.59 s per epoch
    assert gc.plan_epochs(20000, 3000, 10) == 1                   # never 0
    assert gc.plan_epochs(262144, 32768, 270) == 6                # full PCam: fewer epochs
    full, short, gen = gc.BENCH['full']['seconds'], gc.BENCH['short']['seconds'], gc.BENCH_DATA['gen_seconds']
    assert gc.bench_plan(full, True) == 'full' and gc.bench_plan(full - 1, True) == 'short'
    assert gc.bench_plan(full, False) == 'short' and gc.bench_plan(short - 1, True) is None
    assert gc.bench_plan(short + gen - 1, False) is None
