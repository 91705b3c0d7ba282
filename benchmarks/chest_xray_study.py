"""Pneumonia screening on a chest X-ray folder (pcam_nb.chest): the baseline CNN against resnet18, both from scratch,
one grey channel, in stratified k-fold cross-validation (grouped by patient where the file names give one), pooled
out-of-fold screening metrics with bootstrap intervals, calibration, and Grad-CAM on correct and wrong cases.

    nice -n 10 python benchmarks/chest_xray_study.py --data CHEST_XRAY_FOLDER [--folds 5] [--size 224]
           [--epochs simple_cnn:3,resnet18:3] [--threads 1]

Sized for about 75 minutes of one CPU core with the defaults on the 624-image sample (longer on a machine shared with other heavy jobs). Writes
chest_xray_study.json, chest_xray_study.md, chest_xray_roc.png, chest_xray_reliability.png and chest_xray_gradcam.png
beside this file (or into --out); all of them are rewritten after every fold, from the folds done.
"""
import argparse, json, time
from pathlib import Path
import numpy as np, pandas as pd, torch
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from pcam_nb.core import environment, write_json, write_text
from pcam_nb.chest import chest_table, read_chest_xray, cv_folds, fold_probs, plot_cams, screening_metrics, CHEST_DEFAULTS
from pcam_nb.data import Patches
from pcam_nb.evaluate import plot_roc, plot_reliability, roc_auc

HERE = Path(__file__).resolve().parent


def load_all(folder, size):
    "Every image of the folder (all official splits) as one-channel Patches, with the patient of each."
    t = chest_table(folder)
    parts = [read_chest_xray(folder, s, size, progress=False) for s in (['train', 'valid'] + (['test'] if (t.split == 'test').any() else []))]
    return Patches(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]), parts[0].classes,
                   np.concatenate([p.ids for p in parts]), str(folder), pd.concat([p.meta for p in parts], ignore_index=True))


