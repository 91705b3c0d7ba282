"""Whole-slide inference: the pipeline (`predict_slide`) against the loop a user writes, and its peak memory.

    python benchmarks/slide_speed.py [--run RUN] [--size 40000] [--naive-windows 400] [--real SLIDE ...]

1. Generates a large pyramidal TIFF tile by tile with tifffile (default 40,000 x 40,000 px at 0.243 um/px, 4.8 GB
   decoded at level 0, 512 px JPEG tiles, levels down to 1/32; glass with a few elliptic blobs of synthetic
   H&E texture), so that generation itself stays bounded; and one of half that side, to show the memory does not
   grow with the slide.
2. For each slide, in a fresh subprocess: `predict_slide` over its tissue windows (no TTA), with the peak RSS of
   the process (resource.getrusage) and its RSS before the slide is opened (Python, torch, fastai and the model).
3. In another subprocess, the naive loop over the same tissue windows in a seeded random order, capped in count
   and time: `read_region` of one window at the level the pipeline reads (resized to 96x96 when that level is not at
   PCam's scale), one forward pass per window.
4. The same two on the real slides given with --real (e.g. the CMU-1 region, read at 0.499 um/px and resampled).

Without --run, trains the small synthetic run the notebooks use. Writes benchmarks/slide_speed.json and .md.
"""
import argparse, json, math, os, platform, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

HERE = Path(__file__).resolve().parent
MPP0 = 0.243                       # level 0 of the generated slide: Camelyon16's 40x resolution


def rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def texture(n=8, seed=0):
    "An n*96 px square mosaic of synthetic H&E patches at PCam's scale: the tissue texture."
    from pcam_nb.synth import synth_patches
    x = synth_patches(n * n, seed=seed, split='test')[0]
    return x.reshape(n, n, 96, 96, 3).transpose(0, 2, 1, 3, 4).reshape(n * 96, n * 96, 3)


def make_slide(fname, size=40000, tile=512, levels=6, seed=0, quality=80):
    "Write a size x size pyramidal JPEG TIFF tile by tile: glass, and blobs of tissue covering ~10% of it."
    import tifffile
    tex = texture(seed=seed)
    rng = np.random.default_rng(seed)
    blobs = [(rng.uniform(.2, .8) * size, rng.uniform(.2, .8) * size, rng.uniform(.06, .14) * size,
              rng.uniform(.03, .08) * size) for _ in range(4)]
    glass = np.array([236, 233, 239], np.uint8)

    def tiles(k):
        ds = 2 ** k
        h = w = math.ceil(size / ds)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                Y = (np.arange(y0, y0 + tile) * ds)[:, None].astype(np.float64)
                X = (np.arange(x0, x0 + tile) * ds)[None, :].astype(np.float64)
                m = np.zeros((tile, tile), bool)
                for cx, cy, a, b in blobs: m |= ((X - cx) / a) ** 2 + ((Y - cy) / b) ** 2 < 1
                t = np.empty((tile, tile, 3), np.uint8); t[:] = glass
                if m.any():   # texture at PCam's scale (4 level-0 px per texture px), repeated
                    iy = (Y[:, 0] * MPP0 / 0.972).astype(np.int64) % len(tex)
                    ix = (X[0] * MPP0 / 0.972).astype(np.int64) % len(tex)
                    t[m] = tex[iy][:, ix][m]
                yield t

    with tifffile.TiffWriter(fname, bigtiff=True) as tw:
        for k in range(levels):
            n = math.ceil(size / 2 ** k)
            res = 1e4 / (MPP0 * 2 ** k)
            tw.write(tiles(k), shape=(n, n, 3), dtype=np.uint8, tile=(tile, tile), photometric='rgb',
                     compression='jpeg', compressionargs={'level': quality}, resolution=(res, res), resolutionunit='CENTIMETER',
                     subifds=levels - 1 if k == 0 else None, subfiletype=1 if k else 0)
    return fname


def step_generate(a):
    t, tmp = time.perf_counter(), Path(a.slide).with_suffix('.partial')
    make_slide(tmp, a.size)
    tmp.replace(a.slide)
    print(json.dumps(dict(seconds=time.perf_counter() - t, peak_rss_mb=rss_mb(), bytes=os.path.getsize(a.slide))))


