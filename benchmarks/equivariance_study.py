"""Equivariance study: steerable GCNNs (C4, C8, D4; escnn) against a plain CNN with and without D4 augmentation.

    python benchmarks/equivariance_study.py --data DATA [--trials 6] [--search-epochs 6] [--epochs 10] [--seeds 3]
    python benchmarks/equivariance_study.py --smoke          # the whole pipeline in minutes on a CPU (tiny everything)

1. Search: for every family, `--trials` configurations drawn (seeded, the same draws for every family) from the declared
   grid `GRID` (learning rate, weight decay, depth, width), each trained `--search-epochs` epochs on DATA's train split
   with pcam_nb.train.pcam_run; the configuration with the best valid ROC AUC wins.
2. Final: the winner of each family trained `--epochs` epochs with `--seeds` new seeds, each run evaluated on the valid
   split with pcam_nb.evaluate.evaluate_run (8 D4 views: AUC, accuracy and NLL of the plain prediction, rotation
   robustness = spread of P(tumour) across the 8 views).
3. Writes results/equivariance.{md,json,png} (or results/equivariance_smoke.* with --smoke), one small JSON record per
   finished run under results/equivariance_runs/ (search/<family>/<config>.json, final/<family>/seed<k>.json; with
   --smoke under the runs folder), and
   keeps the run folders (weights, curves) under runs/equivariance/, which git ignores.

Order: configuration-major in the search (every family's first configuration, then every family's second, ...) and
seed-major in the final runs, so that a study stopped early has compared the families on the same configurations.

Resumable: a run with a record is read back, not retrained (a run folder with metrics.json but no record is recorded
without retraining; an unfinished one is restarted). `--budget-min M` starts no new run once M minutes have passed;
`--deadline T` (Unix time) starts a run only when it is expected to end before T (expected: the longest recorded wall
time of the same family and phase, else of the same family's search runs scaled by epochs, else any run's x 1.5).
Run the command again to go on. The records are all it needs to go on, so to go on elsewhere (another machine, a
fresh checkout), copy results/equivariance* there first.
The valid split both selects the configuration and reports the final figures (there is no third split in the sample),
so the reported AUCs of the winners are optimistic by the selection; the final runs use fresh seeds.
"""
import argparse, itertools, json, os, random, shutil, sys, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore', message='.*torch.jit.script.*')
import numpy as np, pandas as pd, torch
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt

from pcam_nb.models import create_model, n_params
from pcam_nb.equivariant import arch_name, ensure_arch
from pcam_nb.core import environment, write_json, write_text, save_figure
from pcam_nb.train import pcam_run
from pcam_nb.evaluate import evaluate_run

ROOT = Path(__file__).resolve().parent.parent

# family -> (group or 'baseline', D4 augmentation of the train batches; the colour jitter is on for every family)
FAMILIES = {'gcnn_c4': ('c4', True), 'gcnn_c8': ('c8', True), 'gcnn_d4': ('d4', True),
            'baseline_aug': ('baseline', True), 'baseline_noaug': ('baseline', False)}
# The declared grid. Widths are per kind so that the three width steps give similar parameter counts across kinds
# (about 0.2M, 0.4M and 0.75M at depth 4): C4 has half the parameters of C8/D4 at equal fields.
GRID = dict(lr=[1e-3, 3e-3, 1e-2], wd=[0.01, 0.05, 0.1], depth=[3, 4], width_step=[0, 1, 2])
WIDTHS = {'c4': [8, 12, 16], 'c8': [6, 8, 11], 'd4': [6, 8, 11], 'baseline': [14, 18, 24]}
SMOKE_WIDTHS = {'c4': [2, 3, 4], 'c8': [2, 3, 4], 'd4': [2, 3, 4], 'baseline': [4, 6, 8]}


def draw_configs(n:int, seed:int=0, grid=GRID):
    "`n` distinct configurations of the grid, drawn without replacement (the same for every family)."
    allc = [dict(zip(grid, v)) for v in itertools.product(*grid.values())]
    return random.Random(seed).sample(allc, min(n, len(allc)))


