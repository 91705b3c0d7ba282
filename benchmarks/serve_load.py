"""A bounded load test of `pcam_serve` on the loopback interface: throughput, latency and errors, alone and at concurrency.

    python benchmarks/serve_load.py [--run RUN] [--requests 2000] [--concurrency 32] [--max-seconds 300] [--rounds 4]
                                    [--modes tta,no-tta] [--threads N]

For each mode (D4 TTA, the service's default, and one view), starts `pcam_serve RUN` on 127.0.0.1 (a free port),
then sends single-patch POST /v1/predict requests (96x96 PNG synthetic patches) with httpx, in `--rounds` rounds that
alternate one client at a time (a tenth of the requests, the baseline) with `--concurrency` clients in flight, so
that both see the same machine; each phase stops at its count or at its share of `--max-seconds`. Records
requests/s, p50/p90/p99 latency, errors (any non-200 answer or failed connection) and the mean model batch from
/metrics, summed over the rounds. Without --run, trains the small synthetic run the notebooks use. Writes
benchmarks/serve_load.json and benchmarks/serve_load.md.
"""
import argparse, asyncio, io, json, os, platform, re, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

HERE = Path(__file__).resolve().parent


def metric(text, name):
    m = re.search(rf'^{name} ([0-9.e+-]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def phase(url, bodies, n, conc, max_s):
    import httpx
    lat, errors, sent = [], 0, 0
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        m0 = (await c.get('/metrics')).text
        t0 = time.perf_counter()
        async def worker():
            nonlocal errors, sent
            while sent < n and time.perf_counter() - t0 < max_s:
                i = sent; sent += 1
                t = time.perf_counter()
                try:
                    r = await c.post('/v1/predict', files=[('files', (f'{i}.png', bodies[i % len(bodies)], 'image/png'))])
                    ok = r.status_code == 200
                except Exception: ok = False
                lat.append(time.perf_counter() - t)
                errors += not ok
        await asyncio.gather(*[worker() for _ in range(conc)])
        dt = time.perf_counter() - t0
        m1 = (await c.get('/metrics')).text
    model_s = metric(m1, 'pcam_batch_seconds_sum') - metric(m0, 'pcam_batch_seconds_sum')
    nb = metric(m1, 'pcam_batch_patches_count') - metric(m0, 'pcam_batch_patches_count')
    sb = metric(m1, 'pcam_batch_patches_sum') - metric(m0, 'pcam_batch_patches_sum')
    return dict(lat=lat, errors=errors, seconds=dt, model_s=model_s, batches=nb, patches=sb, capped=len(lat) < n)


def summary(conc, parts):
    "One row for the phases `parts` of one concurrency, summed over the rounds."
    lat = np.concatenate([p['lat'] for p in parts]); dt = sum(p['seconds'] for p in parts)
    nb, sb = sum(p['batches'] for p in parts), sum(p['patches'] for p in parts)
    q = np.percentile(lat * 1000, [50, 90, 99])
    return dict(concurrency=conc, requests=len(lat), errors=sum(p['errors'] for p in parts), seconds=dt,
                requests_per_s=len(lat) / dt, p50_ms=q[0], p90_ms=q[1], p99_ms=q[2], mean_batch=sb / nb if nb else None,
                model_share=sum(p['model_s'] for p in parts) / dt, capped=any(p['capped'] for p in parts),
                rounds_requests_per_s=[len(p['lat']) / p['seconds'] for p in parts])


def serve_mode(a, run, bodies, tta):
    "Start pcam_serve on a free port, run the rounds, stop it: (rows, healthy afterwards, the model's torch threads)."
    import httpx
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    url = f'http://127.0.0.1:{port}'
    cmd = [sys.executable, '-c', "import sys; sys.argv[0] = 'pcam_serve'; from pcam_nb.serve import pcam_serve; pcam_serve()",
           run, '--port', str(port), '--device', 'cpu'] + ([] if tta else ['--no-tta']) + (
           ['--threads', str(a.threads)] if a.threads else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while True:
            try:
                if httpx.get(url + '/health', timeout=2).status_code == 200: break
            except httpx.HTTPError: pass
            if proc.poll() is not None or time.time() - t0 > 300: sys.exit('pcam_serve did not start')
            time.sleep(0.5)
        threads = httpx.get(url + '/v1/model', timeout=5).json()['batching']['torch_threads']
        asyncio.run(phase(url, bodies, 20, 4, 60))                                   # warm-up, not recorded
        one, many, share = [], [], a.max_seconds / a.rounds
        for _ in range(a.rounds):
            one.append(asyncio.run(phase(url, bodies, max(50, a.requests // 10) // a.rounds, 1, share / 4)))
            many.append(asyncio.run(phase(url, bodies, a.requests // a.rounds, a.concurrency, share)))
        healthy = httpx.get(url + '/health', timeout=5).json()['status'] == 'ok'
    finally:
        proc.terminate(); proc.wait(30)
    return [summary(1, one), summary(a.concurrency, many)], healthy, threads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--run'); ap.add_argument('--requests', type=int, default=2000)
    ap.add_argument('--concurrency', type=int, default=32); ap.add_argument('--max-seconds', type=float, default=300)
    ap.add_argument('--rounds', type=int, default=4)
    ap.add_argument('--modes', default='tta,no-tta', help='comma-separated: tta (the default of pcam_serve), no-tta')
    ap.add_argument('--threads', type=int, help="the server's --threads (default: pcam_serve's, one per core less one)")
    a = ap.parse_args()
    import httpx
    from PIL import Image
    from pcam_nb.synth import synth_patches
    work = Path(tempfile.mkdtemp(prefix='serve-load-'))
    try:
        if not a.run:
            from pcam_nb.train import pcam_run
            a.run = str(work/'run')
            pcam_run('synthetic', 'simple_cnn', epochs=1, out=a.run, limit=512, valid_limit=256, device='cpu', progress=False)
        bodies = []
        for x in synth_patches(64, seed=11, split='test')[0]:
            b = io.BytesIO(); Image.fromarray(x).save(b, 'PNG'); bodies.append(b.getvalue())
        load0 = os.getloadavg()[0]
        modes = {m: serve_mode(a, a.run, bodies, m == 'tta') for m in a.modes.split(',')}
        load1 = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import torch
    hw = f"{os.cpu_count()}-core {platform.machine().replace('_', '-')} CPU, torch {torch.__version__.split('+')[0]}"
    cmd = (f"python benchmarks/serve_load.py --requests {a.requests} --concurrency {a.concurrency} "
           f"--max-seconds {a.max_seconds:g} --rounds {a.rounds} --modes {a.modes}") + (f' --threads {a.threads}' if a.threads else '')
    (HERE/'serve_load.json').write_text(json.dumps(dict(hardware=hw, command=cmd, load_average=[load0, load1], modes={
        m: dict(torch_threads=t, healthy_after=h, phases=rows) for m, (rows, h, t) in modes.items()}), indent=1))
    md = ["# Load test of pcam_serve (loopback)", "",
          f"{hw}; server and client on the same {os.cpu_count()} cores; the simple_cnn model of the notebooks, batching up "
          f"to 64 patches or 5 ms (the defaults); 1-minute load average {load0:.1f} before the run, {load1:.1f} after.", "",
          f"Command: `{cmd}`", "",
          f"Single-patch `POST /v1/predict` requests (96x96 PNG), one client at a time and {a.concurrency} in flight, "
          f"in {a.rounds} alternating rounds (so that both see the same machine), summed:", ""]
    for m, (rows, healthy, threads) in modes.items():
        md += [f"**{'D4 TTA (8 views per patch, the default)' if m == 'tta' else 'one view (--no-tta)'}**, "
               f"{threads} torch thread(s) for the model:", "",
               "| concurrency | requests | errors | requests/s | p50 (ms) | p90 (ms) | p99 (ms) | mean model batch (patches) | model busy |",
               "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            md.append(f"| {r['concurrency']} | {r['requests']:,}{' (time cap)' if r['capped'] else ''} | {r['errors']} | "
                      f"{r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p90_ms']:.0f} | {r['p99_ms']:.0f} | "
                      f"{r['mean_batch']:.1f} | {r['model_share']:.0%} |")
        g = rows[1]['requests_per_s'] / rows[0]['requests_per_s']
        per = ', '.join(f"{x / y:.1f}x" for x, y in zip(rows[1]['rounds_requests_per_s'], rows[0]['rounds_requests_per_s']))
        md += ["", f"{a.concurrency} clients get {g:.2f}x the requests per second of one (by round: {per}); /health "
               f"answered {'ok' if healthy else 'NOT ok'} afterwards.", ""]
    (HERE/'serve_load.md').write_text('\n'.join(md))
    print('\n'.join(md))


if __name__ == '__main__':
    main()
