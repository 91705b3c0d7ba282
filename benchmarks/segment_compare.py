"""MONAI UNet against UNETR for tissue segmentation, trained as fastai Learners (pcam_nb.segment): validation Dice with
bootstrap intervals over images, parameters, training speed and inference time per 224 x 224 tile, on the synthetic
tiles and on a real GlaS folder; SwinUNETR for size and speed; and fastai+MONAI training against a plain PyTorch loop
over the same model, loader and number of steps.

    python benchmarks/segment_compare.py --glas GLAS_FOLDER [--device cpu] [--seeds 3] [--epochs 6] [--crops 128]

Writes segment_compare.json and segment_compare.png beside this file (or into --out; `--tag` adds a suffix) and prints
the tables; `--archs unet,unetr,swin_unetr` trains SwinUNETR too.
"""
import argparse, copy, json, os, platform, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd, torch
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from fastai.torch_core import set_seed
from pcam_nb.segdata import synth_seg, seg_dls
from pcam_nb.models import n_params
from pcam_nb.segment import (seg_model, SegNet, SegLoss, seg_learner, seg_run, evaluate_seg)

HERE = Path(__file__).resolve().parent


def arch_kw(arch, a): return dict(width=a.width, hidden=a.hidden) if arch != 'unet' else dict(width=a.width)


def infer_ms(arch, a, device, n=5):
    "Median ms to segment one 224 x 224 tile (sliding window of the training crop, no TTA)."
    net = SegNet(seg_model(arch, 4, a.crop, **arch_kw(arch, a)), a.crop).to(device).eval()
    x, ts = torch.randn(1, 3, 224, 224, device=device), []
    with torch.no_grad():
        for i in range(n + 1):
            if device.type == 'cuda': torch.cuda.synchronize()
            t = time.perf_counter(); net(x)
            if device.type == 'cuda': torch.cuda.synchronize()
            if i: ts.append(1000 * (time.perf_counter() - t))
    return float(np.median(ts))


def train_speed(arch, a, device, steps=4):
    "Training crops/s of `arch` on random batches (for the models not trained here)."
    m = seg_model(arch, 4, a.crop, **arch_kw(arch, a)).to(device)
    opt, L = torch.optim.AdamW(m.parameters()), SegLoss()
    x, y = torch.randn(a.bs, 3, a.crop, a.crop, device=device), torch.randint(1, 5, (a.bs, a.crop, a.crop), device=device)
    for i in range(steps + 1):
        if i == 1: t = time.perf_counter()
        L(m(x), y).backward(); opt.step(); opt.zero_grad()
    if device.type == 'cuda': torch.cuda.synchronize()
    return a.bs * steps / (time.perf_counter() - t)


def one_run(data, arch, seed, a, tmp):
    out = tmp/f'{Path(str(data)).name}-{arch}-{seed}'
    lr = a.lr_unet if arch == 'unet' else a.lr_unetr   # the transformer models take the lower rate
    kw = dict(data=str(data), arch=arch, seed=seed, epochs=a.epochs, crop=a.crop, bs=a.bs, epoch_crops=a.crops, lr=lr, **arch_kw(arch, a))
    if data == 'synthetic': kw.update(n_train=a.n_train, n_valid=a.n_valid, tile=a.tile)
    else: kw.update(preset='glas', valid=4, max_side=a.max_side)
    m = seg_run(out, device=a.device, progress=False, **kw)
    rep = evaluate_seg(out, tta=False, device=a.device, masks=False)
    return dict(data='synthetic' if data == 'synthetic' else 'GlaS sample', arch=arch, seed=seed, params=m['params'],
                train_crops_per_s=m['train_crops_per_s'], seconds=m['seconds'], mean_dice=rep['mean_dice']['value'],
                mean_dice_ci=rep['mean_dice']['ci'], dice={c: d['value'] for c, d in rep['dice'].items()},
                pixel_accuracy=rep['pixel_accuracy'], n_valid_images=rep['n_images'])


def fastai_vs_plain(a, device, steps=32, repeats=2):
    "Seconds for `steps` training steps of one UNet (float32 in both), through fastai's Learner.fit_one_cycle and through a plain loop."
    s = synth_seg(a.n_train + 1, a.tile, 0)
    dls = seg_dls(s[:a.n_train], s[a.n_train:], a.crop, a.bs, device, epoch_crops=steps * a.bs)
    dls.valid = dls.valid.new(bs=1)
    set_seed(0)
    init = copy.deepcopy(seg_learner(dls, 'unet', a.width, mixed_precision=False).model.state_dict())
    def fastai_run():
        learn = seg_learner(dls, 'unet', a.width, mixed_precision=False); learn.model.load_state_dict(init)
        t = time.perf_counter()
        with learn.no_logging(), learn.no_bar(): learn.fit_one_cycle(1, a.lr_unet)
        return time.perf_counter() - t
    def plain_run():
        net = SegNet(seg_model('unet', dls.c, a.crop, a.width), a.crop).to(device); net.load_state_dict(init)
        opt = torch.optim.AdamW(net.parameters(), lr=a.lr_unet, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01, foreach=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr_unet, total_steps=len(dls.train))
        loss = SegLoss()
        t = time.perf_counter()
        net.train()
        for xb, yb in dls.train:
            l = loss(net(xb), yb); l.backward(); opt.step(); opt.zero_grad(); sched.step()
        net.eval()
        with torch.no_grad():
            for xb, yb in dls.valid: loss(net(xb), yb)
        if device.type == 'cuda': torch.cuda.synchronize()
        return time.perf_counter() - t
    plain_run()                                   # warm-up
    times = {'fastai Learner + MONAI UNet': [], 'plain PyTorch loop, same UNet': []}
    for _ in range(repeats):
        times['fastai Learner + MONAI UNet'].append(fastai_run()); times['plain PyTorch loop, same UNet'].append(plain_run())
    best = {k: min(v) for k, v in times.items()}
    return {k: dict(seconds=round(v, 2), crops_per_s=round(steps * a.bs / v, 1)) for k, v in best.items()}, steps