def config_arch(family:str, cfg:dict, widths=WIDTHS) -> str:
    kind = FAMILIES[family][0]
    return arch_name(kind, widths[kind][cfg['width_step']], cfg['depth'])


def run_name(arch:str, cfg:dict) -> str:
    return f"{arch}_lr{cfg['lr']:g}_wd{cfg['wd']:g}"


def train_once(out:Path, rec:Path, family:str, arch:str, cfg:dict, a, seed:int, epochs:int, evaluate:bool=False) -> dict:
    "The record of one run: read from `rec` if it exists, else trained into `out` with pcam_run (and evaluated)."
    if rec.exists():
        r = json.loads(rec.read_text())
        if not evaluate or 'eval' in r: return r
    t0 = time.perf_counter()
    ensure_arch(arch)
    if not (out/'metrics.json').exists():
        if out.exists(): shutil.rmtree(out)  # an interrupted run: start it again
        print(f"training {out.relative_to(Path(a.runs))}: {arch}, lr {cfg['lr']:g}, wd {cfg['wd']:g}, {epochs} epochs", flush=True)
        pcam_run(a.data, arch, epochs=epochs, out=out, lr=cfg['lr'], wd=cfg['wd'], bs=a.bs, limit=a.limit,
                 valid_limit=a.valid_limit, seed=seed, device=a.device, d4=FAMILIES[family][1], compile=False,
                 progress=a.progress)
    m = json.loads((out/'metrics.json').read_text())
    c = json.loads((out/'config.json').read_text())
    h = pd.read_csv(out/'history.csv')
    r = dict(family=family, arch=arch, seed=seed, **{k: cfg[k] for k in ('lr', 'wd')}, metrics=m,
             params=n_params(create_model(arch, img_size=32)), n_train=c['n_train'], n_valid=c['n_valid'],
             img_per_s=c['n_train'] / float((h.train_seconds if 'train_seconds' in h else h.seconds).median()), s_to_best=float(h.seconds.iloc[:m['best_epoch'] + 1].sum()),
             device_name=c.get('device_name'), history=h.to_dict('records'))
    if evaluate:
        r['eval'] = evaluate_run(out, split='valid', tta=True, bs=a.bs, device=a.device, n_boot=200, calibrate=False,
                                 plots=False, progress=a.progress)
    r['wall_s'] = time.perf_counter() - t0  # build + train + evaluate, as the deadline planning needs
    rec.parent.mkdir(parents=True, exist_ok=True)
    write_json(rec, r, default=str)
    return r


def wall_seconds(r:dict) -> float:
    "Wall time of a recorded run (older records: their epoch times plus 10 s of set-up)."
    return float(r.get('wall_s') or sum(h['seconds'] for h in r['history']) + 10)


def expected_seconds(done:list, family:str, phase:str, epochs:int):
    "A run's expected wall time from the finished ones (`done`: (family, phase, epochs, record)); None if none is known."
    same = [wall_seconds(r) for f, p, e, r in done if f == family and p == phase]
    if same: return max(same)
    fam = [wall_seconds(r) * epochs / e for f, p, e, r in done if f == family]
    if fam: return max(fam)
    anyr = [wall_seconds(r) * epochs / e for f, p, e, r in done]
    return 1.5 * max(anyr) if anyr else None


def mean_std(xs):
    xs = np.asarray(xs, dtype=float)
    return float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0


