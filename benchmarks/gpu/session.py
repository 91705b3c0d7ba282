#!/usr/bin/env python3
"""One command for every device call of a GPU session: it runs the GPU measurements still missing, most important
first, inside the call's time, and packs what they wrote into `$OUT/results.tgz` (unpack it in the repo root here).

    source benchmarks/gpu/setup.sh || exit 1; python3 benchmarks/gpu/session.py

Stages, each skipped once its results are in the working tree (carried from here) or on this warm machine:

| stage | command | issue | needs |
|---|---|---|---|
| train | `bash benchmarks/train_sample.sh`: vgg16_bn, resnet18, simple_cnn, then `pcam_evaluate --tta` | 3, 4 | sample |
| bench | `pcam_bench --json benchmarks/bench.json --profile runs/bench-profile` (data/bench generated first) | 5 | - |
| study | `benchmarks/equivariance_study.py --data $H5 --deadline T` | 6 | sample |

With the sample on this machine the order is train, bench, study; without it (the first call carries only part 1 of
the sample) bench runs alone. Every stage ends before `T0 + --call-s` (T0: `$PCAM_KIT_T0`, which setup.sh sets when
it is sourced at the start of the call): a stage that needs more time than is left is not started, and one still
running at the end is stopped (its process group gets SIGTERM). Each stage goes on where it stopped in the next call:
train_sample.sh keeps finished runs and resumes a killed one from its checkpoint, the study keeps a record per run
and starts a run only if it is expected to end in time, the bench data is generated once. Runs and data survive only
on a warm machine; the records the study needs travel back in results.tgz, and from the working tree to the next call.

Writes to `--out` (default `$OUT`): results.tgz (summaries, run records, bench JSON and profile, study records),
session.log (everything the stages printed) and status.json (each stage's state and what to do next).
`--smoke` runs the same stages on a CPU with tiny data, models and step counts (the local test of this file):
its figures are not measurements. Standard library only; the stages run with `$PY` (setup.sh's interpreter).
"""
from __future__ import annotations
import argparse, json, os, re, signal, subprocess, sys, tarfile, threading, time
from pathlib import Path

ARCHS = 'vgg16_bn resnet18 simple_cnn'
BENCH_ARCHS = ('vgg16_bn', 'resnet18')
BENCH_N = (262144, 32768)         # PCam's train and valid sizes
SMOKE = dict(archs='simple_cnn', train_args='--epochs 1 --bs 64', n=(1024, 256),
             bench=['--archs', 'simple_cnn', '--bs', '64', '--steps', '4', '--warmup', '2', '--per-item-steps', '2',
                    '--workers', '0', '--tta-n', '256', '--no-compile'],
             study=['--smoke', '--families', 'gcnn_c4,baseline_noaug', '--trials', '1',
                    '--runs', 'runs/session-smoke/equivariance', '--results', 'runs/session-smoke/equivariance'])
MAX_TGZ = 15 << 20                # what one file of $OUT may be (16 MiB), with room to spare


def log(msg: str, f=None):
    line = f"[session {time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if f: f.write(line + '\n'); f.flush()


def _json(p: Path):
    try: return json.loads(p.read_text())
    except (OSError, ValueError): return None


def train_state(root: Path, archs: list[str]) -> tuple[bool, str]:
    "(done, detail): done when benchmarks/eval_sample.md has a row for every architecture's run."
    md = root/'benchmarks'/'eval_sample.md'
    rows = set(re.findall(r'^\| (sample-\S+) \|', md.read_text(), re.M)) if md.exists() else set()
    missing = [a for a in archs if f'sample-{a}' not in rows]
    return not missing, ('evaluated: ' + ', '.join(a for a in archs if a not in missing) if rows else 'nothing yet') + \
        (f"; to do: {', '.join(missing)}" if missing else '')


def bench_state(root: Path, archs=BENCH_ARCHS, smoke: bool = False) -> tuple[bool, str]:
    "(done, detail): done when benchmarks/bench.json holds every arch, the epoch, load and TTA times, from a GPU."
    r = _json(root/'benchmarks'/'bench.json')
    if not r: return False, 'no benchmarks/bench.json'
    dev = r.get('env', {}).get('device', '')
    if not smoke and not dev.startswith('cuda'): return False, f'benchmarks/bench.json is from {dev!r}, not a GPU'
    missing = [k for k in ('epoch', 'load', 'tta') if k not in r] + [a for a in archs if a not in r.get('archs', {})]
    return not missing, f"benchmarks/bench.json from {r['env'].get('device_name')}" + (f", lacks {missing}" if missing else '')


