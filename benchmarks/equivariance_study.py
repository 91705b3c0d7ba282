"""Equivariance study: steerable GCNNs (C4, C8, D4; escnn) against a plain CNN with and without D4 augmentation.

    python benchmarks/equivariance_study.py --data DATA [--scale full|cpu] [--trials 8] [--search-epochs 6] [--epochs 10]
                                            [--seeds 3] [--search-limit N] [--limit N] [--valid-limit N]
    python benchmarks/equivariance_study.py --sample $PCAM_SAMPLE --subset 1000,500 --size 32 --scale cpu ...
    python benchmarks/equivariance_study.py --smoke          # the whole pipeline in minutes on a CPU (tiny everything)

1. Search: for every family, an Optuna study (pcam_nb.tune.tune: TPE sampler, median pruning on each epoch's valid
   AUC) of `--trials` trials over the family's space `space(family, scale)` (learning rate, weight decay, width),
   each trial a `--search-epochs` pcam_run on DATA's train split; the trial with the best valid AUC wins.
2. Final: each family's winner trained `--epochs` epochs with `--seeds` new seeds, each run evaluated on the valid
   split with pcam_nb.evaluate.evaluate_run (8 D4 views: AUC with its bootstrap interval, accuracy and NLL of the plain
   prediction, rotation robustness = spread of P(tumour) across the 8 views, class flips).
3. Writes PREFIX.{md,json,png} (default benchmarks/equivariance_study.*; with --smoke runs/equivariance-smoke/study.*)
   and each family's Optuna history / importance plots as PREFIX_optuna/<family>-{history,importance}.png.
   Run folders (studies, weights) stay under --runs (default runs/equivariance/, which git ignores).

Resumable: each family's search is an Optuna study in SQLite (runs/equivariance/search/<family>/study.db) that goes on
where it stopped; a final run with its evaluation is read back, not retrained. Run the same command again to go on.
The valid split both selects the configuration and reports the final figures (the sample has no third split), so the
reported AUCs of the winners are optimistic by the selection, equally for every family; the final runs use fresh seeds.
"""
import argparse, json, os, shutil, sys, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore', message='.*torch.jit.script.*')
import numpy as np, pandas as pd, torch
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt

from pcam_nb.models import create_model, n_params
from pcam_nb.equivariant import arch_name, ensure_arch
from pcam_nb.core import PCamError, environment, write_json, write_text, save_figure
from pcam_nb.runs import lock_holder
from pcam_nb.train import pcam_run
from pcam_nb.evaluate import evaluate_run
from pcam_nb.tune import tune

ROOT = Path(__file__).resolve().parent.parent

# family -> (group or 'baseline', D4 augmentation of the train batches; the colour jitter is on for every family)
FAMILIES = {'gcnn_c4': ('c4', True), 'gcnn_c8': ('c8', True), 'gcnn_d4': ('d4', True),
            'baseline_aug': ('baseline', True), 'baseline_noaug': ('baseline', False)}
# Width ranges per kind and scale, chosen so that equal steps give similar parameter counts across kinds
# (C4 has half the parameters of C8/D4 at equal fields; the baseline's channels are plain ones).
WIDTHS = {'full': {'c4': (8, 16), 'c8': (6, 11), 'd4': (6, 11), 'baseline': (14, 24)},
          'cpu': {'c4': (2, 4), 'c8': (2, 3), 'd4': (2, 3), 'baseline': (4, 8)},
          'smoke': {'c4': (2, 4), 'c8': (2, 4), 'd4': (2, 4), 'baseline': (4, 8)}}
DEPTH = {'full': 4, 'cpu': 3, 'smoke': 2}
SIZE = {'full': 96, 'cpu': 32, 'smoke': 64}  # patch side each scale is meant for (parameter counts of the search table)


def space(family:str, scale:str='full') -> dict:
    "The search space of `family` (pcam_nb.tune format): learning rate, weight decay, width; depth and D4 augmentation fixed."
    kind, aug = FAMILIES[family]
    lo, hi = WIDTHS[scale][kind]
    return {'lr': {'low': 1e-3, 'high': 1e-2, 'log': True}, 'wd': {'low': 0.005, 'high': 0.1, 'log': True},
            'width': {'low': lo, 'high': hi}, 'depth': DEPTH[scale], 'd4': aug}


def base_arch(family:str, scale:str) -> str:
    kind = FAMILIES[family][0]
    return arch_name(kind, WIDTHS[scale][kind][0], DEPTH[scale])


