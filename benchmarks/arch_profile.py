"""ResNet against VGG, side by side in one run: images/s, ms per batch split into data / forward / backward /
optimizer, peak memory, parameters and FLOPs, for training and for inference, at each image size and batch size;
then one change at a time (NCHW instead of channels-last, bf16 autocast on or off, torch.compile).

    python benchmarks/arch_profile.py [--device cpu|cuda] [--sizes 96,224] [--archs resnet18,vgg16_bn] [--bs 8,32] [--quick]

Writes OUT.json, OUT.md, OUT_throughput.png and OUT_phases.png (OUT: --out, default benchmarks/arch_profile).
The phase split comes from pcam_nb.bench (`profile_steps`: torch.profiler ranges set by `PhaseMarks` around
`Learner.fit`'s events; `infer_steps` for inference), the data from the project's loader over a small synthetic
PCam split made at each size, the models from pcam_nb.models, the FLOPs from torch.utils.flop_counter.
torch.compile runs in a subprocess each, within --compile-budget seconds in all, so a slow compile cannot stall the run.
Peak memory: on CUDA torch.cuda.max_memory_allocated; on the CPU the peak resident set size (VmHWM, reset for each
configuration through /proc/self/clear_refs), with glibc's mmap threshold fixed so that freed tensors leave RSS.
"""
import argparse, json, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHS = 'resnet18,resnet34,resnet50,vgg11_bn,vgg16_bn'
PHASE_COLORS = dict(data='#8c8c8c', forward='#4c72b0', loss='#c4ad66', backward='#dd8452', optimizer='#55a868',
                    callbacks='#b07aa1')
# Sizes of a run: (batch sizes, warm-up batches, timed batches, variant archs, variant sizes, compile budget in s)
DEFAULTS = dict(cpu=('8,16,32', 1, 3, 'resnet18,vgg16_bn', '96', 420), cuda=('32,64,128,256', 5, 20, None, None, 1200))
# Sizes at which every batch size is measured (the other sizes: the smallest batch only): the CPU sweeps 96 px only


def _fail(msg):
    "A one-line error on stderr and exit status 2, as the project's commands do."
    print(f"error: {msg}", file=sys.stderr); raise SystemExit(2)


