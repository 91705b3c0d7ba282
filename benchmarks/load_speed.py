"""Loading speed of a whole PCam split into memory, side by side with `cat file > /dev/null`.

    python benchmarks/load_speed.py [--n 131072] [--dest data/bench-load] [--repeats 5]

Writes a split of N random 96 x 96 x 3 uint8 patches with `PCamH5Writer` (once; kept under data/, which git ignores;
131,072 patches = 3.6 GB, half of PCam's train split, to fit beside other work in 24 GB of RAM), then in ONE process,
alternating the methods in every round, times:

- `cat x.h5 > /dev/null`: the physical reference (reads the file through the page cache, stores nothing);
- `read_pcam_h5(mode='memory')`: the contiguous reader (O_DIRECT into fresh anonymous memory when the file is not cached);
- the previous reader: numpy's `np.empty` (huge pages where the kernel allows) filled by 8 threads of buffered 8 MB preadv;
- `read_pcam_h5(mode='memmap')` + one full pass over the data (`max`), which keeps the data in the page cache only;
- fresh memory only: allocating and touching as many bytes, no I/O (the floor under any read into a new array);
- the chunked+gzip path on a 16,384-patch copy.

Drops the page cache before each read (needs root and a writable /proc/sys/vm/drop_caches) and says whether it could;
checks that the memory read equals h5py's read of 192 rows. Writes benchmarks/load_speed.json and benchmarks/load_speed.md.
"""
import argparse, gc, json, mmap, os, platform, statistics, subprocess, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import h5py, numpy as np

from pcam_nb.data import PCamH5Writer, read_pcam_h5, pcam_h5_paths, write_pcam_h5, data_dir

HERE = Path(__file__).resolve().parent


def drop_caches():
    return subprocess.run(['sh', '-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'], capture_output=True).returncode == 0


def timed(f):
    t = time.perf_counter(); out = f(); dt = time.perf_counter() - t
    del out; gc.collect()   # no mapping of the file may outlive its round: mapped pages survive drop_caches
    return dt


def make_split(dest, n, block=4096):
    "N random patches in the official layout (random bytes: no storage layer can compress or deduplicate them)."
    rng = np.random.default_rng(0)
    with PCamH5Writer(dest, 'train', n) as w:
        for s in range(0, n, block):
            m = min(block, n - s)
            w.write(s, rng.integers(0, 256, (m, 96, 96, 3), dtype=np.uint8), rng.integers(0, 2, m))


def previous_reader(path, block=1 << 23, threads=8):
    "The reader before this version: np.empty, then 8 threads of buffered 8 MB preadv (page cache + a copy)."
    with h5py.File(path, 'r') as f: off, shape = f['x'].id.get_offset(), f['x'].shape
    out = np.empty(shape, np.uint8); buf, n = memoryview(out.reshape(-1)), out.size
    fd = os.open(path, os.O_RDONLY)
    def one(s):
        mv, got = buf[s:s + block], 0
        while got < len(mv): got += os.preadv(fd, [mv[got:]], off + s + got)
    with ThreadPoolExecutor(threads) as ex: list(ex.map(one, range(0, n, block)))
    os.close(fd)
    return out