def study_state(root: Path, smoke: bool = False) -> tuple[bool, str]:
    "(done, detail): done when the study's JSON says complete; else how many run records there are."
    res = 'runs/session-smoke/equivariance' if smoke else 'results/equivariance'  # SMOKE['study'] writes there
    r = _json(root/f'{res}.json')
    recs = root/(f'{res}/records' if smoke else f'{res}_runs')
    n = len(list(recs.rglob('*.json'))) if recs.is_dir() else 0
    if r and r.get('complete') and bool(r.get('smoke')) == smoke: return True, f'{res}.md complete ({n} runs)'
    return False, f'{n} run records so far'


def run_stage(cmd, env: dict, until: float, logf, cwd=None) -> int:
    "Run `cmd` (its own process group), copying its output to stdout and `logf`; stop the group at time `until`."
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, bufsize=1)
    stopped = threading.Event()
    def stop():
        stopped.set()
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 0)):
            try: os.killpg(p.pid, sig)
            except ProcessLookupError: return
            try: p.wait(wait)
            except subprocess.TimeoutExpired: continue
            return
    timer = threading.Timer(max(0.0, until - time.time()), stop)
    timer.start()
    try:
        for line in p.stdout:
            sys.stdout.write(line); logf.write(line)
        rc = p.wait()
    finally:
        timer.cancel()
    logf.flush()
    if stopped.is_set():
        try: os.killpg(p.pid, signal.SIGKILL)  # whatever the group left behind
        except ProcessLookupError: pass
        return -999
    return rc