def summarise(final:dict, best:dict) -> pd.DataFrame:
    rows = []
    for fam, runs in final.items():
        if not runs: continue
        r = dict(model=fam, arch=best[fam]['arch'], lr=best[fam]['lr'], wd=best[fam]['wd'], seeds=len(runs),
                 params=runs[0]['params'])
        for k, f in (('auc', lambda e: e['eval']['auc']), ('accuracy', lambda e: e['eval']['accuracy']),
                     ('nll', lambda e: e['eval']['nll']),
                     ('rot_spread_mean', lambda e: e['eval']['robustness']['mean_spread']),
                     ('rot_spread_max', lambda e: e['eval']['robustness']['max_spread']),
                     ('rot_flip_rate', lambda e: e['eval']['robustness']['class_flip_rate']),
                     ('img_per_s', lambda e: e['img_per_s']), ('s_to_best', lambda e: e['s_to_best']),
                     ('best_epoch', lambda e: e['metrics']['best_epoch'])):
            r[k], r[k + '_std'] = mean_std([f(e) for e in runs])
        rows.append(r)
    return pd.DataFrame(rows)


def md_summary(df:pd.DataFrame) -> str:
    pm = lambda m, s, d=4: f"{m:.{d}f} ± {s:.{d}f}"
    t = pd.DataFrame({'model': df.model, 'arch': df.arch, 'lr': df.lr, 'wd': df.wd, 'params': df.params.map('{:,}'.format),
                      'valid AUC': [pm(m, s) for m, s in zip(df.auc, df.auc_std)],
                      'accuracy': [pm(m, s) for m, s in zip(df.accuracy, df.accuracy_std)],
                      'NLL': [pm(m, s) for m, s in zip(df.nll, df.nll_std)],
                      'rotation spread (mean / max)': [f"{m:.4f} / {x:.4f}" for m, x in zip(df.rot_spread_mean, df.rot_spread_max)],
                      'class flips': [f"{v:.2%}" for v in df.rot_flip_rate],
                      'train img/s': df.img_per_s.map('{:,.0f}'.format),
                      's to best epoch': [f"{m:.0f} ± {s:.0f}" for m, s in zip(df.s_to_best, df.s_to_best_std)]})
    return t.to_markdown(index=False)


def plot(df:pd.DataFrame, search:pd.DataFrame, fname:Path):
    fig, axs = plt.subplots(1, 3, figsize=(15, 4))
    x = np.arange(len(df))
    axs[0].bar(x, df.auc, yerr=df.auc_std, capsize=4, color='tab:blue')
    axs[0].set_ylim(max(0, float((df.auc - 3 * df.auc_std).min()) - 0.02), min(1, float((df.auc + df.auc_std).max()) + 0.01))
    axs[0].set_title('valid ROC AUC (mean ± std over seeds)')
    axs[1].bar(x, df.rot_spread_mean, color='tab:orange', label='mean')
    axs[1].plot(x, df.rot_spread_max, 'kv', label='max')
    axs[1].set_yscale('symlog', linthresh=1e-4); axs[1].legend()
    axs[1].set_title('spread of P(tumour) over the 8 D4 views')
    for ax in axs[:2]: ax.set_xticks(x, df.model, rotation=20)
    for fam, g in search.groupby('family', sort=False):
        axs[2].plot(g.params, g.valid_auc, 'o', label=fam, alpha=.8)
    axs[2].set_xscale('log'); axs[2].set_xlabel('parameters'); axs[2].set_ylabel('valid AUC')
    axs[2].set_title('search: every configuration'); axs[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, fname)
    plt.close(fig)