def _ints(s, name):
    try: v = [int(x) for x in s.split(',') if x.strip()]
    except ValueError: v = None
    if not v or min(v) < 1: _fail(f"--{name} {s!r}: give whole numbers >= 1, comma-separated (--{name} 2,8)")
    return v


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default=None, help="cpu or cuda (default: cuda when there is one)")
    p.add_argument('--sizes', default='96,224', help="image sides in px, comma-separated (default 96,224)")
    p.add_argument('--archs', default=ARCHS, help=f"architectures of pcam_nb.models (default {ARCHS})")
    p.add_argument('--bs', default=None, help="batch sizes (default: 8,16,32 on the CPU, 32,64,128,256 on CUDA)")
    p.add_argument('--steps', type=int, default=None, help="timed batches per configuration (default: 3 CPU, 20 CUDA)")
    p.add_argument('--warmup', type=int, default=None, help="untimed batches first (default: 1 CPU, 5 CUDA)")
    p.add_argument('--variant-archs', default=None, help="archs of the variants (default: resnet18,vgg16_bn on the CPU, all on CUDA)")
    p.add_argument('--sweep-sizes', default=None, help="sizes measured at every --bs; the others at the smallest only (default: 96 on the CPU, all on CUDA)")
    p.add_argument('--variant-sizes', default=None, help="sizes of the variants (default: 96 on the CPU, all on CUDA)")
    p.add_argument('--compile-budget', type=int, default=None, help="seconds for all torch.compile runs (default: 420 CPU, 1200 CUDA; 0: none)")
    p.add_argument('--quick', action='store_true', help="one timed batch after one warm-up, the variants at one arch, no compile")
    p.add_argument('--data', default=str(ROOT/'data'/'arch-profile'), help="folder of the synthetic split (made if missing)")
    p.add_argument('--out', default=str(ROOT/'benchmarks'/'arch_profile'), help="output prefix (default benchmarks/arch_profile)")
    p.add_argument('--command', default=None, help=argparse.SUPPRESS)  # the command line the report names
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)      # internal: measure one configuration (JSON), print JSON
    p.add_argument('--from-json', default=None, help="only rewrite the report and figures of --out from this results file")
    p.add_argument('--redo-compile', action='store_true', help="only (re)measure the torch.compile variants of --out's JSON and rewrite its report")
    a = p.parse_args(argv)
    if a.one or a.from_json: return a
    dev = a.device or ('cuda' if _cuda() else 'cpu')
    if dev not in ('cpu', 'cuda'): _fail(f"--device {a.device!r}: pass cpu or cuda")
    d = DEFAULTS[dev]
    a.device, a.sizes, a.bs = dev, _ints(a.sizes, 'sizes'), _ints(a.bs or d[0], 'bs')
    a.archs = [x for x in a.archs.split(',') if x]
    a.warmup = (1 if a.quick else d[1]) if a.warmup is None else a.warmup
    a.steps = (1 if a.quick else d[2]) if a.steps is None else a.steps
    if a.steps < 1 or a.warmup < 0: _fail(f"--steps {a.steps} / --warmup {a.warmup}: need steps >= 1, warmup >= 0")
    given = a.variant_archs is not None
    a.variant_archs = [x for x in (a.variant_archs or d[3] or ','.join(a.archs)).split(',') if x]
    if a.quick and not given: a.variant_archs = a.archs[:1]
    a.variant_sizes = _ints(a.variant_sizes, 'variant-sizes') if a.variant_sizes else [min(a.sizes)] if d[4] else a.sizes
    a.sweep_sizes = _ints(a.sweep_sizes, 'sweep-sizes') if a.sweep_sizes else [min(a.sizes)] if dev == 'cpu' else a.sizes
    a.compile_budget = (0 if a.quick else d[5]) if a.compile_budget is None else a.compile_budget
    return a


def _cuda():
    import torch
    return torch.cuda.is_available()


# ---- memory -------------------------------------------------------------------------------------------------------
def _status(key):
    m = re.search(rf'^{key}:\s+(\d+) kB', Path('/proc/self/status').read_text(), re.M)
    return int(m.group(1)) / 1024 if m else None

def reset_peak(dev):
    "Start a new peak-memory window; returns the memory in use now (MB)."
    import gc, torch
    gc.collect()
    if dev == 'cuda':
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try: Path('/proc/self/clear_refs').write_text('5')  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError: return None
    return _status('VmRSS')

def peak_mb(dev):
    import torch
    return torch.cuda.max_memory_allocated() / 2**20 if dev == 'cuda' else _status('VmHWM')


# ---- model facts ----------------------------------------------------------------------------------------------------
def model_facts(arch, size):
    "Parameters, and FLOPs per image of the forward pass and of forward + backward (FlopCounterMode, on the meta device)."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from pcam_nb.models import create_model, n_params
    m = create_model(arch, img_size=size)
    n = n_params(m)
    m = m.to('meta')
    x = torch.empty(2, 3, size, size, device='meta')  # 2 images: the head's BatchNorm1d needs more than one in training
    with FlopCounterMode(display=False) as fc, torch.no_grad(): m.eval()(x)
    fwd = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc: m.train()(x).sum().backward()
    return dict(params=n, flops_fwd=fwd / 2, flops_train=fc.get_total_flops() / 2)