def final_run(out:Path, family:str, best:dict, a, seed:int) -> dict:
    "The record of one final run: read back from `out` if finished and evaluated, else trained and evaluated."
    rec = out/'record.json'
    if rec.exists(): return json.loads(rec.read_text())
    if a.report_only or lock_holder(out) is not None: return None      # not made yet / another process is making it
    t0 = time.perf_counter()
    arch = best['arch']
    ensure_arch(arch)
    print(f"final  {family:15s} seed {seed}: {arch}, lr {best['lr']:.2e}, wd {best['wd']:.3g}, {a.epochs} epochs", flush=True)
    try:
        m = pcam_run(a.data, arch, epochs=a.epochs, out=out, lr=best['lr'], wd=best['wd'], bs=a.bs, limit=a.limit,
                     valid_limit=a.valid_limit, seed=seed, device=a.device, d4=FAMILIES[family][1], compile='off',
                     overwrite=True, progress=False)
    except PCamError as e:
        if 'in use by another process' in str(e): return None
        raise
    c = json.loads((out/'config.json').read_text())
    h = pd.read_csv(out/'history.csv')
    e = evaluate_run(out, split='valid', tta=True, bs=a.bs, device=a.device, limit=a.valid_limit, n_boot=500,
                     calibrate=False, plots=False, progress=False)
    r = dict(family=family, arch=arch, seed=seed, lr=best['lr'], wd=best['wd'], metrics=m,
             params=n_params(create_model(arch, img_size=c['img_size'])), n_train=c['n_train'], n_valid=c['n_valid'],
             img_per_s=c['n_train'] / float((h.train_seconds if 'train_seconds' in h else h.seconds).median()),
             eval={k: e[k] for k in ('auc', 'auc_ci', 'accuracy', 'nll', 'ece', 'robustness', 'tta', 'n')},
             device_name=c.get('device_name'), wall_s=time.perf_counter() - t0)
    write_json(rec, r, default=str)
    return r


def mean_std(xs):
    xs = np.asarray(xs, dtype=float)
    return float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0


def summarise(final:dict, best:dict) -> pd.DataFrame:
    rows = []
    for fam, runs in final.items():
        if not runs: continue
        r = dict(model=fam, arch=best[fam]['arch'], lr=best[fam]['lr'], wd=best[fam]['wd'], seeds=len(runs),
                 params=runs[0]['params'], search_auc=best[fam]['search_auc'])
        for k, f in (('auc', lambda e: e['eval']['auc']), ('auc_lo', lambda e: e['eval']['auc_ci'][0]),
                     ('auc_hi', lambda e: e['eval']['auc_ci'][1]), ('tta_auc', lambda e: e['eval']['tta']['auc']),
                     ('accuracy', lambda e: e['eval']['accuracy']), ('nll', lambda e: e['eval']['nll']),
                     ('rot_spread_mean', lambda e: e['eval']['robustness']['mean_spread']),
                     ('rot_spread_max', lambda e: e['eval']['robustness']['max_spread']),
                     ('rot_flip_rate', lambda e: e['eval']['robustness']['class_flip_rate']),
                     ('img_per_s', lambda e: e['img_per_s']), ('best_epoch', lambda e: e['metrics']['best_epoch'])):
            r[k], r[k + '_std'] = mean_std([f(e) for e in runs])
        rows.append(r)
    return pd.DataFrame(rows)


def md_summary(df:pd.DataFrame) -> str:
    pm = lambda m, s, d=4: f"{m:.{d}f} ± {s:.{d}f}"
    t = pd.DataFrame({'model': df.model, 'arch': df.arch, 'lr': df.lr.map('{:.2e}'.format), 'wd': df.wd.map('{:.3f}'.format),
                      'params': df.params.map('{:,}'.format),
                      'valid AUC (± std over seeds)': [pm(m, s) for m, s in zip(df.auc, df.auc_std)],
                      '95% CI (patch bootstrap)': [f"{lo:.3f}–{hi:.3f}" for lo, hi in zip(df.auc_lo, df.auc_hi)],
                      'AUC, 8-view TTA': [f"{m:.4f}" for m in df.tta_auc],
                      'accuracy': [pm(m, s, 3) for m, s in zip(df.accuracy, df.accuracy_std)],
                      'NLL': [pm(m, s, 3) for m, s in zip(df.nll, df.nll_std)],
                      'rotation spread (mean / max)': [f"{m:.4f} / {x:.4f}" for m, x in zip(df.rot_spread_mean, df.rot_spread_max)],
                      'class flips': [f"{v:.2%}" for v in df.rot_flip_rate],
                      'train img/s': df.img_per_s.map('{:,.0f}'.format)})
    return t.to_markdown(index=False)


