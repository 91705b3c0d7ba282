"""Loading speed of a full-size PCam train split (262,144 x 96 x 96 x 3, 7.2 GB) against `cat file > /dev/null`.

    python benchmarks/load_speed.py [--n 262144] [--dest data/bench] [--repeats 2]

Generates the split with pcam_synth (once; kept under data/, which git ignores), then in ONE process, alternating,
times: `cat x.h5 > /dev/null` (the physical reference), read_pcam_h5 mode='memory' (contiguous fast path),
mode='memmap' + one full pass over the data, and the chunked+gzip path on a 32,768-patch copy. Tries to drop the
page cache before each read (needs root and a writable /proc/sys/vm/drop_caches); says whether it could.
Writes benchmarks/load_speed.json and benchmarks/load_speed.md.
"""
import argparse, json, os, platform, subprocess, time
from pathlib import Path
import numpy as np

from pcam_nb.data import read_pcam_h5, pcam_h5_paths, write_pcam_h5, data_dir
from pcam_nb.synth import make_synthetic

HERE = Path(__file__).resolve().parent


def drop_caches():
    r = subprocess.run(['sh', '-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'], capture_output=True)
    return r.returncode == 0


def timed(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=262144)
    ap.add_argument('--dest', default=str(data_dir()/'bench'))
    ap.add_argument('--repeats', type=int, default=2)
    a = ap.parse_args()
    dest = Path(a.dest)
    t_gen = None
    if not pcam_h5_paths(dest, 'train')[0].exists():
        t_gen = timed(lambda: make_synthetic(dest, n_train=a.n, n_valid=256, n_test=256, seed=0))
    xp = pcam_h5_paths(dest, 'train')[0]
    mb = xp.stat().st_size / 1e6
    gz = dest/'gzip'
    if not pcam_h5_paths(gz, 'train')[0].exists():
        small = read_pcam_h5(dest, 'train', 'memmap').subset(np.arange(32768))
        write_pcam_h5(small, gz, 'train', compression='gzip')
    gz_mb = pcam_h5_paths(gz, 'train')[0].stat().st_size / 1e6
    cold = drop_caches()
    methods = {
        'cat x.h5 > /dev/null': (mb, lambda: subprocess.run(['sh', '-c', f'cat "{xp}" > /dev/null'], check=True)),
        "read_pcam_h5(mode='memory')": (mb, lambda: read_pcam_h5(dest, 'train', 'memory')),
        "read_pcam_h5(mode='memmap') + full pass": (mb, lambda: read_pcam_h5(dest, 'train', 'memmap').x.max()),
        "read_pcam_h5(mode='memory'), gzip+chunked, 32,768 patches": (gz_mb, lambda: read_pcam_h5(gz, 'train', 'memory')),
    }
    rows = {k: [] for k in methods}
    for _ in range(a.repeats):
        for k, (size, f) in methods.items():
            if cold: drop_caches()
            rows[k].append(timed(f))
    res = dict(machine=dict(host=platform.node(), cpus=os.cpu_count(), python=platform.python_version()),
               file=str(xp), file_MB=round(mb), n=a.n, page_cache_dropped=cold, generate_seconds=t_gen,
               results=[dict(method=k, MB=round(methods[k][0]), seconds=[round(s, 2) for s in v],
                             best_MB_per_s=round(methods[k][0] / min(v))) for k, v in rows.items()])
    ref = res['results'][0]['best_MB_per_s']
    for r in res['results']: r['vs_cat'] = round(r['best_MB_per_s'] / ref, 2)
    (HERE/'load_speed.json').write_text(json.dumps(res, indent=1))
    cache = 'page cache dropped before each read (cold)' if cold else 'page cache NOT dropped (no permission): warm reads'
    md = [f"# Loading a full-size PCam train split\n",
          f"{a.n:,} patches of 96x96x3 uint8 ({mb:,.0f} MB) written by `pcam_synth`, on {res['machine']['host']} "
          f"({res['machine']['cpus']} cores); {cache}; best of {a.repeats}, methods alternated in one process.\n",
          f"Command: `python benchmarks/load_speed.py --n {a.n}` (or `make bench-load`).\n",
          "| method | MB | seconds (each run) | MB/s (best) | vs cat |", "|---|---|---|---|---|"]
    for r in res['results']:
        md.append(f"| {r['method']} | {r['MB']:,} | {', '.join(map(str, r['seconds']))} | {r['best_MB_per_s']:,} | {r['vs_cat']} |")
    if t_gen: md.append(f"\nGenerating the split took {t_gen:.0f} s ({a.n / t_gen:,.0f} patches/s).")
    (HERE/'load_speed.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))


if __name__ == '__main__':
    main()