# ---- one configuration ----------------------------------------------------------------------------------------------
def measure(cfg, root):
    "img/s, ms per batch per phase and peak memory of one configuration (arch, size, mode, bs, channels_last, bf16, compile)."
    import torch
    from pcam_nb.loaders import pcam_dls
    from pcam_nb.train import pcam_learner
    from pcam_nb.bench import profile_steps, infer_steps, phase_speed, Autocast
    dev, bs, w, s = cfg['device'], cfg['bs'], cfg['warmup'], cfg['steps']
    n = (w + s) * bs
    t0 = time.perf_counter()
    dls = pcam_dls(Path(root)/f"{cfg['size']}px", bs=bs, device=dev, limit=n, valid_limit=n, valid_bs=bs, progress=False)
    base = reset_peak(dev)
    cuda = dev == 'cuda'
    learn = pcam_learner(dls, cfg['arch'], mixed_precision=cfg['bf16'] and cuda, channels_last=cfg['channels_last'],
                         compile=cfg['compile'])  # compile: static shapes, plain tensors in (train.PlainInputs)
    if cfg['bf16'] and not cuda: learn.add_cb(Autocast())
    learn.remove_cb(learn.progress); learn.logger = lambda *a, **k: None
    r = profile_steps(learn, s, w) if cfg['mode'] == 'train' else infer_steps(learn, s, w)
    total = time.perf_counter() - t0
    out = dict(cfg, img_s=phase_speed(r, bs), ms_per_batch={k: v['host_ms'] for k, v in r['phases'].items() if k != 'validation'},
               timed_seconds=r['wall_seconds'], setup_warmup_seconds=total - r['wall_seconds'],
               peak_mb=peak_mb(dev), base_mb=base)
    del learn, dls
    return out


def measure_subprocess(cfg, root, timeout):
    "`measure` in a fresh process, killed after `timeout` s (torch.compile can take minutes on a CPU)."
    cmd = [sys.executable, str(Path(__file__).resolve()), '--one', json.dumps(cfg), '--data', str(root)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, PYTHONWARNINGS='ignore'))
    except subprocess.TimeoutExpired:
        return dict(cfg, error=f"not finished within {timeout:.0f} s (compile time cap)", seconds=time.perf_counter() - t0)
    lines = [l for l in p.stdout.splitlines() if l.startswith('{')]
    if p.returncode or not lines:
        err = (p.stderr.strip().splitlines() or ['no output'])[-1]
        return dict(cfg, error=f"exit {p.returncode}: {err[:300]}", seconds=time.perf_counter() - t0)
    return dict(json.loads(lines[-1]), seconds=time.perf_counter() - t0)