def plot(df:pd.DataFrame, search:pd.DataFrame, fname:Path):
    fig, axs = plt.subplots(1, 3, figsize=(15, 4))
    x = np.arange(len(df))
    axs[0].errorbar(x, df.auc, yerr=[df.auc - df.auc_lo, df.auc_hi - df.auc], fmt='none', ecolor='grey', capsize=6,
                    label='95% CI (patch bootstrap, mean over seeds)')
    axs[0].bar(x, df.auc, yerr=df.auc_std, capsize=3, color='tab:blue', alpha=.8, label='mean ± std over seeds')
    axs[0].set_ylim(max(0, float(df.auc_lo.min()) - 0.03), min(1, float(df.auc_hi.max()) + 0.02))
    axs[0].set_title('valid ROC AUC'); axs[0].legend(fontsize=7, loc='lower right')
    axs[1].bar(x, df.rot_spread_mean, color='tab:orange', label='mean')
    axs[1].plot(x, df.rot_spread_max, 'kv', label='max')
    axs[1].set_yscale('symlog', linthresh=1e-4); axs[1].legend()
    axs[1].set_title('spread of P(tumour) over the 8 D4 views')
    for ax in axs[:2]: ax.set_xticks(x, df.model, rotation=20)
    for fam, g in search.groupby('family', sort=False):
        g = g[g.state == 'COMPLETE']
        axs[2].plot(g.params, g.valid_auc, 'o', label=fam, alpha=.8)
    axs[2].set_xscale('log'); axs[2].set_xlabel('parameters'); axs[2].set_ylabel('valid AUC (search epochs)')
    axs[2].set_title('search: every finished trial'); axs[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, fname)
    plt.close(fig)