def smoke_data() -> Path:
    from pcam_nb.synth import make_synthetic
    return make_synthetic(ROOT/'data'/'equivariance-smoke', n_train=192, n_valid=96, n_test=0, seed=11, size=64, progress=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default=None, help='PCam source (default: the real sample, $PCAM_SAMPLE); '
                    'convert it to HDF5 with pcam_convert first for speed')
    ap.add_argument('--families', default=','.join(FAMILIES), help='comma-separated subset of ' + ', '.join(FAMILIES))
    ap.add_argument('--trials', type=int, default=6, help='configurations per family in the search')
    ap.add_argument('--search-epochs', type=int, default=6)
    ap.add_argument('--epochs', type=int, default=10, help='epochs of the final runs')
    ap.add_argument('--seeds', type=int, default=3, help='seeds of the final runs')
    ap.add_argument('--bs', type=int, default=256)
    ap.add_argument('--limit', type=int, default=None)
    ap.add_argument('--valid-limit', type=int, default=None)
    ap.add_argument('--device', default=None)
    ap.add_argument('--runs', default=str(ROOT/'runs'/'equivariance'))
    ap.add_argument('--results', default=str(ROOT/'results'/'equivariance'), help='prefix of the .md/.json/.png outputs')
    ap.add_argument('--budget-min', type=float, default=None, help='start no new run after this many minutes')
    ap.add_argument('--deadline', type=float, default=None,
                    help='Unix time: start a run only when it is expected to end before then (see above)')
    ap.add_argument('--smoke', action='store_true', help='tiny data, widths and grid, 1 epoch: checks the pipeline on a CPU')
    ap.add_argument('--no-progress', dest='progress', action='store_false')
    a = ap.parse_args(argv)
    widths = WIDTHS
    if a.smoke:
        a.data = a.data or str(smoke_data())
        a.trials, a.search_epochs, a.epochs, a.seeds, a.bs = min(a.trials, 2), 1, 1, 2, 64
        a.runs = a.runs if a.runs != str(ROOT/'runs'/'equivariance') else str(ROOT/'runs'/'equivariance-smoke')
        a.results = a.results if a.results != str(ROOT/'results'/'equivariance') else str(ROOT/'results'/'equivariance_smoke')
        widths = SMOKE_WIDTHS
    a.data = a.data or os.environ.get('PCAM_SAMPLE')
    if not a.data: ap.error("no data: give --data (a PCam HDF5 folder, e.g. the sample converted by pcam_convert) or set PCAM_SAMPLE")
    fams = [f.strip() for f in a.families.split(',') if f.strip()]
    bad = [f for f in fams if f not in FAMILIES]
    if bad: ap.error(f"unknown families {bad}: choose from {', '.join(FAMILIES)}")
    grid = dict(GRID, depth=[2, 3]) if a.smoke else GRID
    configs = draw_configs(a.trials, 0, grid)
    runs, t0 = Path(a.runs), time.perf_counter()
    res = Path(a.results)
    recs = runs/'records' if a.smoke else res.with_name(res.name + '_runs')  # one JSON record per finished run
    done = []                                           # (family, phase, epochs, record) of every run seen
    def can_start(fam, phase, epochs):
        if a.budget_min is not None and time.perf_counter() - t0 > 60 * a.budget_min: return False
        if a.deadline is None: return True
        need = expected_seconds(done, fam, phase, epochs)
        return time.time() + (need or 0) < a.deadline
    search_rows, best, final, complete = [], {}, {f: [] for f in fams}, True
    for cfg in configs:                                 # 1. search, configuration-major
        for fam in fams:
            arch = config_arch(fam, cfg, widths)
            name = run_name(arch, cfg)
            rec = recs/'search'/fam/f'{name}.json'
            if not rec.exists() and not can_start(fam, 'search', a.search_epochs): complete = False; continue
            r = train_once(runs/'search'/fam/name, rec, fam, arch, cfg, a, seed=0, epochs=a.search_epochs)
            done.append((fam, 'search', a.search_epochs, r))
            search_rows.append(dict(family=fam, arch=arch, **cfg, params=r['params'], valid_auc=r['metrics']['valid_auc'],
                                    best_epoch=r['metrics']['best_epoch'], img_per_s=r['img_per_s']))
            print(f"search {fam:15s} {name:40s} valid AUC {r['metrics']['valid_auc']:.4f}", flush=True)
    search = pd.DataFrame(search_rows)
    for fam in fams:                                    # 2. each family's best configuration (a complete search only)
        s = search[search.family == fam] if len(search) else search
        if len(s) < len(configs): complete = False; continue
        b = s.loc[s.valid_auc.idxmax()]
        best[fam] = dict(arch=b.arch, lr=float(b.lr), wd=float(b.wd), depth=int(b.depth), search_auc=float(b.valid_auc))
    for seed in range(1, a.seeds + 1):                  # 3. final runs, seed-major
        for fam in best:
            rec = recs/'final'/fam/f'seed{seed}.json'
            if not rec.exists() and not can_start(fam, 'final', a.epochs): complete = False; continue
            r = train_once(runs/'final'/fam/f'seed{seed}', rec, fam, best[fam]['arch'], best[fam], a, seed=seed,
                           epochs=a.epochs, evaluate=True)
            if r['arch'] != best[fam]['arch']:
                raise SystemExit(f"{rec} is a run of {r['arch']}, but the search now picks {best[fam]['arch']}: "
                                 f"delete {recs/'final'/fam} to redo the final runs")
            done.append((fam, 'final', a.epochs, r))
            final[fam].append(r)
            print(f"final  {fam:15s} seed {seed}: AUC {r['eval']['auc']:.4f}, rotation spread "
                  f"{r['eval']['robustness']['mean_spread']:.4f}", flush=True)
    total = len(fams) * (len(configs) + a.seeds)
    print(f"runs recorded: {len(done)} of {total}", flush=True)
    if not complete:
        print(f"stopped by the time limit (--budget-min {a.budget_min}, --deadline {a.deadline}) before every run was "
              "made: run the same command again to continue", flush=True)
    df = summarise(final, best)
    if not len(df): return df
    res.parent.mkdir(parents=True, exist_ok=True)
    dev = environment(a.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    first = final[df.model[0]][0]
    cmd = 'python benchmarks/equivariance_study.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    note = ('SMOKE RUN on a CPU: tiny synthetic data, tiny models, 1 epoch. These numbers check the pipeline; '
            'they say nothing about the models.' if a.smoke else
            'The valid split both selected each family\'s configuration and scores the final runs (fresh seeds): '
            'the AUCs are optimistic by the selection, equally for every family.')
    md = [f"# Equivariance study{' (smoke run)' if a.smoke else ''}", '', note, '',
          f"Data: `{a.data}`: {first['n_train']} train / {first['n_valid']} valid patches. "
          f"Device: {dev['device_name']} ({dev['device']}). Command: `{cmd}`.", '',
          f"Search: {len(configs)} configurations per family from the grid {json.dumps(grid)} with widths "
          f"{json.dumps(widths)}, {a.search_epochs} epochs, seed 0. Final: {a.epochs} epochs, seeds 1..{a.seeds}. "
          "Every run: pcam_run's one-cycle recipe, batch " f"{a.bs}, bf16 on CUDA, no torch.compile.", '',
          "Columns: valid AUC, accuracy and NLL of the plain (single-view) prediction, mean ± std over seeds; rotation "
          "spread = max - min of P(tumour) over the 8 D4 views of a patch (mean and max over patches, averaged over seeds); "
          "class flips = patches whose predicted class changes under some view; train img/s = training patches / median "
          "training time of an epoch (validation excluded); s to best epoch = wall time until the epoch with the "
          "best valid AUC.", '', md_summary(df), '', '## Search', '',
          search.assign(valid_auc=search.valid_auc.round(4), img_per_s=search.img_per_s.round(0)).to_markdown(index=False), '',
          '![equivariance study](' + res.name + '.png)', '']
    write_text(res.with_suffix('.md'), '\n'.join(md))
    write_json(res.with_suffix('.json'), dict(
        smoke=a.smoke, complete=complete, command=cmd, data=a.data, limit=a.limit, valid_limit=a.valid_limit, environment=dev,
        grid=grid, widths=widths, configs=configs, best=best, summary=df.to_dict('records'), search=search.to_dict('records'),
        final={f: [{k: v for k, v in r.items() if k != 'history'} for r in rs] for f, rs in final.items()}), default=str)
    plot(df, search, res.with_suffix('.png'))
    print('\n'.join(md[:12]))
    print(f"wrote {res.with_suffix('.md')}, .json, .png")
    return df


if __name__ == '__main__':
    main()