# ---- the run --------------------------------------------------------------------------------------------------------
def run(a):
    import torch
    from pcam_nb.core import environment, write_json, PCamError
    from pcam_nb.models import arch_info
    from pcam_nb.synth import make_synthetic
    from pcam_nb.evaluate import check_device
    try:
        check_device(a.device)
        for arch in dict.fromkeys(a.archs + a.variant_archs):
            info = arch_info(arch)
            if min(a.sizes + a.variant_sizes) < info.min_size:
                raise PCamError(f"{arch} needs images of at least {info.min_size} px: pass larger --sizes")
        t_start = time.perf_counter()
        root, n = Path(a.data), (a.warmup + a.steps) * max(a.bs)
        for size in dict.fromkeys(a.sizes + a.variant_sizes):  # a synthetic PCam split at each size (made once, reused)
            make_synthetic(root/f"{size}px", n_train=n, n_valid=n, n_test=0, seed=0, size=size, progress=False)
    except (PCamError, ValueError) as e: _fail(f"{e}")
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    env = environment(a.device)
    cpu_name = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                     if l.startswith('model name')), 'CPU') if Path('/proc/cpuinfo').exists() else 'CPU'
    res = dict(env=env, hardware=dict(cpu=cpu_name, cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                                      gpu=torch.cuda.get_device_name() if a.device == 'cuda' else None),
               command=a.command or 'python benchmarks/arch_profile.py ' + ' '.join(sys.argv[1:]),
               settings=dict(device=a.device, sizes=a.sizes, archs=a.archs, bs=a.bs, steps=a.steps, warmup=a.warmup,
                             sweep_sizes=a.sweep_sizes, variant_archs=a.variant_archs, variant_sizes=a.variant_sizes,
                             compile_budget=a.compile_budget),
               models={}, runs=[], variants=[], load_average_before=os.getloadavg()[0])
    base_bf16 = a.device == 'cuda'  # the project's defaults: bf16 on CUDA, float32 on the CPU; channels-last on both
    save = lambda: write_json(out.with_suffix('.json'), res)
    say = lambda msg: print(f"[{time.perf_counter() - t_start:6.0f} s] {msg}", flush=True)
    for size in a.sizes:
        for arch in a.archs:
            res['models'][f"{arch}@{size}"] = model_facts(arch, size)
    save()
    cfg0 = dict(device=a.device, warmup=a.warmup, steps=a.steps, channels_last=True, bf16=base_bf16, compile=False)
    for size in a.sizes:
        for arch in a.archs:
            for mode in ('train', 'infer'):
                for bs in (a.bs if size in a.sweep_sizes else a.bs[:1]):
                    r = measure(dict(cfg0, arch=arch, size=size, mode=mode, bs=bs), root)
                    res['runs'].append(r); save()
                    say(f"{arch} {size}px {mode} bs {bs}: {r['img_s']:.2f} img/s, peak {r['peak_mb']:.0f} MB")
    changes = [('NCHW', dict(channels_last=False)), ('bf16' if not base_bf16 else 'float32', dict(bf16=not base_bf16))]
    for name, ch in changes:
        for size in a.variant_sizes:
            for arch in a.variant_archs:
                for mode in ('train', 'infer'):
                    cfg = dict(cfg0, arch=arch, size=size, mode=mode, bs=max(a.bs), **ch)
                    r = dict(measure(cfg, root), variant=name)
                    res['variants'].append(r); save()
                    say(f"{name}: {arch} {size}px {mode} bs {cfg['bs']}: {r['img_s']:.2f} img/s")
    if a.compile_budget > 0: compile_variants(res, a, root, cfg0, save, say)
    res['seconds'], res['load_average_after'] = time.perf_counter() - t_start, os.getloadavg()[0]
    save()
    write_report(res, out)
    say(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}, {out}_throughput.png, {out}_phases.png")
    return res


def compile_variants(res, a, root, cfg0, save, say):
    "torch.compile of the variant configurations, each in a process of its own, within `a.compile_budget` seconds in all."
    budget = a.compile_budget
    res['variants'] = [v for v in res['variants'] if v['variant'] != 'compile']
    for size in a.variant_sizes:
        for arch in a.variant_archs:
            for mode in ('infer', 'train'):  # the quicker compile first
                cfg = dict(cfg0, arch=arch, size=size, mode=mode, bs=max(a.bs), compile=True, warmup=max(a.warmup, 1))
                if budget < 30: r = dict(cfg, error=f"not measured: the compile budget ({a.compile_budget} s, --compile-budget) was spent")
                else: r = measure_subprocess(cfg, root, budget); budget -= r['seconds']
                r['variant'] = 'compile'
                res['variants'].append(r); save()
                say(f"compile: {arch} {size}px {mode} bs {cfg['bs']}: " +
                    (f"{r['img_s']:.2f} img/s, eager {r['eager_img_s']:.2f} img/s" if 'img_s' in r else r['error']))


# ---- report ---------------------------------------------------------------------------------------------------------
def _base(res, r):
    return next((b for b in res['runs'] if all(b[k] == r[k] for k in ('arch', 'size', 'mode', 'bs'))), None)

def _hardware(res):
    h, e = res['hardware'], res['env']
    dev = h['gpu'] or f"{h['cores']}-core x86-64 CPU ({h['cpu']}, {h['torch_threads']} torch threads)"
    return f"{dev}, torch {e['torch']}"

def _run(res, arch, size, mode, bs):
    return next((r for r in res['runs'] if (r['arch'], r['size'], r['mode'], r['bs']) == (arch, size, mode, bs)), None)

def _top_bs(s, size):
    "The batch size that the tables compare at `size`: the largest where every batch size ran, else the smallest."
    return max(s['bs']) if size in s.get('sweep_sizes', s['sizes']) else min(s['bs'])

