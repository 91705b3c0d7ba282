"""Local check of setup.sh without a GPU: a venv holding only the GPU machine's packages (those of machine_packages.txt
found in SRC, symlinked), so the carried wheels must supply everything else. Used by hand:
    .venv/bin/python benchmarks/gpu/machine_sim.py .venv/lib/python3.11/site-packages /tmp/kitvenv benchmarks/gpu/machine_packages.txt
    PCAM_REAL_PY=/tmp/kitvenv/bin/python PCAM_GPU_SITE=/tmp/kt_site PCAM_GPU_BIN=/tmp/kt_bin \\
        bash -c 'source benchmarks/gpu/setup.sh || exit 1; ...'   (from a copy of the repo with .whl and .carry parts)
"""
import importlib.metadata as md, os, re, subprocess, sys
from pathlib import Path
src, dest, listf = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
norm = lambda n: re.sub(r'[-_.]+', '-', n).lower()
machine = {norm(l) for l in listf.read_text().split() if not l.startswith('#')}
subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(dest)], check=True)
site = next(dest.glob('lib/python3*/site-packages'))
done, kept, dropped = set(), [], []
for d in md.distributions(path=[str(src)]):
    name = norm(d.metadata['Name'])
    if name not in machine: dropped.append(name); continue
    kept.append(name)
    for f in d.files or []:
        top = f.parts[0]
        if top in ('..', '__pycache__') or top in done: continue
        if (src/top).exists(): os.symlink(src/top, site/top); done.add(top)
print(f"kept {len(kept)}, dropped {len(dropped)}: {' '.join(sorted(dropped))}")