def step_pipeline(a):
    import torch
    from pcam_nb.predict import Predictor
    from pcam_nb.slides import Slide, predict_slide
    pr = Predictor.from_run(a.run, device='cpu')
    base = rss_mb()
    with Slide(a.slide) as s:
        r = predict_slide(pr, s, bs=a.bs, progress=False)
        np.save(a.tissue, r.tissue)
        lw, lh = s.level_dimensions[r.plan.level]
        print(json.dumps(dict(windows=r.windows, cells=int(r.tissue.size), seconds=r.seconds,
                              windows_per_s=r.windows_per_s, peak_rss_mb=rss_mb(), base_rss_mb=base,
                              level=r.plan.level, f=r.plan.f, level_size=[lw, lh], level0=list(s.dimensions),
                              decoded_level0_mb=s.dimensions[0] * s.dimensions[1] * 3 / 2 ** 20,
                              decoded_level_mb=lw * lh * 3 / 2 ** 20, torch_threads=torch.get_num_threads())))


def step_naive(a):
    "The loop a user writes: one read_region and one forward pass per tissue window."
    import torch, tiffslide
    from PIL import Image
    from pcam_nb.runs import load_model, run_config, run_stats
    from pcam_nb.slides import Slide, slide_plan
    model = load_model(a.run).eval()
    mean, std = (torch.tensor(v)[:, None, None] for v in run_stats(run_config(a.run)))
    with Slide(a.slide) as sl: plan = slide_plan(sl)
    s = tiffslide.TiffSlide(a.slide)
    tissue = np.load(a.tissue)
    cells = np.argwhere(tissue)
    cells = cells[np.random.default_rng(0).permutation(len(cells))]
    side = round(96 * plan.f)                          # window side at the level read
    n, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for i, j in cells:
            x0, y0 = (j * 32 - 32) * plan.scale0, (i * 32 - 32) * plan.scale0       # level-0 px
            im = s.read_region((int(x0), int(y0)), plan.level, (side, side)).convert('RGB')
            if side != 96: im = im.resize((96, 96), Image.Resampling.BILINEAR)
            x = (torch.from_numpy(np.asarray(im)).permute(2, 0, 1).float() / 255 - mean) / std
            model(x[None]).softmax(-1)[0, -1].item()
            n += 1
            if n >= a.naive_windows or time.perf_counter() - t0 > a.naive_seconds: break
    dt = time.perf_counter() - t0
    print(json.dumps(dict(windows=n, seconds=dt, windows_per_s=n / dt, peak_rss_mb=rss_mb())))