def report_md(res):
    s = res['settings']
    sizes, archs, ref = s['sizes'], s['archs'], s['archs'][0]
    L = ["# ResNet against VGG: where the time goes", '',
         f"{_hardware(res)}: `{res['command']}`", '',
         (f"Side by side in one run ({res['seconds'] / 60:.1f} min)" if 'seconds' in res else
          f"Side by side in one run, stopped after {len(res['runs']) + len(res['variants'])} configurations (those below)")
         + f": the project's loader over a synthetic PCam split "
         f"made at each size, models from `pcam_nb.models` (torchvision body + the pcam head), "
         f"{'bf16 autocast' if s['device'] == 'cuda' else 'float32'}, channels-last, eager, "
         f"{s['warmup']} warm-up then {s['steps']} timed batch{'es' if s['steps'] > 1 else ''} per configuration; every batch size "
         f"({', '.join(map(str, s['bs']))}) at {', '.join(f'{z} px' for z in s.get('sweep_sizes', sizes))}"
         f"{', the smallest at the other sizes' if set(sizes) - set(s.get('sweep_sizes', sizes)) else ''}. "
         "Phases: `pcam_nb.bench.profile_steps` (training) and `infer_steps` (inference). With this few timed batches, read "
         "the ratios between models of the same run rather than single figures."
         + (f" 1-minute load average {res['load_average_before']:.1f} before the run, {res['load_average_after']:.1f} after."
            if 'load_average_after' in res else '')]
    if 'compile_seconds' in res:
        L += ['', f"The torch.compile rows were measured after that run, by `{res['compile_command']}` "
              f"({res['compile_seconds'] / 60:.1f} min), each against the same configuration eager in its own process."]
    if s['device'] == 'cpu':
        L += ['', "GPU (CUDA, bf16, batches 32-256): not measured yet: `make bench-arch DEVICE=cuda`"]
    L += ['', '## The models', '', '| arch | parameters (M) | ' + ' | '.join(f"GFLOPs/img fwd {z} px | GFLOPs/img train {z} px" for z in sizes) + ' |',
          '|---|---|' + '---|---|' * len(sizes)]
    for arch in archs:
        m = [res['models'][f"{arch}@{z}"] for z in sizes]
        L.append(f"| {arch} | {m[0]['params'] / 1e6:.1f} | " + ' | '.join(f"{x['flops_fwd'] / 1e9:.2f} | {x['flops_train'] / 1e9:.2f}" for x in m) + ' |')
    L += ['', "FLOPs: `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts 2), per image; train = forward + backward."]
    L += ['', "## Images per second", '',
          '| arch | ' + ' | '.join(f"train {z} px (bs {_top_bs(s, z)}) | infer {z} px (bs {_top_bs(s, z)})" for z in sizes) + ' | '
          + ' | '.join(f"train GFLOP/s {z} px" for z in sizes) + ' |', '|---|' + '---|---|' * len(sizes) + '---|' * len(sizes)]
    for arch in archs:
        cells, gf = [], []
        for z in sizes:
            b = _top_bs(s, z)
            for mode in ('train', 'infer'):
                r, r0 = _run(res, arch, z, mode, b), _run(res, ref, z, mode, b)
                cells.append(f"{r['img_s']:.2f} ({r['img_s'] / r0['img_s']:.2f}x)" if r and r0 else '-')
            r = _run(res, arch, z, 'train', b)
            gf.append(f"{r['img_s'] * res['models'][f'{arch}@{z}']['flops_train'] / 1e9:.1f}" if r else '-')
        L.append(f"| {arch} | " + ' | '.join(cells) + ' | ' + ' | '.join(gf) + ' |')
    L += ['', f"In brackets: against {ref} in the same column. Train GFLOP/s: images/s x training FLOPs per image (the "
          "arithmetic rate that training achieves, data and optimizer time included)."]
    L += ['', "## Where a training batch goes (ms per batch; share of the batch)", '',
          '| arch | size | bs | data | forward | loss | backward | optimizer | callbacks | total | backward / forward |',
          '|---|---|---|---|---|---|---|---|---|---|---|']
    for z in sizes:
        for arch in archs:
            r = _run(res, arch, z, 'train', _top_bs(s, z))
            if not r: continue
            ms = r['ms_per_batch']; tot = sum(ms.values())
            L.append(f"| {arch} | {z} | {r['bs']} | " + ' | '.join(f"{ms[k]:.0f} ({ms[k] / tot:.0%})" for k in PHASE_COLORS) +
                     f" | {tot:.0f} | {ms['backward'] / ms['forward']:.2f} |")
    L += ['', "## Inference (ms per batch)", '', '| arch | size | bs | data | forward | total |', '|---|---|---|---|---|---|']
    for z in sizes:
        for arch in archs:
            r = _run(res, arch, z, 'infer', _top_bs(s, z))
            if r: L.append(f"| {arch} | {z} | {r['bs']} | {r['ms_per_batch']['data']:.0f} | {r['ms_per_batch']['forward']:.0f} | "
                           f"{sum(r['ms_per_batch'].values()):.0f} |")
    cpu = s['device'] == 'cpu'
    mem = ('peak RSS in MB (+ its rise over the RSS before the learner was built)' if cpu
           else 'peak memory allocated (MB)')
    L += ['', f"## Batch size: images/s, {mem}", '', '| arch | size | mode | ' + ' | '.join(f"bs {b}" for b in s['bs']) + ' |',
          '|---|---|---|' + '---|' * len(s['bs'])]
    for z in sizes:
        for arch in archs:
            for mode in ('train', 'infer'):
                cells = []
                for b in s['bs']:
                    r = _run(res, arch, z, mode, b)
                    rise = f" (+{r['peak_mb'] - r['base_mb']:.0f})" if r and cpu and r.get('base_mb') else ''
                    cells.append(f"{r['img_s']:.2f} img/s, {r['peak_mb']:.0f}{rise}" if r else '-')
                L.append(f"| {arch} | {z} | {mode} | " + ' | '.join(cells) + ' |')
    L += ['', "## One change at a time (images/s against the same configuration of the default run)", '',
          '| change | arch | size | mode | bs | img/s | ratio | setup + warm-up s | note |', '|---|---|---|---|---|---|---|---|---|']
    for r in res['variants']:
        b = _base(res, r)
        if 'img_s' in r:
            ref = r.get('eager_img_s') or b['img_s']
            L.append(f"| {r['variant']} | {r['arch']} | {r['size']} | {r['mode']} | {r['bs']} | {r['img_s']:.2f} | "
                     f"{r['img_s'] / ref:.2f}x | {r['setup_warmup_seconds']:.0f} | "
                     f"{'against eager in the same process: %.2f img/s' % ref if r.get('eager_img_s') else ''} |")
        else:
            L.append(f"| {r['variant']} | {r['arch']} | {r['size']} | {r['mode']} | {r['bs']} | - | - | - | {r['error']} |")
    L += ['', "NCHW: the contiguous layout instead of channels-last (model and input). "
          + ("bf16: `torch.autocast('cpu', torch.bfloat16)` around forward and loss (`pcam_nb.bench.Autocast`). " if cpu
             else "float32: no autocast. ")
          + "compile: `torch.compile` (inductor, static shapes) in a process of its own, after the same configuration eager "
          "in that process (the ratio is against that); its setup + warm-up seconds hold the compilation. The model gets "
          "plain tensors there: torch.compile of a model fed fastai's `TensorImage` stops with `BackendCompilerFailed` "
          "(a broadcast error while tracing) in this torch version.",
          '', "Figures: `arch_profile_throughput.png` (images/s against batch size per model), `arch_profile_phases.png` "
          "(ms per training batch by phase)."]
    return '\n'.join(L) + '\n'