def cam_cases(y, s, k=3):
    "Indices of the `k` most confident correct cases (mixed classes) and the `k` most confident mistakes."
    pred, conf = (s >= 0.5).astype(int), np.abs(s - 0.5)
    right, wrong = np.flatnonzero(pred == y), np.flatnonzero(pred != y)
    right = np.r_[[i for i in right[np.argsort(-conf[right])] if y[i] == 0][:(k + 1) // 2],
                  [i for i in right[np.argsort(-conf[right])] if y[i] == 1][:k // 2]].astype(int)
    return right, wrong[np.argsort(-conf[wrong])][:k]


def fmt(m, k): return f"{m[k]:.3f} [{m[k + '_ci'][0]:.3f}, {m[k + '_ci'][1]:.3f}]"


def report_md(res) -> str:
    s = res['settings']
    rows = []
    for a, r in res['archs'].items():
        m = r['pooled']
        rows.append(dict(model=a, params=r['params'], epochs=r['epochs'], folds=f"{r['folds_done']} of {s['folds']}", images=r['n_evaluated'], auc=f"{m['auc']:.3f} [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]",
                         fold_auc=f"{np.mean(r['fold_auc']):.3f} ± {np.std(r['fold_auc']):.3f}",
                         sens_at_spec90=fmt(m, 'sens_at_spec90'), sens_at_spec95=fmt(m, 'sens_at_spec95'),
                         spec_at_sens95=fmt(m, 'spec_at_sens95'), ece=f"{m['ece']:.3f}", train_min=round(r['seconds'] / 60, 1)))
    e = res['environment']
    return (f"## Chest X-ray pneumonia: baseline CNN vs resnet18 (from scratch, {s['folds']}-fold CV)\n\n"
            f"{res['n']} images ({res['counts']}), {s['size']} px, one channel; folds stratified, grouped by **{res['fold_unit']}**"
            f" ({res['fold_note']}). Pooled out-of-fold predictions; 95% bootstrap intervals ({s['n_boot']} resamples of images).\n\n"
            + pd.DataFrame(rows).to_markdown(index=False)
            + f"\n\nfold_auc: mean ± sd of the per-fold AUCs. Class-weighted loss, rotations <= {CHEST_DEFAULTS['rotate']:g} deg, "
            f"zoom <= {1 + CHEST_DEFAULTS['zoom']:g}, no flips; the last epoch's model predicts its fold (no selection on it).\n\n"
            f"{e['device_name']}, {s['threads']} torch thread(s), torch {e['torch']}: `{res['command']}`, "
            f"{res['seconds'] / 60:.1f} minutes in all.\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', required=True, help='chest X-ray folder: Kermany chest_xray/ class folders or images + labels.csv')
    ap.add_argument('--folds', type=int, default=5)
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--epochs', default='simple_cnn:3,resnet18:3', help='arch:epochs,... (trained from scratch)')
    ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--n-boot', type=int, default=1000)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default=str(HERE))
    ap.add_argument('--only-folds', default=None, help='run only these folds (e.g. 0 or 0,1), for a partial run')
    ap.add_argument('--tag', default='', help='suffix of the output file names (e.g. _resnet18 for a separate run)')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out, t0 = Path(a.out), time.time()
    archs = {k: int(v) for k, v in (o.split(':') for o in a.epochs.split(','))}
    p = load_all(a.data, a.size)
    pats = p.meta.patient.to_numpy()
    folds, unit = cv_folds(p.y, pats if not pd.isna(pats).any() else None, a.folds, a.seed)
    note = ("file names give patients: no patient in two folds" if unit == 'patient' else
            f"{int(pd.isna(pats).sum())} of {len(pats)} file names carry no patient (e.g. {p.ids[0]}), so folds are per image")
    res = dict(command='python benchmarks/chest_xray_study.py ' + ' '.join(f'--{k.replace("_", "-")} {v}' for k, v in vars(a).items()
                                                                           if k not in ('out', 'data') and v not in (None, '')) + ' --data CHEST_XRAY_SAMPLE',
               settings={**{k: v for k, v in vars(a).items() if k != 'out'}, 'data': Path(a.data).name}, n=len(p), counts=p.counts(), fold_unit=unit, fold_note=note,
               environment=environment('cpu'), archs={})
    oof = {k: np.full(len(p), np.nan) for k in archs}
    cams = {}
    only = None if a.only_folds is None else {int(o) for o in a.only_folds.split(',')}
    for arch, ep in archs.items():   # the cheaper model's whole cross-validation first
        for f, (tr, te) in enumerate(folds):
            if only is not None and f not in only: continue
            t = time.time()
            s, learn, stats = fold_probs(p, tr, te, arch, ep, a.lr, a.bs, a.seed + f)
            oof[arch][te] = s
            r = res['archs'].setdefault(arch, dict(epochs=ep, params=sum(q.numel() for q in learn.model.parameters()),
                                                     fold_auc=[], fold_seconds=[], seconds=0.0))
            r['fold_auc'].append(roc_auc(p.y[te], s)); r['fold_seconds'].append(round(time.time() - t, 1))
            r['seconds'], r['folds_done'] = round(sum(r['fold_seconds']), 1), len(r['fold_auc'])
            print(f"fold {f} {arch}: AUC {r['fold_auc'][-1]:.3f} in {r['fold_seconds'][-1]:.0f} s", flush=True)
            if arch not in cams:
                cams[arch] = (learn.model.eval(), stats, te, s, f)
                grad_cams(cams, p, out, a.tag)
            finish(res, p, oof, archs, a, out, t0)


def grad_cams(cams, p, out, tag=''):
    "Grad-CAM of each model's first fold on its most confident correct cases and mistakes, one row pair per model."
    import PIL.Image as PI
    for arch, (model, stats, te, s, f) in cams.items():
        right, wrong = cam_cases(p.y[te], s)
        idx = np.r_[right, wrong].astype(int)
        plt.close(plot_cams(model, p, te[idx], stats, s[idx], out/f'.cam_{arch}.png',
                            f"{arch}, fold {f}: {len(right)} correct (left), {len(wrong)} wrong (right); Grad-CAM of pneumonia"))
    ims = [PI.open(out/f'.cam_{k}.png').convert('RGB') for k in cams]
    canvas = PI.new('RGB', (max(i.width for i in ims), sum(i.height for i in ims)), 'white'); y = 0
    for i in ims: canvas.paste(i, (0, y)); y += i.height
    canvas.save(out/f'chest_xray_gradcam{tag}.png')
    for k in cams: (out/f'.cam_{k}.png').unlink()


def finish(res, p, oof, archs, a, out, t0):
    "Metrics, figures and tables of the folds done so far (each model's pooled out-of-fold predictions of its folds)."
    for arch, r in res['archs'].items():
        done = ~np.isnan(oof[arch])
        r['n_evaluated'] = int(done.sum())
        r['pooled'] = screening_metrics(p.y[done], oof[arch][done], a.n_boot, a.seed)
    full = [k for k, r in res['archs'].items() if r['folds_done'] == a.folds]
    if full:
        plt.close(plot_roc(p.y, {k: (oof[k], res['archs'][k]['pooled']['auc_ci']) for k in full}, out/f'chest_xray_roc{a.tag}.png'))
        plt.close(plot_reliability(p.y, {k: np.c_[1 - oof[k], oof[k]] for k in full}, out/f'chest_xray_reliability{a.tag}.png', n_bins=10))
    res['seconds'] = round(time.time() - t0, 1)
    write_json(out/f'chest_xray_study{a.tag}.json', res)
    write_text(out/f'chest_xray_study{a.tag}.md', report_md(res))
    print(report_md(res), flush=True)


if __name__ == '__main__':
    main()
