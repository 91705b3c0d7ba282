"""GPU check: the toolkit end to end on one CUDA GPU in at most 8 minutes, with one results folder to read afterwards.

    python benchmarks/gpu_check.py --data data/pcam-sample-h5        (or: make gpu-check DATA=data/pcam-sample-h5)
    python benchmarks/gpu_check.py --smoke                           (or: make gpu-check SMOKE=1; a CPU, under 2 minutes)

Steps, each one console script of pcam_nb run as a user would run it (a child process, so that a step that hangs
can be stopped and every step starts with an empty GPU):

1. `pcam_train --data DATA --arch vgg16_bn --epochs E`: the default recipe; E is the recipe's 30 epochs when they
   fit the time left for training, else fewer (planned from the train split's size, see `plan_epochs`).
2. `pcam_evaluate RUN --split valid` (bootstrap CIs, D4 TTA on by default, calibration), and the same on the test split when
   DATA has one.
3. `pcam_bench` on a synthetic split of 32,768 patches (generated once, reused): compute ceiling vs the fastai
   pipeline vs a per-item pipeline, one epoch, loading, D4-TTA time. Eager mode (`--bench-compile` compiles).

Everything goes into one folder (default results/gpu-check-<time>/): `summary.md` (hardware from the training run's
environment record, the command, the figures), `gpu_check.json` (the same, for programs), the run folder `train/`
(config, history, metrics, evaluation reports; the weights are ignored by git), `bench.json` and `bench.md`, and the
output of every step in `logs/`. A time budget (`--budget-s`, 480 s) is kept: the bench is shortened or skipped
when training took longer than planned, and the summary says so. Standard library only; pcam_nb does the work.

Without a CUDA GPU it refuses (exit 2) unless `--smoke`: tiny synthetic data, simple_cnn, 1 epoch, tiny bench, on
the CPU. A smoke run checks the mechanics; its summary says it is a CPU smoke run and holds no GPU figures.
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 480          # the whole check, wall time
MARGIN_S = 15           # left at the end for the summary and for estimates that were too low

# Planning estimates for one H100/H200-class GPU (not measurements: the summary reports what was measured).
# Training: the GPU-resident loader feeds vgg16_bn at about 10k img/s with augmentation; 8k leaves headroom.
TRAIN_RATE = 8000       # planned train img/s of vgg16_bn
TRAIN_START_S = 35      # process start, data to the GPU, model build, first-epoch autotuning
EPOCH_EXTRA_S = 1.0     # validation pass start, metrics, checkpoint per epoch
EVAL_S = dict(valid=40, test=60)  # pcam_evaluate (D4 TTA) with 1,000 bootstrap resamples, process start included
# pcam_bench plans: full (two architectures) and short (vgg16_bn alone, fewer steps); seconds with the data present.
BENCH = dict(full=dict(archs='vgg16_bn,resnet18', steps=100, warmup=20, per_item_steps=50, seconds=150),
             short=dict(archs='vgg16_bn', steps=50, warmup=10, per_item_steps=20, seconds=75))
BENCH_DATA = dict(n_train=32768, n_valid=8192, tta_n=8192, bs=256, gen_seconds=60)  # generation: once, then reused
MAX_EPOCHS = 30         # the default recipe

# --smoke: tiny everything on the CPU; the same steps and files.
SMOKE_DATA = dict(n_train=128, n_valid=64, n_test=0, size=64)  # no test split: one process less
SMOKE_TRAIN = ['--arch', 'simple_cnn', '--epochs', '1', '--bs', '64', '--device', 'cpu', '--limit', '256', '--valid-limit', '128']
SMOKE_EVAL = ['--n-boot', '50', '--bs', '64', '--device', 'cpu', '--limit', '128']  # the limits matter with --data
SMOKE_BENCH = ['--archs', 'simple_cnn', '--bs', '16', '--steps', '1', '--warmup', '1', '--per-item-steps', '1',
               '--workers', '1', '--n-train', '48', '--n-valid', '16', '--tta-n', '16', '--device', 'cpu']


class CheckError(Exception):
    "A problem the user can fix: reported in one line, exit 2."


def plan_epochs(n_train:int, n_valid:int, seconds:float, rate:float=TRAIN_RATE, max_epochs:int=MAX_EPOCHS) -> int:
    "Epochs of `n_train` patches (validated on `n_valid`) that fit in `seconds` at `rate` img/s: 1 to `max_epochs`."
    per_epoch = n_train / rate + n_valid / (4 * rate) + EPOCH_EXTRA_S
    return max(1, min(max_epochs, int((seconds - TRAIN_START_S) // per_epoch)))


def bench_plan(left:float, data_ready:bool) -> str | None:
    "'full', 'short' or None (skip): the largest bench plan that fits in `left` seconds."
    gen = 0 if data_ready else BENCH_DATA['gen_seconds']
    for name in ('full', 'short'):
        if BENCH[name]['seconds'] + gen <= left: return name
    return None


def split_sizes(data:Path) -> dict:
    "Patches per split of the PCam HDF5 folder `data` ({'train': n, 'valid': n[, 'test': n]}), read from the files."
    from pcam_nb.data import source_kind, available_splits, load_patches
    try:  # pcam_nb reports bad data as a ValueError (PCamError) whose message names the file, the fault and the remedy
        if source_kind(data) != 'hdf5' or not data.is_dir():
            raise CheckError(f"{data}: not a PCam HDF5 folder. The check times the HDF5 path: convert the data first "
                             f"(pcam_convert {data} data/my-data-h5) and pass that folder")
        splits = available_splits(data)
        if not {'train', 'valid'} <= set(splits):
            raise CheckError(f"{data}: holds the splits {splits}; training needs train and valid")
        return {s: len(load_patches(data, s, mode='memmap', progress=False)) for s in splits}
    except ValueError as e: raise CheckError(str(e)) from None


def command_path(name:str) -> str:
    "The console script `name` of the Python running this file (else the one on PATH)."
    p = Path(sys.executable).parent/name
    if p.exists(): return str(p)
    w = shutil.which(name)
    if w: return w
    raise CheckError(f"console script {name} not found beside {sys.executable} or on PATH: install pcam_nb in this Python")


class Check:
    "The state of one check: clock, budget, results folder, step records."
    def __init__(self, out:Path, budget:float, smoke:bool):
        self.t0, self.budget, self.out, self.smoke, self.steps, self.notes = time.monotonic(), budget, out, smoke, [], []
        (out/'logs').mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float: return time.monotonic() - self.t0
    def left(self) -> float: return self.budget - self.elapsed()

    def run(self, name:str, args:list, limit:float) -> dict:
        "Run console script `args[0]` with `args[1:]`, stopped after `limit` s; output in logs/<name>.log; the step's record."
        limit = max(1., min(limit, self.left() - 5))
        cmd = [command_path(args[0]), *map(str, args[1:])]
        shown = ' '.join([args[0], *map(str, args[1:])])
        print(f"[{self.elapsed():5.0f} s] {name}: {shown}  (limit {limit:.0f} s)", flush=True)
        log = self.out/'logs'/f'{name}.log'
        env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'MPLBACKEND': 'Agg'}
        t = time.monotonic()
        with open(log, 'w') as f:
            f.write(f"$ {shown}\n"); f.flush()
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                 start_new_session=True)  # its own process group: a stop ends its workers too
            try: rc, status = p.wait(timeout=limit), None
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL); p.wait(); rc, status = None, 'stopped at its time limit'
        secs = time.monotonic() - t
        status = status or ('done' if rc == 0 else f'failed (exit {rc})')
        tail = log.read_text(errors='replace').strip().splitlines()[-1:] if rc != 0 else []
        rec = dict(step=name, command=shown, status=status, seconds=round(secs, 1), limit_s=round(limit), log=f'logs/{name}.log',
                   last_line=tail[0] if tail else None)
        self.steps.append(rec)
        print(f"[{self.elapsed():5.0f} s] {name}: {status} in {secs:.1f} s" + (f": {rec['last_line']}" if tail else ''), flush=True)
        return rec

    def skip(self, name:str, why:str):
        self.steps.append(dict(step=name, command=None, status=f'skipped: {why}', seconds=0, limit_s=0, log=None, last_line=None))
        self.notes.append(f"{name} skipped: {why}.")
        print(f"[{self.elapsed():5.0f} s] {name}: skipped: {why}", flush=True)


def _read(p:Path):
    try: return json.loads(p.read_text())
    except (OSError, ValueError): return None


def train_figures(run:Path) -> dict:
    "Epochs, train img/s (median over the epochs after the first, which includes warm-up) and times from a run folder."
    import csv
    cfg, met = _read(run/'config.json') or {}, _read(run/'metrics.json') or {}
    try: rows = list(csv.DictReader(open(run/'history.csv')))
    except OSError: rows = []
    secs = [float(r['train_seconds']) for r in rows if r.get('train_seconds')]
    n = cfg.get('n_train')
    steady = secs[1:] or secs
    return dict(epochs_done=len(rows), epochs_planned=cfg.get('epochs'), n_train=n, n_valid=cfg.get('n_valid'),
                img_per_s=round(n / statistics.median(steady)) if n and steady else None,
                first_epoch_s=secs[0] if secs else None, best_epoch=met.get('best_epoch'), best_valid_auc=met.get('valid_auc'),
                seconds=met.get('seconds'), env={k: cfg.get(k) for k in ('device', 'device_name', 'torch', 'torchvision',
                'fastai', 'pcam_nb', 'python', 'git_commit', 'cpu_threads')} if cfg else None)


def eval_figures(rep:dict | None) -> dict | None:
    if not rep: return None
    cal = rep.get('calibration', {}).get('plain', {})
    return dict(n=rep['n'], auc=rep['auc'], auc_ci=rep['auc_ci'], tta_auc=rep.get('tta', {}).get('auc'),
                tta_auc_ci=rep.get('tta', {}).get('auc_ci'), accuracy=rep['accuracy'], ece=rep['ece'],
                ece_after_temperature=cal.get('ece_after'), temperature=cal.get('temperature'),
                tta_seconds_per_1000=rep.get('tta_seconds_per_1000'), selection_split=rep.get('selection_split'))


def _f(v, fmt='{:.4f}'): return '-' if v is None else fmt.format(v)


def summary_md(res:dict) -> str:
    "The summary.md of a check."
    tr, env, smoke = res['train'], (res['train'] or {}).get('env') or {}, res['smoke']
    gpu = str(env.get('device', '')).startswith('cuda')
    title = 'CPU smoke run' if smoke else (env.get('device_name') or 'no training record')
    out = [f"# pcam_nb GPU check: {title}", '']
    if smoke or not gpu:
        out += ["**CPU smoke run: tiny synthetic data, simple_cnn, 1 epoch, tiny bench. It checks that every step runs "
                "and writes its files; these are CPU figures of a toy model, not GPU figures.**", '']
    hw = (f"{env.get('device_name')} ({env.get('device')}), torch {env.get('torch')}, torchvision {env.get('torchvision')}, "
          f"fastai {env.get('fastai')}, pcam_nb {env.get('pcam_nb')}, Python {env.get('python')}, "
          f"{env.get('cpu_threads')} CPU threads, git {str(env.get('git_commit'))[:10]}") if env else 'unknown (no training record)'
    sizes = ', '.join(f"{n:,} {s}" for s, n in res['sizes'].items())
    out += [f"Hardware (from the training run's environment record, train/config.json): {hw}.", '',
            f"Command: `{res['command']}`", '',
            f"Data: `{res['data']}` ({sizes}{'' if 'test' in res['sizes'] else '; no test split'}). "
            f"Started {res['started']}; {res['wall_s']:.0f} s of a {res['budget_s']:.0f} s budget.", '']
    col = 'CPU smoke value' if smoke or not gpu else 'value'
    rows = []
    if tr:
        ep = f"{tr['epochs_done']} of {tr['epochs_planned']} planned"
        if not smoke and tr['epochs_planned'] and tr['epochs_planned'] < MAX_EPOCHS:
            ep += f" (the default recipe's {MAX_EPOCHS} did not fit the budget)"
        which = 'median epoch after the first' if (tr['epochs_done'] or 0) > 1 else 'one epoch, warm-up included'
        rows += [(f"train img/s ({res['arch']}, {which})", _f(tr['img_per_s'], '{:,}')),
                 ('epochs', ep), ('first epoch, s (warm-up included)', _f(tr['first_epoch_s'], '{:.1f}')),
                 ('training wall time, s', _f(tr['seconds'], '{:.1f}')),
                 ('best valid AUC during training (epoch)', f"{_f(tr['best_valid_auc'])} ({tr['best_epoch']})")]
    for split, ev in res['eval'].items():
        if not ev: continue
        ci, tci = ev['auc_ci'], ev['tta_auc_ci']
        rows += [(f"{split} AUC, 95% CI ({ev['n']:,} patches)", f"{ev['auc']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"),
                 (f"{split} AUC with D4 TTA, 95% CI", f"{_f(ev['tta_auc'])} [{_f(tci and tci[0])}, {_f(tci and tci[1])}]"),
                 (f"{split} accuracy", _f(ev['accuracy'])),
                 (f"{split} ECE (after temperature scaling fitted on valid)", f"{ev['ece']:.4f} ({_f(ev['ece_after_temperature'])})"),
                 (f"{split} D4-TTA inference, s per 1,000 patches", _f(ev['tta_seconds_per_1000'], '{:.3f}'))]
    out += ['## Training and evaluation', '', f"| measure | {col} |", '|---|---|'] + [f"| {a} | {b} |" for a, b in rows]
    if res['eval'].get('valid') and res['eval']['valid'].get('selection_split'):
        out += ['', 'The valid split also chose the best epoch, so its figures are slightly optimistic.']
    out += ['', '## Bench (pcam_bench)', '']
    b = res.get('bench')
    if b:
        s = b['settings']
        out += [f"Plan `{res['bench_plan']}`: batch {s['bs']}, {s['steps']} timed steps after {s['warmup']}, compile: "
                f"{s['compile']}, {s['precision']}; synthetic split of {s['n_train']:,} train / {s['n_valid']:,} valid patches; "
                f"per-item pipeline: {s['workers']} workers, {s['per_item_precision']}. Full report: bench.md.", '',
                f"| arch | ceiling img/s | pipeline img/s | per-item img/s | pipeline/ceiling | pipeline/per-item |",
                '|---|---|---|---|---|---|']
        out += [f"| {a} | {r['ceiling']:,.0f} | {r['pipeline']:,.0f} | {r['per_item']:,.0f} | {r['pipeline/ceiling']:.3f} | "
                f"{r['pipeline/per_item']:.2f} |" for a, r in b['archs'].items()]
        ep, ld, tt = b.get('epoch'), b['load'], b.get('tta')
        out += ['', '| measure | seconds |', '|---|---|']
        if ep: out += [f"| one epoch of {ep['n_train']:,} patches, {ep['arch']}, training (with validation) | "
                       f"{ep['train_seconds']:.2f} ({ep['seconds']:.2f}) |"]
        out += [f"| load the train split ({ld['n']:,} patches, {ld['MB']:,.0f} MB) to {b['env']['device']} | {ld['seconds']:.2f} |"]
        if tt: out += [f"| D4-TTA inference ({tt['views']} views) over {tt['n']:,} patches, {tt['arch']} | {tt['seconds']:.2f} |"]
    else:
        out += ['Not measured in this check (see the steps below).']
    out += ['', '## Steps and time budget', '', '| step | status | seconds | limit, s | log |', '|---|---|---|---|---|']
    out += [f"| {r['step']} | {r['status']} | {r['seconds']:.1f} | {r['limit_s'] or '-'} | {r['log'] or '-'} |" for r in res['steps']]
    if res['notes']: out += [''] + [f"- {n}" for n in res['notes']]
    out += ['', '## Files', '',
            '- `gpu_check.json`: this summary as data; `logs/`: the output of each step',
            f"- `train/`: the pcam_train run folder (config.json, history.csv, metrics.json; eval_<split>.json from pcam_evaluate)",
            '- `bench.json`, `bench.md`: pcam_bench results (when it ran)']
    return '\n'.join(out) + '\n'


def _write(p:Path, text:str):
    tmp = p.with_name(f'.{p.name}.tmp'); tmp.write_text(text); tmp.replace(p)


def cuda_name() -> str | None:
    import torch
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', help='PCam HDF5 folder (e.g. the real sample after pcam_convert)')
    ap.add_argument('--convert-from', help='when --data holds no HDF5 files yet: pcam_convert this source into it first')
    ap.add_argument('--out', help='results folder (default results/gpu-check-<time>); must be new or empty')
    ap.add_argument('--arch', default='vgg16_bn')
    ap.add_argument('--epochs', type=int, help=f'training epochs (default: planned to fit the budget, at most {MAX_EPOCHS})')
    ap.add_argument('--budget-s', type=float, default=BUDGET_S, help='wall-time budget of the whole check, seconds')
    ap.add_argument('--bench-data', help='folder for the bench\'s synthetic split (default: data/gpu-check-bench)')
    ap.add_argument('--bench-compile', action='store_true', help='torch.compile the models in the bench (slower to start)')
    ap.add_argument('--smoke', action='store_true', help='tiny data, simple_cnn, 1 epoch, on the CPU: checks the mechanics')
    a = ap.parse_args(argv)
    try: return check(a, argv if argv is not None else sys.argv[1:])
    except CheckError as e:
        print(f"gpu_check: {e}", file=sys.stderr); return 2


def check(a, argv) -> int:
    started = datetime.now()
    if not a.smoke:
        if not a.data: raise CheckError("--data DIR is required (a PCam HDF5 folder), or --smoke for a CPU run of the mechanics")
        name = cuda_name()
        if name is None:
            raise CheckError("no CUDA GPU found: this check measures GPU figures. Run it on a CUDA machine, "
                             "or add --smoke for a CPU run of the mechanics (not GPU figures)")
        print(f"gpu_check: {name}", flush=True)
    out = Path(a.out or ROOT/'results'/f"gpu-check{'-smoke' if a.smoke else ''}-{started:%Y%m%d-%H%M%S}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckError(f"{out}: exists and is not an empty folder; pick a new --out (a check never overwrites results)")
    data = Path(a.data) if a.data else None
    convert = bool(data and a.convert_from and not (data/'camelyonpatch_level_2_split_train_x.h5').exists())
    if convert and not Path(a.convert_from).exists():
        raise CheckError(f"{data} holds no PCam HDF5 files and {a.convert_from} (to convert them from) does not exist: "
                         "give --data a PCam HDF5 folder, or --convert-from the sample's folder")
    sizes = split_sizes(data) if data and not convert else None  # bad data: refused before anything is written
    budget = a.budget_s
    tmp = tempfile.TemporaryDirectory(prefix='gpu-check-') if a.smoke else None
    c = Check(out, budget, a.smoke)
    try:
        if data is None:  # --smoke without --data
            data = Path(tmp.name)/'data'
            r = c.run('synth', ['pcam_synth', '--dest', data, *[f"--{k.replace('_', '-')}={v}" for k, v in SMOKE_DATA.items()]], 120)
            if r['status'] != 'done': raise CheckError(f"pcam_synth failed: see {out/'logs'/'synth.log'}")
        elif convert:
            r = c.run('convert', ['pcam_convert', a.convert_from, data, '--no-progress'], c.left() / 3)
            if r['status'] != 'done': raise CheckError(f"pcam_convert {a.convert_from} {data} failed: see {out/'logs'/'convert.log'}")
        sizes = sizes or split_sizes(data)
        arch = 'simple_cnn' if a.smoke else a.arch
        bench_data = Path(tmp.name)/'bench' if a.smoke else Path(a.bench_data or ROOT/'data'/'gpu-check-bench')
        bench_ready = (bench_data/'camelyonpatch_level_2_split_train_x.h5').exists()
        eval_splits = ['valid'] + (['test'] if 'test' in sizes else [])

        # 1. train
        run = out/'train'
        if a.smoke: targs = SMOKE_TRAIN
        else:
            for_train = (c.left() - MARGIN_S - sum(EVAL_S[s] for s in eval_splits)
                         - BENCH['full']['seconds'] - (0 if bench_ready else BENCH_DATA['gen_seconds']))
            epochs = a.epochs or plan_epochs(sizes['train'], sizes['valid'], for_train)
            planned_s = TRAIN_START_S + epochs * (sizes['train'] / TRAIN_RATE + sizes['valid'] / (4 * TRAIN_RATE) + EPOCH_EXTRA_S)
            targs = ['--arch', arch, '--epochs', str(epochs)]
            c.notes.append(f"training planned: {epochs} epochs, about {planned_s:.0f} s at a planned {TRAIN_RATE:,} img/s "
                           f"({max(for_train, 0):.0f} s were free for it).")
        t_limit = c.left() - MARGIN_S - EVAL_S['valid'] if not a.smoke else c.left() - MARGIN_S
        tr = c.run('train', ['pcam_train', '--data', data, *targs, '--out', run, '--no-progress'], t_limit)
        if not a.smoke and tr['status'] == 'done' and tr['seconds'] > planned_s * 1.2:
            c.notes.append(f"training took {tr['seconds']:.0f} s, more than the {planned_s:.0f} s planned: later steps got less time.")

        # 2. evaluate
        ev = {}
        for s in eval_splits:
            if tr['status'] != 'done': c.skip(f'evaluate_{s}', 'training did not finish'); continue
            need = EVAL_S[s] if not a.smoke else 10
            if c.left() - MARGIN_S < need / 2: c.skip(f'evaluate_{s}', f'{c.left():.0f} s left of the budget'); continue
            r = c.run(f'evaluate_{s}', ['pcam_evaluate', run, '--split', s, '--no-plots', '--no-progress',
                                        *(SMOKE_EVAL if a.smoke else [])], max(need * 2, c.left() - MARGIN_S - BENCH['short']['seconds']))
            ev[s] = eval_figures(_read(run/f'eval_{s}.json')) if r['status'] == 'done' else None

        # 3. bench
        b, plan = None, None
        if a.smoke: plan, bargs = 'smoke', SMOKE_BENCH
        else:
            plan = bench_plan(c.left() - MARGIN_S, bench_ready)
            if plan is None: c.skip('bench', f"{c.left():.0f} s left of the budget, too few for pcam_bench")
            else:
                p = BENCH[plan]
                bargs = ['--archs', p['archs'], '--steps', p['steps'], '--warmup', p['warmup'], '--per-item-steps', p['per_item_steps'],
                         '--workers', min(8, os.cpu_count() or 1), '--bs', BENCH_DATA['bs'], '--n-train', BENCH_DATA['n_train'],
                         '--n-valid', BENCH_DATA['n_valid'], '--tta-n', BENCH_DATA['tta_n']] + ([] if a.bench_compile else ['--no-compile'])
                if plan == 'short': c.notes.append("bench shortened (vgg16_bn alone, fewer steps): too little time was left for the full plan.")
        if plan:
            r = c.run('bench', ['pcam_bench', '--json', out/'bench.json', '--data', bench_data, *bargs, '--no-progress'], c.left() - MARGIN_S)
            b = _read(out/'bench.json') if r['status'] == 'done' else None
    finally:
        if tmp: tmp.cleanup()

    cmd = 'python benchmarks/gpu_check.py ' + ' '.join(argv)
    shown = 'tiny synthetic set made by pcam_synth for this run (deleted after it)' if a.smoke and not a.data else str(data)
    res = dict(smoke=a.smoke, command=cmd.strip(), data=shown, sizes=sizes, arch=arch, started=f"{started:%Y-%m-%d %H:%M:%S}",
               budget_s=budget, wall_s=round(c.elapsed(), 1), train=train_figures(run) if (run/'config.json').exists() else None,
               eval=ev, bench_plan=plan, bench=b, steps=c.steps, notes=c.notes)
    _write(out/'gpu_check.json', json.dumps(res, indent=1, default=str))
    _write(out/'summary.md', summary_md(res))
    ok = all(r['status'] == 'done' for r in c.steps)
    print(f"gpu_check: {'all steps done' if ok else 'some steps did not finish (see the summary)'} in {c.elapsed():.0f} s: "
          f"{out/'summary.md'}", flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