def plots(res, out):
    import matplotlib, matplotlib.ticker; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from pcam_nb.core import save_figure
    s = res['settings']
    sizes, archs = s['sizes'], s['archs']
    fig, axs = plt.subplots(2, len(sizes), figsize=(5 * len(sizes), 7), squeeze=False)
    for j, z in enumerate(sizes):
        for i, mode in enumerate(('train', 'infer')):
            ax = axs[i][j]
            for arch in archs:
                rr = sorted((r['bs'], r['img_s']) for r in res['runs'] if r['arch'] == arch and r['size'] == z and r['mode'] == mode)
                if rr: ax.plot(*zip(*rr), marker='o', ls='--' if arch.startswith('vgg') else '-', label=arch)
            ax.set(xscale='log', yscale='log', title=f"{'training' if mode == 'train' else 'inference'}, {z} px",
                   xlabel='batch size', ylabel='images/s')
            ax.set_xticks(s['bs'], [str(b) for b in s['bs']]); ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.grid(alpha=.3, which='both')
    axs[0][0].legend(fontsize=8)
    fig.suptitle(f"Throughput against batch size ({_hardware(res)})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, f"{out}_throughput.png"); plt.close(fig)
    fig, axs = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.8), squeeze=False)
    for j, z in enumerate(sizes):
        b = _top_bs(s, z)
        rows = [(a, _run(res, a, z, 'train', b)) for a in archs]
        rows = [(a, r) for a, r in rows if r]
        ax, left = axs[0][j], [0.] * len(rows)
        for k, c in PHASE_COLORS.items():
            w = [r['ms_per_batch'][k] / 1e3 for _, r in rows]
            ax.barh([a for a, _ in rows], w, left=left, color=c, label=k)
            left = [l + x for l, x in zip(left, w)]
        ax.invert_yaxis(); ax.set(title=f"training, {z} px, batch {b}", xlabel='seconds per batch')
    axs[0][-1].legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))   # beside the bars, not over them
    fig.suptitle(f"Where a training batch goes ({_hardware(res)})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, f"{out}_phases.png"); plt.close(fig)


def write_report(res, out):
    from pcam_nb.core import write_text
    out = Path(out)
    write_text(out.with_suffix('.md'), report_md(res))
    plots(res, out)


def main(argv=None):
    if sys.platform.startswith('linux') and 'MALLOC_MMAP_THRESHOLD_' not in os.environ:
        # a fixed mmap threshold: large tensors are mmapped and freed back to the OS, so each configuration's peak RSS is its own
        os.environ['MALLOC_MMAP_THRESHOLD_'] = str(1 << 20)
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve())] + sys.argv[1:])
    a = parse_args(argv)
    if a.one:  # a compiled configuration and, first, the same one eager in this process, for the ratio
        cfg = json.loads(a.one)
        eager = measure(dict(cfg, compile=False), a.data)
        print(json.dumps(dict(measure(cfg, a.data), eager_img_s=eager['img_s'])), flush=True)
        return
    if a.redo_compile:
        out = Path(a.out); res = json.loads(out.with_suffix('.json').read_text())
        from pcam_nb.core import write_json
        t0 = time.perf_counter()
        save = lambda: write_json(out.with_suffix('.json'), res)
        s = res['settings']
        cfg0 = dict(device=s['device'], warmup=s['warmup'], steps=s['steps'], channels_last=True, bf16=s['device'] == 'cuda', compile=False)
        a.variant_sizes, a.variant_archs, a.bs, a.warmup = s['variant_sizes'], s['variant_archs'], s['bs'], s['warmup']
        s['compile_budget'] = a.compile_budget
        compile_variants(res, a, Path(a.data), cfg0, save, lambda m: print(f"[{time.perf_counter() - t0:6.0f} s] {m}", flush=True))
        res['compile_seconds'] = time.perf_counter() - t0
        res['compile_command'] = a.command or 'python benchmarks/arch_profile.py ' + ' '.join(sys.argv[1:])
        save(); write_report(res, out)
        return
    if a.from_json:
        try: res = json.loads(Path(a.from_json).read_text())
        except (OSError, ValueError) as e: _fail(f"--from-json {a.from_json}: cannot read it ({e}); pass a file this script wrote")
        write_report(res, a.out)
        return
    run(a)


if __name__ == '__main__':
    main()
