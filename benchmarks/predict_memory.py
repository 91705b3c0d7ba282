"""Peak memory of a tumour heatmap over a large generated image (pcam_nb.predict.predict_heatmap), with a trivial model
so that the pipeline, not the network, is measured: the extra resident memory above the process's size before the call.

    python benchmarks/predict_memory.py [--side 8000] [--tissue 160] [--bs 64] [--no-tta] [--fixed-mmap]

--fixed-mmap re-runs itself with glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_=131072), so that the resident size
counts what is allocated rather than what the allocator keeps back after a free. Linux only (/proc/self/clear_refs).
"""
import argparse, os, subprocess, sys, time
import numpy as np, torch


def kb(key): return int(open('/proc/self/status').read().split(key + ':')[1].split()[0]) * 1024


def main(side=8000, tissue=160, bs=64, tta=True):
    from pcam_nb.predict import Predictor, predict_heatmap
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    pr = Predictor(model, ([0.5] * 3, [0.25] * 3), ['normal', 'tumour'], 96, 'cpu')
    img = np.full((side, side, 3), 240, np.uint8); img[:, :tissue] = (200, 80, 160)   # a strip of tissue, the rest glass
    predict_heatmap(pr, img[:400, :400], progress=False)                             # warm up
    open('/proc/self/clear_refs', 'w').write('5')                                    # the peak starts again from here
    base, t = kb('VmRSS'), time.perf_counter()
    hm = predict_heatmap(pr, img, tta=tta, bs=bs, progress=False, verbose=True)
    print(f"{side}x{side} image ({img.nbytes / 1e6:.0f} MB), {int((~np.isnan(hm)).sum()):,} tissue cells, "
          f"{'D4 TTA' if tta else 'no TTA'}, bs {bs}: {(kb('VmHWM') - base) / 1e6:.0f} MB extra at the peak, "
          f"{time.perf_counter() - t:.1f} s")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--side', type=int, default=8000); ap.add_argument('--tissue', type=int, default=160)
    ap.add_argument('--bs', type=int, default=64); ap.add_argument('--no-tta', action='store_true')
    ap.add_argument('--fixed-mmap', action='store_true')
    a = ap.parse_args()
    if a.fixed_mmap and os.environ.get('MALLOC_MMAP_THRESHOLD_') != '131072':
        args = [x for x in sys.argv[1:] if x != '--fixed-mmap']
        sys.exit(subprocess.run([sys.executable, __file__, *args], env={**os.environ, 'MALLOC_MMAP_THRESHOLD_': '131072'}).returncode)
    main(a.side, a.tissue, a.bs, not a.no_tta)