def sub(step, **kw):
    args = [sys.executable, __file__, '--step', step] + [f'--{k.replace("_", "-")}={v}' for k, v in kw.items()]
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, 'MPLBACKEND': 'Agg'})
    if r.returncode: sys.exit(f"{step} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--run'); ap.add_argument('--size', type=int, default=40000)
    ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--naive-windows', type=int, default=400); ap.add_argument('--naive-seconds', type=float, default=60)
    ap.add_argument('--real', nargs='*', default=[]); ap.add_argument('--work')
    ap.add_argument('--step'); ap.add_argument('--slide'); ap.add_argument('--tissue')
    a = ap.parse_args()
    if a.step: return {'generate': step_generate, 'pipeline': step_pipeline, 'naive': step_naive}[a.step](a)
    work = Path(a.work or tempfile.mkdtemp(prefix='slide-bench-'))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not a.run:
            from pcam_nb.train import pcam_run
            a.run = str(work/'run')
            if not (work/'run'/'model.pth').exists():
                pcam_run('synthetic', 'simple_cnn', epochs=1, out=a.run, limit=512, valid_limit=256, device='cpu', progress=False)
        rows, gens, load0 = [], {}, os.getloadavg()[0]
        slides = []
        for size in (a.size // 2, a.size):
            f = work/f'generated-{size}.tif'
            g = f.with_suffix('.json')                         # generation figures, kept beside a reused slide
            if not f.exists(): g.write_text(json.dumps(sub('generate', slide=f, size=size)))
            gens[size] = json.loads(g.read_text())
            slides.append((f'generated {size:,} x {size:,} px, {MPP0} um/px', f))
        slides += [(Path(p).name, Path(p)) for p in a.real]
        for name, f in slides:
            tis = work/f'{Path(f).stem}-tissue.npy'
            p = sub('pipeline', run=a.run, slide=f, tissue=tis, bs=a.bs)
            nv = sub('naive', run=a.run, slide=f, tissue=tis, naive_windows=a.naive_windows, naive_seconds=a.naive_seconds)
            rows.append(dict(slide=name, **{f'pipeline_{k}': v for k, v in p.items()}, **{f'naive_{k}': v for k, v in nv.items()},
                             speedup=p['windows_per_s'] / nv['windows_per_s']))
            print(name, f"pipeline {p['windows_per_s']:.0f}/s, naive {nv['windows_per_s']:.0f}/s, "
                        f"x{rows[-1]['speedup']:.1f}, peak RSS {p['peak_rss_mb']:.0f} MB", flush=True)
        import torch
        hw = f"{os.cpu_count()}-core {platform.machine().replace('_', '-')} CPU, torch {torch.__version__.split('+')[0]}"
        cmd = 'python benchmarks/slide_speed.py ' + ' '.join(
            [f'--size {a.size}', f'--bs {a.bs}', f'--naive-windows {a.naive_windows}'] + (['--real ' + ' '.join(
                '$WSI_SAMPLE/' + Path(p).name for p in a.real)] if a.real else []))
        (HERE/'slide_speed.json').write_text(json.dumps(dict(hardware=hw, command=cmd, generated=gens, rows=rows), indent=1))
        md = [f"# Whole-slide inference: pipeline against a per-window loop, and memory", "",
              f"{hw}; {rows[0]['pipeline_torch_threads']} torch threads; the simple_cnn model of the notebooks, no TTA, "
              f"batch size {a.bs}.", "", f"Command: `{cmd}`", "",
              "Tissue windows per second, each run in its own process: the pipeline (`predict_slide`: tissue from the "
              "thumbnail, one read per chunk of 32 x 32 cells, windows cut from it, batches through `eval_dl` / "
              "`predict_logits`, the next chunks read in a thread meanwhile) against the naive loop over the same tissue "
              f"windows in random order (`read_region` per window at the same level, resized when needed, one forward "
              f"pass per window; at most {a.naive_windows} windows or {a.naive_seconds:g} s).", "",
              "| slide | level read | tissue windows | pipeline windows/s | naive windows/s | speed-up | peak RSS (MB) | RSS before the slide (MB) | level read, decoded (MB) | level 0, decoded (MB) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lv = f"{r['pipeline_level']} ({r['pipeline_level_size'][0]:,} x {r['pipeline_level_size'][1]:,}" + (
                f", resampled 1/{r['pipeline_f']:.2f})" if r['pipeline_f'] != 1 else ')')
            md.append(f"| {r['slide']} | {lv} | {r['pipeline_windows']:,} | {r['pipeline_windows_per_s']:.0f} | "
                      f"{r['naive_windows_per_s']:.0f} | {r['speedup']:.1f}x | {r['pipeline_peak_rss_mb']:.0f} | "
                      f"{r['pipeline_base_rss_mb']:.0f} | {r['pipeline_decoded_level_mb']:,.0f} | {r['pipeline_decoded_level0_mb']:,.0f} |")
        if gens:
            md += ["", "Generating the slides tile by tile (tifffile, JPEG tiles): " + "; ".join(
                f"{s:,} px: {g['seconds']:.0f} s, {g['bytes'] / 2 ** 20:.0f} MB file, peak RSS {g['peak_rss_mb']:.0f} MB"
                for s, g in gens.items()) + "."]
        md += ["", "The RSS before the slide is the process with Python, torch, fastai and the model loaded, before "
               "anything is read; the pipeline adds the thumbnail, the chunks in flight, one batch of windows and its "
               "activations, and the map, whatever the slide's size.", "",
               f"1-minute load average: {load0:.1f} before the run, {os.getloadavg()[0]:.1f} after."]
        (HERE/'slide_speed.md').write_text('\n'.join(md) + '\n')
        print('\n'.join(md))
    finally:
        if not a.work: shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