def subset_data(sample, n_train:int, n_valid:int, size:int) -> str:
    "A balanced, seeded subset of the real sample (`sample`: images/ + labels.csv) as HDF5 at `size` px, made once under data/."
    from pcam_nb.data import convert
    dest = ROOT/'data'/f'pcam-subset-h5-{size}'
    src = ROOT/'data'/'pcam-subset'
    if not (dest/'camelyonpatch_level_2_split_valid_y.h5').exists():
        df = pd.read_csv(Path(sample)/'labels.csv')
        n = {'train': n_train // 2, 'valid': n_valid // 2}             # per class
        sub = pd.concat([g.sample(n[sp], random_state=0) for (sp, _), g in df.groupby(['split', 'label']) if sp in n])
        src.mkdir(parents=True, exist_ok=True)
        if not (src/'images').exists(): (src/'images').symlink_to(Path(sample).resolve()/'images')
        sub.sort_values(['split', 'pcam_index']).to_csv(src/'labels.csv', index=False)
        convert(src, dest, size=size, progress=False)
    return os.path.relpath(dest)


def smoke_data() -> Path:
    from pcam_nb.synth import make_synthetic
    return make_synthetic(ROOT/'data'/'equivariance-smoke', n_train=192, n_valid=96, n_test=0, seed=11, size=64, progress=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default=None, help='PCam HDF5 folder (convert the real sample with pcam_convert first)')
    ap.add_argument('--sample', default=None, help='instead of --data: the real sample folder (images/ + labels.csv), '
                    'of which --subset patches are converted once to HDF5 at --size px under data/')
    ap.add_argument('--subset', default='1000,500', help='with --sample: train,valid patches (balanced)')
    ap.add_argument('--size', type=int, default=32, help='with --sample: patch side of the subset')
    ap.add_argument('--families', default=','.join(FAMILIES), help='comma-separated subset of ' + ', '.join(FAMILIES))
    ap.add_argument('--scale', default='full', choices=['full', 'cpu'], help='width ranges and depth (see WIDTHS, DEPTH)')
    ap.add_argument('--trials', type=int, default=8, help='Optuna trials per family in the search')
    ap.add_argument('--startup-trials', type=int, default=2, help='random trials before TPE and pruning take over')
    ap.add_argument('--search-epochs', type=int, default=6)
    ap.add_argument('--epochs', type=int, default=10, help='epochs of the final runs')
    ap.add_argument('--seeds', type=int, default=3, help='seeds of the final runs')
    ap.add_argument('--first-seed', type=int, default=1, help='train final runs from this seed on (several processes '
                    'can share the final runs by seed once the searches are done; then run without it for the report)')
    ap.add_argument('--no-report', dest='report', action='store_false', help='train only, write no report')
    ap.add_argument('--report-only', action='store_true', help='train nothing: report the final runs recorded so far')
    ap.add_argument('--bs', type=int, default=256)
    ap.add_argument('--limit', type=int, default=None, help='train patches of the final runs (default all)')
    ap.add_argument('--search-limit', type=int, default=None, help='train patches of the search trials (default --limit)')
    ap.add_argument('--warmup-epochs', type=int, default=1, help='epochs of a trial before it can be pruned')
    ap.add_argument('--valid-limit', type=int, default=None)
    ap.add_argument('--device', default=None)
    ap.add_argument('--runs', default=None, help='run folders (default runs/equivariance)')
    ap.add_argument('--results', default=None, help='prefix of the .md/.json/.png outputs (default benchmarks/equivariance_study)')
    ap.add_argument('--smoke', action='store_true', help='tiny data, widths and trials, 1 epoch: checks the pipeline on a CPU')
    a = ap.parse_args(argv)
    scale = a.scale
    if a.smoke:
        a.data = a.data or str(smoke_data())
        a.trials, a.startup_trials, a.search_epochs, a.epochs, a.seeds, a.bs, scale = 2, 1, 1, 1, 2, 64, 'smoke'
        a.warmup_epochs = 0
        a.runs = a.runs or str(ROOT/'runs'/'equivariance-smoke')
        a.results = a.results or str(Path(a.runs)/'study')
    if a.sample and not a.data: a.data = subset_data(a.sample, *map(int, a.subset.split(',')), a.size)
    a.runs = a.runs or str(ROOT/'runs'/'equivariance')
    a.results = a.results or str(ROOT/'benchmarks'/'equivariance_study')
    if not a.data: ap.error("no data: give --data (a PCam HDF5 folder, e.g. the real sample converted by pcam_convert)")
    fams = [f.strip() for f in a.families.split(',') if f.strip()]
    bad = [f for f in fams if f not in FAMILIES]
    if bad: ap.error(f"unknown families {bad}: choose from {', '.join(FAMILIES)}")
    runs, res, t0 = Path(a.runs), Path(a.results), time.perf_counter()
    plots = res.with_name(res.name + '_optuna')
    search_rows, best, final = [], {}, {f: [] for f in fams}
    for fam in fams:                                    # 1. search: one Optuna study per family
        ts = time.perf_counter()
        sdir = runs/'search'/fam
        df = tune(base_arch(fam, scale), space(fam, scale), data=a.data, out=sdir, trials=a.trials, epochs=a.search_epochs,
                  seed=0, startup_trials=a.startup_trials, warmup_epochs=a.warmup_epochs, bs=a.bs,
                  limit=a.search_limit or a.limit,
                  valid_limit=a.valid_limit, device=a.device)
        df = df.assign(family=fam, params=[n_params(create_model(ar, img_size=SIZE[scale])) if isinstance(ar, str) else None
                                           for ar in df.arch])
        search_rows.append(df)
        plots.mkdir(parents=True, exist_ok=True)
        for p in ('history', 'importance'):
            if (sdir/f'{p}.png').exists(): shutil.copyfile(sdir/f'{p}.png', plots/f'{fam}-{p}.png')
        done = df[df.state == 'COMPLETE']
        b = done.loc[done.valid_auc.idxmax()]
        best[fam] = dict(arch=b.arch, lr=float(b.lr), wd=float(b.wd), width=int(b.width), search_auc=float(b.valid_auc),
                         trial=int(b.number))
        print(f"search {fam:15s} {len(df)} trials ({(df.state == 'PRUNED').sum()} pruned) in {time.perf_counter() - ts:.0f} s: "
              f"best {b.arch} lr {b.lr:.2e} wd {b.wd:.3g}, valid AUC {b.valid_auc:.4f}", flush=True)
    search = pd.concat(search_rows, ignore_index=True)
    for seed in range(a.first_seed, a.seeds + 1):       # 2. final runs, seed-major
        for fam in fams:
            r = final_run(runs/'final'/fam/f'seed{seed}', fam, best[fam], a, seed)
            if r is None: continue
            if r['arch'] != best[fam]['arch']:
                raise SystemExit(f"{runs/'final'/fam} holds runs of {r['arch']}, but the search now picks "
                                 f"{best[fam]['arch']}: delete it to redo the final runs")
            final[fam].append(r)
            print(f"final  {fam:15s} seed {seed}: AUC {r['eval']['auc']:.4f}, rotation spread "
                  f"{r['eval']['robustness']['mean_spread']:.4f}", flush=True)
    if not a.report: return None
    df = summarise(final, best)
    res.parent.mkdir(parents=True, exist_ok=True)
    dev = environment(a.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    first = final[df.model[0]][0]
    cmd = 'python benchmarks/equivariance_study.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    if os.environ.get('PCAM_SAMPLE'): cmd = cmd.replace(os.environ['PCAM_SAMPLE'], '$PCAM_SAMPLE')
    minutes = (time.perf_counter() - t0) / 60
    starts = [f.stat().st_mtime for f in (runs/'search').glob('*/trials/0000/config.json')]
    ends = [f.stat().st_mtime for f in (runs/'final').glob('*/seed*/record.json')]
    span = (max(ends) - min(starts)) / 60 if starts and ends else minutes  # the whole study, over every call that made it
    note = ('SMOKE RUN on a CPU: tiny synthetic data, tiny models, 1 epoch. These numbers check the pipeline; '
            'they say nothing about the models.' if a.smoke else
            'The valid split both selected each family\'s configuration and scores the final runs (fresh seeds): '
            'the AUCs are optimistic by the selection, equally for every family.')
    md = [f"# Equivariance study{' (smoke run)' if a.smoke else ''}", '',
          f"{dev['device_name']} ({dev['device']}, {dev.get('cpu_threads', '?')} threads), torch {torch.__version__}: "
          f"`{cmd}` ({span:.0f} min of wall time from the first search trial to the last final run).", '', note, '',
          f"Data: `{Path(a.data).name}`: {first['n_train']} train / {first['n_valid']} valid patches of "
          f"{json.loads((runs/'final'/df.model[0]/'seed1'/'config.json').read_text())['img_size']} px.", '',
          f"Search: per family an Optuna study (TPE sampler, median pruner on each epoch's valid AUC after "
          f"{a.startup_trials} startup trials, from epoch {a.warmup_epochs + 1} on) of {a.trials} trials of {a.search_epochs} epochs"
          f"{f' on {a.search_limit} train patches' if a.search_limit else ''} over lr in [1e-3, 1e-2] (log), "
          f"wd in [0.005, 0.1] (log) and the width range {json.dumps(WIDTHS[scale])} at depth {DEPTH[scale]}. "
          f"Final: the best trial's settings, {a.epochs} epochs, seeds 1..{a.seeds} (column seeds: the runs made). Every run: pcam_run's one-cycle recipe, "
          f"batch {a.bs}, bf16 on CUDA, no torch.compile.", '',
          "Columns: valid AUC, accuracy and NLL of the plain (single-view) prediction, mean ± std over seeds; 95% CI = the "
          "patch-bootstrap interval of one run's AUC, its bounds averaged over seeds; AUC, 8-view TTA = AUC of the mean "
          "over the 8 D4 views; rotation spread = max - min of P(tumour) over the 8 D4 views of a patch (mean and max over "
          "patches, averaged over seeds); class flips = patches whose predicted class changes under some view; train "
          "img/s = training patches / median training time of an epoch (validation excluded).", '', md_summary(df), '',
          '![equivariance study](' + res.name + '.png)', '', '## Search', '',
          search.drop(columns=[c for c in ('d4', 'depth') if c in search]).round(5).to_markdown(index=False), '',
          "Optuna's optimisation history and parameter importances per family: `" + plots.name + "/`.", '']
    write_text(res.with_suffix('.md'), '\n'.join(md))
    write_json(res.with_suffix('.json'), dict(
        smoke=a.smoke, command=cmd, data=a.data, limit=a.limit, valid_limit=a.valid_limit, environment=dev, scale=scale,
        widths=WIDTHS[scale], depth=DEPTH[scale], spaces={f: space(f, scale) for f in fams}, best=best,
        summary=df.to_dict('records'), search=search.to_dict('records'), minutes=minutes, study_minutes=span,
        final={f: [{k: v for k, v in r.items() if k != 'history'} for r in rs] for f, rs in final.items()}), default=str)
    plot(df, search, res.with_suffix('.png'))
    print('\n'.join(md[:14]))
    print(f"wrote {res.with_suffix('.md')}, .json, .png")
    return df


if __name__ == '__main__':
    main()