def plot(df, fname):
    "Mean Dice per seed with its interval, per data set and model (the runs of `df`, one row each)."
    fig, ax = plt.subplots(figsize=(6.5, 3))
    archs = list(df.arch.unique()); n = len(archs) + 1
    for i, (data, g) in enumerate(df.groupby('data', sort=False)):
        for arch, h in g.groupby('arch', sort=False):
            j = archs.index(arch); x = i * n + j
            ax.scatter([x] * len(h), h.mean_dice, color=f'C{j}', zorder=3, label=arch if i == 0 else None)
            for _, r in h.iterrows(): ax.plot([x, x], r.mean_dice_ci, color=f'C{j}', alpha=.4, lw=3)
    ax.set_xticks([i * n + (n - 2) / 2 for i in range(df.data.nunique())], list(df.data.unique())); ax.set_ylabel('validation mean Dice')
    ax.set_title('each dot one seed, bar its 95% interval over validation images', fontsize=9)
    ax.legend(); ax.grid(alpha=.3); fig.tight_layout(); fig.savefig(fname, dpi=80)


def main(a):
    torch.set_num_threads(a.threads)
    device = a.device = torch.device(a.device)
    hw = f"{os.cpu_count()}-core {platform.machine()} CPU" if device.type == 'cpu' else torch.cuda.get_device_name(device)
    print(f"{hw}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}", flush=True)
    t0, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for data in ['synthetic'] + ([a.glas] if a.glas else []):
            for arch in a.archs.split(','):
                for seed in range(a.seeds):
                    rows.append(one_run(data, arch, seed, a, Path(tmp)))
                    r = rows[-1]; print(f"{r['data']:12s} {arch:6s} seed {seed}: Dice {r['mean_dice']:.3f} {r['seconds']:.0f} s", flush=True)
    speed = {arch: dict(params=n_params(seg_model(arch, 4, a.crop, **arch_kw(arch, a))), infer_ms_224=round(infer_ms(arch, a, device), 1),
                        train_crops_per_s=round(train_speed(arch, a, device), 1)) for arch in ('unet', 'unetr', 'swin_unetr')}
    loop, steps = fastai_vs_plain(a, device) if a.loop else (None, 0)
    df = pd.DataFrame(rows)
    res = dict(hardware=hw, torch=torch.__version__, threads=torch.get_num_threads(), settings={k: Path(v).name if k == 'glas' and v else str(v) for k, v in vars(a).items() if k != 'out'},
               runs=rows, speed=speed, loop=loop, loop_steps=steps, minutes=round((time.perf_counter() - t0) / 60, 1),
               load_average_after=os.getloadavg()[0])
    out = Path(a.out)
    (out/f'segment_compare{a.tag}.json').write_text(json.dumps(res, indent=1))
    plot(df, out/f'segment_compare{a.tag}.png')
    summ = df.groupby(['data', 'arch'], sort=False).agg(mean_dice=('mean_dice', 'mean'), sd=('mean_dice', 'std'),
                                                        params=('params', 'first'), train_crops_per_s=('train_crops_per_s', 'mean'))
    print(summ.to_markdown(floatfmt='.3f')); print(pd.DataFrame(speed).T.to_markdown()); print(pd.DataFrame(loop).T.to_markdown() if loop else '')
    print(f"{res['minutes']} min, load average {res['load_average_after']:.1f} after")


def replot(*jsons, fname=HERE/'segment_compare.png'):
    "The figure of the runs of several result files together (e.g. segment_compare.json and segment_compare_swin.json)."
    plot(pd.DataFrame([r for f in jsons for r in json.loads(Path(f).read_text())['runs']]), fname)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--glas', default=None, help='GlaS sample folder (images/ + masks/); without it only the synthetic tiles')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    ap.add_argument('--seeds', type=int, default=3)
    ap.add_argument('--epochs', type=int, default=6)
    ap.add_argument('--crops', type=int, default=128, help='training crops per epoch')
    ap.add_argument('--crop', type=int, default=96, help='training crop and sliding-window size')
    ap.add_argument('--bs', type=int, default=8)
    ap.add_argument('--width', type=int, default=16, help='UNet base channels; UNETR/SwinUNETR feature size')
    ap.add_argument('--hidden', type=int, default=192, help='UNETR transformer width')
    ap.add_argument('--lr-unet', type=float, default=3e-3)
    ap.add_argument('--lr-unetr', type=float, default=1e-3)
    ap.add_argument('--n-train', type=int, default=48, help='synthetic training tiles')
    ap.add_argument('--n-valid', type=int, default=16, help='synthetic validation tiles')
    ap.add_argument('--tile', type=int, default=128, help='synthetic tile size')
    ap.add_argument('--max-side', type=int, default=388, help='GlaS images shrunk to this longest side (775 -> 388: half)')
    ap.add_argument('--archs', default='unet,unetr', help='models trained and scored, comma-separated (unet, unetr, swin_unetr)')
    ap.add_argument('--no-loop', dest='loop', action='store_false', help='skip the fastai against plain-loop timing')
    ap.add_argument('--tag', default='', help='suffix of the output file names')
    ap.add_argument('--out', default=str(HERE))
    main(ap.parse_args())
