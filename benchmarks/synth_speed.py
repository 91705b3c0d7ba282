"""Speed of the synthetic PCam generator (pcam_nb.synth): patches rendered into a reused buffer with 1 and 2 worker
threads (best of two runs), the CPU time per patch, and `make_synthetic` writing a train split to disk.

    python benchmarks/synth_speed.py [--n 16384] [--disk 32768]
"""
import argparse, os, platform, tempfile, time
import numpy as np, pandas as pd, torch
from pcam_nb.synth import synth_patches, make_synthetic, BLOCK


def main(n:int=16384, disk:int=32768):
    print(f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} before")
    buf = np.empty((n, 96, 96, 3), np.uint8)
    synth_patches(BLOCK, out=buf[:BLOCK])                       # warm up: builds the sprite banks and textures
    speed = {}
    for w in (1, 2):
        runs = []
        for _ in range(2):
            t0, c0 = time.perf_counter(), time.process_time()
            synth_patches(n, seed=0, out=buf, workers=w)
            runs.append((time.perf_counter() - t0, time.process_time() - c0))
        dt, cpu = min(runs)
        speed[f'{w} worker(s)'] = dict(patches_per_s=round(n / dt), cpu_ms_per_patch=round(1000 * cpu / n, 3))
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        make_synthetic(d, n_train=disk, n_valid=0, n_test=0, progress=False)
        speed[f'make_synthetic, {disk} to disk'] = dict(patches_per_s=round(disk / (time.perf_counter() - t0)))
    print(f"load average {os.getloadavg()[0]:.1f} after")
    print(pd.DataFrame(speed).T.to_markdown())


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=16384, help='patches per timed run')
    ap.add_argument('--disk', type=int, default=32768, help='patches written by make_synthetic')
    a = ap.parse_args()
    main(a.n, a.disk)