def fresh_memory(nbytes, threads=8):
    "Allocate `nbytes` of anonymous memory and touch every page, in parallel threads: the cost of a new array alone."
    mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    a = np.frombuffer(mm, np.uint8); step = -(-nbytes // threads // 4096) * 4096
    def one(i): a[i * step:(i + 1) * step:4096] = 1
    with ThreadPoolExecutor(threads) as ex: list(ex.map(one, range(threads)))
    return a


def hardware():
    model = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
    ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
    return f"{os.cpu_count()}-core {platform.machine().replace('_', '-')} CPU ({model}), {ram:.0f} GB RAM"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=131072)
    ap.add_argument('--dest', default=str(data_dir()/'bench-load'))
    ap.add_argument('--repeats', type=int, default=5)
    a = ap.parse_args()
    dest = Path(a.dest); xp = pcam_h5_paths(dest, 'train')[0]
    if not xp.exists() or read_pcam_h5(dest, 'train', 'lazy').x.shape[0] != a.n: make_split(dest, a.n)
    mb = xp.stat().st_size / 1e6
    nbytes = read_pcam_h5(dest, 'train', 'lazy').x.size
    gz = dest/'gzip'
    if not pcam_h5_paths(gz, 'train')[0].exists():
        write_pcam_h5(read_pcam_h5(dest, 'train', 'memmap').subset(np.arange(16384)), gz, 'train', compression='gzip')
    gz_mb = pcam_h5_paths(gz, 'train')[0].stat().st_size / 1e6

    p = read_pcam_h5(dest, 'train', 'memory')                 # correctness first: against h5py on 192 rows
    rows = np.r_[0:64, a.n - 64:a.n, np.sort(np.random.default_rng(1).choice(a.n, 64, replace=False))]
    with h5py.File(xp) as f: assert (p.x[rows] == f['x'][np.unique(rows)][np.searchsorted(np.unique(rows), rows)]).all()
    del p

    cold = drop_caches()
    methods = {
        'cat x.h5 > /dev/null': (mb, lambda: subprocess.run(['sh', '-c', f'cat "{xp}" > /dev/null'], check=True)),
        "read_pcam_h5(mode='memory')": (mb, lambda: read_pcam_h5(dest, 'train', 'memory')),
        'previous reader (np.empty + buffered preadv)': (mb, lambda: previous_reader(xp)),
        "read_pcam_h5(mode='memmap') + full pass": (mb, lambda: read_pcam_h5(dest, 'train', 'memmap').x.max()),
        'fresh memory only (allocate + touch, no I/O)': (nbytes / 1e6, lambda: fresh_memory(nbytes)),
        "read_pcam_h5(mode='memory'), gzip+chunked, 16,384 patches": (gz_mb, lambda: read_pcam_h5(gz, 'train', 'memory')),
    }
    secs = {k: [] for k in methods}
    for _ in range(a.repeats):
        for k, (size, f) in methods.items():
            if cold: drop_caches()
            secs[k].append(timed(f))
    res = dict(hardware=hardware(), host=platform.node(), python=platform.python_version(), kernel=platform.release(),
               file=str(xp), file_MB=round(mb), n=a.n, repeats=a.repeats, page_cache_dropped=cold,
               load_average=os.getloadavg(),
               results=[dict(method=k, MB=round(methods[k][0]), seconds=[round(s, 2) for s in v],
                             best_MB_per_s=round(methods[k][0] / min(v)), median_MB_per_s=round(methods[k][0] / statistics.median(v)))
                        for k, v in secs.items()])
    ref = res['results'][0]
    for r in res['results']:
        r['vs_cat_best'] = round(r['best_MB_per_s'] / ref['best_MB_per_s'], 2)
        r['vs_cat_median'] = round(r['median_MB_per_s'] / ref['median_MB_per_s'], 2)
    (HERE/'load_speed.json').write_text(json.dumps(res, indent=1) + '\n')
    cache = 'page cache dropped before every read (cold reads)' if cold else 'page cache NOT dropped (no permission): warm reads'
    md = ["# Loading a whole PCam split into memory\n",
          f"{res['hardware']}, Linux {res['kernel']}, Python {res['python']}: {a.n:,} random 96x96x3 uint8 patches "
          f"({mb:,.0f} MB, contiguous); {cache}; {a.repeats} rounds, the methods alternated within each round in one process; "
          f"load average {res['load_average'][0]:.1f} at the end (the machine is shared).\n",
          f"Command: `python benchmarks/load_speed.py --n {a.n} --repeats {a.repeats}` (or `make bench-load`).\n",
          "| method | MB | seconds (each round) | MB/s best | MB/s median | vs cat, best | vs cat, median |",
          "|---|---|---|---|---|---|---|"]
    for r in res['results']:
        md.append(f"| {r['method']} | {r['MB']:,} | {', '.join(map(str, r['seconds']))} | {r['best_MB_per_s']:,} | "
                  f"{r['median_MB_per_s']:,} | {r['vs_cat_best']} | {r['vs_cat_median']} |")
    md += ["", "Reading the table. `cat` stores nothing: it reads the file through the page cache into one small buffer. "
           "A read into memory must also fault in and zero a fresh page for every 4 KB of the array; the row *fresh memory "
           "only* is that cost alone, with no I/O, and on this machine it is about as large as the reading itself. The "
           "previous reader paid it on top of buffered reads (every byte into the page cache, then copied into the array, "
           "huge pages that fault more slowly here); `read_pcam_h5(mode='memory')` now reads with `O_DIRECT` straight into "
           "the array, so that its own faults overlap the device's reads and nothing else is added. `memmap` + a full pass "
           "allocates nothing (its pages are the page cache's), which is why it can beat `cat`: use `mode='memmap'` where a "
           "private copy in memory is not needed. Best and median of the rounds are both given because the machine is "
           "shared: `cat` swings by a factor of two from round to round."]
    (HERE/'load_speed.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))


if __name__ == '__main__':
    main()