def pack(root: Path, out: Path, smoke: bool = False) -> Path:
    "results.tgz of what the stages wrote (paths relative to the repo root); the profiler trace only if it fits."
    pats = ['benchmarks/bench.json', 'benchmarks/bench.md', 'benchmarks/train_sample.md', 'benchmarks/eval_sample.md',
            'runs/bench-profile/top_ops.txt', 'runs/bench-profile/phases.json', 'runs/sample-*/config.json', 'runs/sample-*/metrics.json',
            'runs/sample-*/history.csv', 'runs/sample-*/*.png', 'runs/sample-*/eval_valid.json',
            'runs/sample-*/eval_valid/*']
    pats += (['runs/session-smoke/equivariance.*', 'runs/session-smoke/equivariance/records/**/*.json'] if smoke else
             ['results/equivariance.md', 'results/equivariance.json', 'results/equivariance.png',
              'results/equivariance_runs/**/*.json'])
    files = sorted({p for pat in pats for p in root.glob(pat) if p.is_file()})
    dest = out/'results.tgz'
    for trace in (True, False):
        extra = [root/'runs/bench-profile/trace.json.gz'] if trace and (root/'runs/bench-profile/trace.json.gz').exists() else []
        with tarfile.open(dest.with_suffix('.tmp'), 'w:gz') as t:
            for p in files + extra: t.add(p, arcname=p.relative_to(root).as_posix())
        if dest.with_suffix('.tmp').stat().st_size <= MAX_TGZ or not extra: break
    os.replace(dest.with_suffix('.tmp'), dest)
    return dest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--call-s', type=float, default=570, help="seconds from the call's start (T0) by which to be done")
    ap.add_argument('--out', default=os.environ.get('OUT'), help='where results.tgz, session.log, status.json go ($OUT)')
    ap.add_argument('--stages', default='train,bench,study', help='which stages may run (comma-separated)')
    ap.add_argument('--bench-min-s', type=float, default=360, help='start the bench only with this much time left')
    ap.add_argument('--smoke', action='store_true', help='tiny everything, on a CPU: checks this file, measures nothing')
    a = ap.parse_args(argv)
    root = Path.cwd()
    if not (root/'settings.ini').exists() or not (root/'pcam_nb').is_dir(): sys.exit('session.py: run it from the repo root')
    if not a.out: sys.exit('session.py: no --out and no $OUT: say where the results go')
    t0 = float(os.environ.get('PCAM_KIT_T0') or time.time())
    deadline = t0 + a.call_s
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    py = os.environ.get('PY') or sys.executable
    env = dict(os.environ, PY=py, PYTHONUNBUFFERED='1', MPLBACKEND='Agg')
    h5 = Path(env.get('H5') or 'data/pcam-sample-h5')
    ready = env.get('PCAM_SAMPLE_READY') == '1' and (h5/'camelyonpatch_level_2_split_train_x.h5').exists()
    archs = ARCHS.split()
    if a.smoke:  # a tiny synthetic "sample" stands in for the real one
        h5 = root/'data'/'session-smoke'
        env.update(ALLOW_CPU='1', ARCHS=SMOKE['archs'], TRAIN_ARGS=SMOKE['train_args'], H5=str(h5))
        archs = SMOKE['archs'].split()
        subprocess.run([py, '-c', f"from pcam_nb.synth import make_synthetic; make_synthetic({str(h5)!r}, n_train=512, "
                        "n_valid=256, n_test=0, seed=3, progress=False)"], env=env, check=True)
        ready = True
    bench_archs = ['simple_cnn'] if a.smoke else list(BENCH_ARCHS)
    bench_data, bench_n = (root/'data'/'session-smoke-bench', SMOKE['n']) if a.smoke else (root/'data'/'bench', BENCH_N)
    state = dict(train=lambda: train_state(root, archs), bench=lambda: bench_state(root, bench_archs, a.smoke),
                 study=lambda: study_state(root, a.smoke))
    left = lambda: deadline - time.time()
    wanted = [s.strip() for s in a.stages.split(',') if s.strip()]
    order = [s for s in (['train', 'bench', 'study'] if ready else ['bench']) if s in wanted]
    report = {}
    with open(out/'session.log', 'a') as logf:
        log(f"sample ready: {ready}; {left():.0f} s left in this call; stages in order: {', '.join(order) or 'none'}", logf)
        for stage in order:
            done, detail = state[stage]()
            if done: report[stage] = f'done earlier: {detail}'; log(f"{stage}: {report[stage]}", logf); continue
            if stage == 'train':
                if left() < 60: report[stage] = f'not started: {left():.0f} s left'; log(f"train: {report[stage]}", logf); continue
                rc = run_stage(['bash', 'benchmarks/train_sample.sh'], env, deadline, logf)
            elif stage == 'bench':
                rc = run_stage([py, '-c', 'import sys; from pcam_nb.bench import ensure_data; '
                                f'ensure_data({str(bench_data)!r}, {bench_n[0]}, {bench_n[1]}, progress=False); '
                                'print("bench data ready:", sys.argv[1])', str(bench_data)], env, deadline, logf)
                if rc == 0 and not a.smoke:
                    rc = run_stage([py, '-c', 'import sys, torch; torch.cuda.is_available() or '
                                    'sys.exit("no CUDA GPU: bench figures must be measured on a GPU")'], env, deadline, logf)
                if rc == 0 and left() >= (30 if a.smoke else a.bench_min_s):
                    args = ['--json', 'benchmarks/bench.json', '--profile', 'runs/bench-profile', '--data', str(bench_data),
                            '--n-train', str(bench_n[0]), '--n-valid', str(bench_n[1]), '--no-progress']
                    rc = run_stage([str(Path(py).parent/'pcam_bench')] + args + (SMOKE['bench'] if a.smoke else []),
                                   env, deadline, logf)
                elif rc == 0:
                    report[stage] = f'data ready; the bench needs {a.bench_min_s:.0f} s, {left():.0f} s left: next call'
                    log(f"bench: {report[stage]}", logf); continue
            else:
                if left() < 45: report[stage] = f'not started: {left():.0f} s left'; log(f"study: {report[stage]}", logf); continue
                cmd = [py, 'benchmarks/equivariance_study.py', '--no-progress', '--deadline', f'{deadline - 20:.0f}']
                cmd += SMOKE['study'] if a.smoke else ['--data', str(h5)]
                rc = run_stage(cmd, env, deadline, logf)
            done, detail = state[stage]()
            report[stage] = ('done: ' if done else 'stopped by the time limit: ' if rc == -999 else
                             f'failed (exit {rc}): ' if rc else 'not finished: ') + detail
            log(f"{stage}: {report[stage]}", logf)
        for s in ('train', 'bench', 'study'):
            if s not in report:
                done, detail = state[s]()
                report[s] = ('done earlier: ' if done else 'waits for the sample: ' if s in ('train', 'study') and not ready
                             else 'not run: ') + detail
        all_done = all(state[s]()[0] for s in ('train', 'bench', 'study'))
        nxt = ('all done: give the machine back' if all_done else 'make the next call (carry .whl)' if ready else
               'make the next call, carrying the part of the sample this machine lacks (call 2 of benchmarks/gpu/README.md)')
        tgz = pack(root, out, a.smoke)
        log(f"packed {tgz} ({tgz.stat().st_size / 2**20:.1f} MiB); next: {nxt}", logf)
    st = dict(stages=report, all_done=all_done, next=nxt, seconds_left=round(left()), sample_ready=ready)
    (out/'status.json').write_text(json.dumps(st, indent=1))
    print(json.dumps(st, indent=1))
    return 0 if not any(v.startswith('failed') for v in report.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
