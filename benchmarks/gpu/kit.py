#!/usr/bin/env python3
"""The GPU kit's helpers: standard library only (Python >= 3.10), so the same file runs here and on the GPU machine.

    python3 benchmarks/gpu/kit.py pack SAMPLE .carry [--parts 2]    # here: SAMPLE -> .carry/sample1 .. sampleN
    python3 benchmarks/gpu/kit.py unpack .carry data/pcam-sample     # there: carried parts -> the sample, verified
    python3 benchmarks/gpu/kit.py checkdeps .whl benchmarks/gpu/machine_packages.txt   # here: wheels' needs met there?
    python3 benchmarks/gpu/kit.py check SAMPLE .carry                # here: the parts hold exactly SAMPLE's bytes
    python3 benchmarks/gpu/kit.py manifest DIR                       # print a folder's manifest id (sha256 of SHA256SUMS)

A part is a folder `.carry/sampleK/` holding `sampleK.tar.gz` (a deterministic tar of about 1/N of the sample's bytes),
`SHA256SUMS` (every file of the WHOLE sample, `sha256sum -c` format) and `part.json` (counts, the archive's sha256 and
the sample's manifest id). `unpack` extracts each carried part into `DEST.incoming/` (kept between calls on a warm
machine), and once every part is there checks every file against SHA256SUMS and renames the folder to DEST: DEST
exists only complete and verified.
"""
from __future__ import annotations
import argparse, gzip, hashlib, json, os, re, shutil, sys, tarfile, zipfile, zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KIT_VERSION = 1
INCOMPLETE = 3  # exit code of `unpack` when some parts have not been carried to this machine yet
# Requirements of the carried wheels that the GPU machine lacks on purpose, with the reason.
NOT_NEEDED = {'spacy': 'fastai.text only (imported lazily there); pcam_nb never imports fastai.text',
              'lie-learn': "escnn's SO(3) only; pcam_nb.equivariant stands in for it (its cp312 wheel needs numpy<2)",
              'py3nj': "escnn's SO(3) only, imported optionally (no wheel: it needs gfortran)",
              'pymanopt': 'imported optionally by escnn (numerical bases), not by its planar groups',
              'autograd': 'imported optionally by escnn (numerical bases), not by its planar groups'}


class KitError(Exception): pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for b in iter(lambda: f.read(1 << 20), b''): h.update(b)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    "Relative POSIX paths of the regular files under `root`, sorted."
    out = [p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_file() and not p.is_symlink()]
    return sorted(out)


def manifest(root) -> dict[str, tuple[int, str]]:
    "{relative path: (size, sha256)} of every file under `root`."
    root = Path(root)
    if not root.is_dir(): raise KitError(f"{root}: folder not found")
    names = _files(root)
    with ThreadPoolExecutor(8) as ex: digests = list(ex.map(lambda n: _sha256(root/n), names))
    return {n: ((root/n).stat().st_size, d) for n, d in zip(names, digests)}


def sums_text(man: dict) -> str:
    "The manifest in `sha256sum -c` format."
    return ''.join(f"{d}  {n}\n" for n, (_, d) in sorted(man.items()))


def manifest_id(man: dict) -> str: return hashlib.sha256(sums_text(man).encode()).hexdigest()


def split_parts(man: dict, n: int) -> list[list[str]]:
    "Sorted file names cut into `n` consecutive runs of about equal bytes."
    names, total = sorted(man), sum(s for s, _ in man.values())
    parts, acc = [[] for _ in range(n)], 0
    for name in names:
        size = man[name][0]
        k = min(n - 1, (2 * acc + size) * n // (2 * max(total, 1)))  # the part that holds the file's middle byte
        parts[k].append(name); acc += size
    if any(not p for p in parts): raise KitError(f"cannot cut {len(names)} files into {n} non-empty parts")
    return parts


def _write_tar_gz(root: Path, names: list[str], dest: Path, level: int):
    "A deterministic .tar.gz of `names` (no times, owners or modes from the source), written atomically."
    tmp = dest.with_name(dest.name + '.tmp')
    with open(tmp, 'wb') as raw, gzip.GzipFile('', 'wb', level, raw, mtime=0) as z, \
         tarfile.open(fileobj=z, mode='w', format=tarfile.GNU_FORMAT) as t:
        for n in names:
            ti = tarfile.TarInfo(n)
            ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = (root/n).stat().st_size, 0, 0o644, 0, 0, '', ''
            with open(root/n, 'rb') as f: t.addfile(ti, f)
    os.replace(tmp, dest)


def pack(src, carry, parts: int = 2, prefix: str = 'sample', level: int = 9,
         max_mib: float = 50.0, log=print) -> list[dict]:
    "Pack folder `src` into `carry/{prefix}1..N`; parts already packed from the same files are kept (idempotent)."
    src, carry = Path(src), Path(carry)
    man = manifest(src)
    if not man: raise KitError(f"{src}: no files to pack")
    mid, sums = manifest_id(man), sums_text(man)
    cuts = split_parts(man, parts)

    def one(k):
        d = carry/f'{prefix}{k+1}'
        arc, info_f = d/f'{prefix}{k+1}.tar.gz', d/'part.json'
        if info_f.exists() and arc.exists():
            info = json.loads(info_f.read_text())
            if (info.get('manifest_id') == mid and info.get('parts') == parts and info.get('kit') == KIT_VERSION
                    and info.get('archive_bytes') == arc.stat().st_size and _sha256(arc) == info.get('archive_sha256')):
                log(f"{d}: up to date ({info['files']} files, {arc.stat().st_size/2**20:.1f} MiB)")
                return info
        if d.exists(): shutil.rmtree(d)
        d.mkdir(parents=True)
        names = cuts[k]
        _write_tar_gz(src, names, arc, level)
        if archive_digests(arc) != {n: man[n] for n in names}:  # read back: the archive holds exactly these bytes
            raise KitError(f"{arc}: does not read back as the files packed into it")
        (d/'SHA256SUMS').write_text(sums)
        info = dict(kit=KIT_VERSION, part=k + 1, parts=parts, prefix=prefix, manifest_id=mid,
                    files=len(names), bytes=sum(man[n][0] for n in names), total_files=len(man),
                    first=names[0], last=names[-1], archive=arc.name, archive_bytes=arc.stat().st_size,
                    archive_sha256=_sha256(arc))
        info_f.write_text(json.dumps(info, indent=1) + '\n')
        log(f"{d}: packed {len(names)} files, {info['bytes']/2**20:.1f} MiB -> {arc.stat().st_size/2**20:.1f} MiB")
        return info

    with ThreadPoolExecutor(parts) as ex: infos = list(ex.map(one, range(parts)))  # zlib releases the GIL
    for i in infos:
        if i['archive_bytes'] > max_mib * 2**20:
            raise KitError(f"{prefix}{i['part']}: {i['archive_bytes']/2**20:.1f} MiB is over {max_mib} MiB: "
                           f"pack into more parts (--parts {parts + 1})")
    return infos


def check(src, carry, prefix: str = 'sample') -> dict:
    "Raise KitError unless the parts under `carry` hold exactly the files of folder `src`, byte for byte."
    src, carry = Path(src), Path(carry)
    infos = [json.loads(p.read_text()) | dict(dir=p.parent) for p in sorted(carry.glob(f'{prefix}*/part.json'))]
    if not infos: raise KitError(f"no {prefix}* parts under {carry}: run benchmarks/gpu/prepare.sh")
    if sorted(i['part'] for i in infos) != list(range(1, infos[0]['parts'] + 1)):
        raise KitError(f"{carry}: parts {[i['part'] for i in infos]} of {infos[0]['parts']}")
    with ThreadPoolExecutor(len(infos) + 1) as ex:
        fman = ex.submit(manifest, src)
        parts = list(ex.map(lambda i: archive_digests(i['dir']/i['archive']), infos))
        man = fman.result()
    got = {}
    for p in parts: got.update(p)
    if got != man:
        diff = sorted(set(got) ^ set(man)) or sorted(n for n in man if got[n] != man[n])
        raise KitError(f"{carry}: the parts differ from {src} in {len(diff)} files, e.g. {diff[:3]}: run prepare.sh again")
    return dict(files=len(man), bytes=sum(s for s, _ in man.values()), manifest_id=manifest_id(man),
                archive_bytes=[i['archive_bytes'] for i in infos])


def _parse_sums(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r'([0-9a-f]{64}) [ *](.+)', line)
        if not m: raise KitError(f"bad SHA256SUMS line: {line!r}")
        out[m.group(2)] = m.group(1)
    return out


def verify(root, sums: dict[str, str]) -> None:
    "Raise KitError unless `root` holds exactly the files of `sums` with those digests."
    root = Path(root)
    have = set(_files(root))
    missing, extra = sorted(set(sums) - have), sorted(have - set(sums))
    if missing: raise KitError(f"{root}: {len(missing)} files missing, e.g. {missing[:3]}")
    if extra: raise KitError(f"{root}: {len(extra)} unexpected files, e.g. {extra[:3]}")
    names = sorted(sums)
    with ThreadPoolExecutor(8) as ex: digests = list(ex.map(lambda n: _sha256(root/n), names))
    bad = [n for n, d in zip(names, digests) if d != sums[n]]
    if bad: raise KitError(f"{root}: {len(bad)} files differ from SHA256SUMS, e.g. {bad[:3]}")


def archive_digests(arc) -> dict[str, tuple[int, str]]:
    "{name: (size, sha256)} of the files in a .tar.gz, read as a stream (nothing is written to disk)."
    out = {}
    try:
        with tarfile.open(arc, 'r|gz') as t:
            for m in t:
                if m.isfile(): out[m.name] = (m.size, hashlib.sha256(t.extractfile(m).read()).hexdigest())
    except (tarfile.TarError, zlib.error, EOFError, OSError) as e: raise KitError(f"{arc}: unreadable ({e})") from None
    return out


def _extract(arc: Path, dest: Path):
    try:
        with tarfile.open(arc, 'r:gz') as t:
            members = t.getmembers()
            for m in members:
                if not m.isfile() or m.name.startswith(('/', '..')) or '/../' in m.name:
                    raise KitError(f"{arc}: unexpected member {m.name!r}")
            if sys.version_info >= (3, 12): t.extractall(dest, members, filter='data')
            else: t.extractall(dest, members)
    except (tarfile.TarError, zlib.error, EOFError) as e: raise KitError(f"{arc}: unreadable ({e})") from None


def unpack(carry, dest, prefix: str = 'sample', log=print) -> int:
    """Extract the parts carried under `carry` into `dest` (see the module doc); 0 when `dest` is complete and
    verified, INCOMPLETE when parts are still missing on this machine."""
    carry, dest = Path(carry), Path(dest)
    stamp = dest.with_name(f'.{dest.name}.kit.json')  # beside dest, so the sample folder holds only the sample
    stage = dest.with_name(dest.name + '.incoming')
    infos = []
    for f in sorted(carry.glob(f'{prefix}*/part.json')):
        info = json.loads(f.read_text()); info['dir'] = f.parent; infos.append(info)
    ids = {i['manifest_id'] for i in infos}
    if len(ids) > 1: raise KitError(f"{carry}: parts of different samples ({len(ids)} manifest ids): run prepare.sh again")
    done = json.loads(stamp.read_text()) if stamp.exists() and dest.is_dir() else None
    if done and (not ids or ids == {done['manifest_id']}):
        log(f"{dest}: complete and verified earlier on this machine ({done['files']} files)")
        return 0
    if not infos:
        raise KitError(f"no sample parts under {carry}/{prefix}*/ and no verified {dest}: carry .carry/{prefix}1 "
                       f"(run benchmarks/gpu/prepare.sh first, here)")
    mid, n = infos[0]['manifest_id'], infos[0]['parts']
    sstamp = stage/'.kit.json'
    have = json.loads(sstamp.read_text()) if sstamp.exists() else None
    if not have or have['manifest_id'] != mid:
        if stage.exists(): shutil.rmtree(stage)
        stage.mkdir(parents=True); have = dict(manifest_id=mid, parts=n, done=[])
    for i in infos:
        if i['part'] in have['done']: log(f"part {i['part']}/{n}: already extracted"); continue
        arc = i['dir']/i['archive']
        if not arc.exists() or arc.stat().st_size != i['archive_bytes'] or _sha256(arc) != i['archive_sha256']:
            raise KitError(f"{arc}: missing or not the archive that part.json describes (a broken transfer?)")
        _extract(arc, stage)
        have['done'] = sorted(have['done'] + [i['part']])
        sstamp.write_text(json.dumps(have))
        log(f"part {i['part']}/{n}: extracted {i['files']} files")
    missing = [k for k in range(1, n + 1) if k not in have['done']]
    if missing:
        log(f"{dest}: {len(have['done'])} of {n} parts on this machine; still to carry: "
            + ' '.join(f'.carry/{prefix}{k}' for k in missing))
        return INCOMPLETE
    sums = _parse_sums((infos[0]['dir']/'SHA256SUMS').read_text())
    sstamp.unlink()
    verify(stage, sums)
    if dest.exists(): shutil.rmtree(dest)
    os.replace(stage, dest)
    stamp.write_text(json.dumps(dict(manifest_id=mid, files=len(sums), kit=KIT_VERSION)) + '\n')
    log(f"{dest}: {len(sums)} files, every one matches SHA256SUMS (manifest id {mid[:16]})")
    return 0


# ---------------------------------------------------------------------------------------------- wheel requirements
def _norm(name: str) -> str: return re.sub(r'[-_.]+', '-', name).lower()


def _packaging():
    try: from packaging.requirements import Requirement; from packaging.version import Version
    except ImportError: from pip._vendor.packaging.requirements import Requirement; from pip._vendor.packaging.version import Version
    return Requirement, Version


TARGET_ENV = dict(python_version='3.12', python_full_version='3.12.3', sys_platform='linux', platform_system='Linux',
                  platform_machine='x86_64', os_name='posix', implementation_name='cpython',
                  platform_python_implementation='CPython', extra='')


def wheel_requirements(whl: Path) -> tuple[str, str, list[str]]:
    "(name, version, Requires-Dist lines) of a wheel."
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if re.fullmatch(r'[^/]+\.dist-info/METADATA', n))
        text = z.read(meta).decode()
    get = lambda k: re.search(rf'^{k}: (.+)$', text, re.M).group(1).strip()
    return get('Name'), get('Version'), re.findall(r'^Requires-Dist: (.+)$', text, re.M)


def checkdeps(wheel_dir, machine_list, roots=(), log=print) -> list[str]:
    """Problems (empty if none) with installing every wheel in `wheel_dir` with --no-deps on a machine holding the
    packages in `machine_list`: duplicates, and requirements (of the wheels and of `roots`) met by neither."""
    Requirement, Version = _packaging()
    machine = {_norm(l.strip()) for l in Path(machine_list).read_text().splitlines() if l.strip() and not l.startswith('#')}
    wheels, problems, reqs = {}, [], [('(project)', r) for r in roots]
    for w in sorted(Path(wheel_dir).glob('*.whl')):
        name, ver, rd = wheel_requirements(w)
        if _norm(name) in wheels: problems.append(f"two wheels of {name}: keep one version")
        if _norm(name) in machine: log(f"note: {name} is on the machine too; the carried {ver} goes first on PYTHONPATH")
        wheels[_norm(name)] = Version(ver)
        reqs += [(f'{name} {ver}', r) for r in rd]
    for who, r in reqs:
        req = Requirement(r)
        if req.marker and not req.marker.evaluate(TARGET_ENV): continue
        n = _norm(req.name)
        if n in wheels:
            if req.specifier and not req.specifier.contains(wheels[n], prereleases=True):
                problems.append(f"{who} needs {r}, the carried wheel is {wheels[n]}")
        elif n in machine: continue
        elif n in NOT_NEEDED: log(f"note: {who} lists {req.name}, not carried: {NOT_NEEDED[n]}")
        else: problems.append(f"{who} needs {r}: neither carried nor on the machine")
    return problems


def settings_requirements(ini) -> list[str]:
    import configparser, shlex
    c = configparser.ConfigParser(delimiters=['=']); c.read(ini)
    return shlex.split(c['DEFAULT'].get('requirements', ''))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sp = ap.add_subparsers(dest='cmd', required=True)
    p = sp.add_parser('pack'); p.add_argument('src'); p.add_argument('carry'); p.add_argument('--parts', type=int, default=2)
    p.add_argument('--prefix', default='sample'); p.add_argument('--level', type=int, default=9)
    p.add_argument('--max-mib', type=float, default=50.0)
    p = sp.add_parser('unpack'); p.add_argument('carry'); p.add_argument('dest'); p.add_argument('--prefix', default='sample')
    p = sp.add_parser('checkdeps'); p.add_argument('wheels'); p.add_argument('machine_list')
    p.add_argument('--settings', help="also check this settings.ini's requirements")
    p = sp.add_parser('manifest'); p.add_argument('dir')
    p = sp.add_parser('check'); p.add_argument('src'); p.add_argument('carry'); p.add_argument('--prefix', default='sample')
    a = ap.parse_args(argv)
    try:
        if a.cmd == 'pack':
            pack(a.src, a.carry, a.parts, a.prefix, a.level, a.max_mib)
        elif a.cmd == 'unpack': return unpack(a.carry, a.dest, a.prefix)
        elif a.cmd == 'checkdeps':
            probs = checkdeps(a.wheels, a.machine_list, settings_requirements(a.settings) if a.settings else ())
            for p in probs: print(f"PROBLEM: {p}", file=sys.stderr)
            if probs: return 1
            print(f"{a.wheels}: every requirement is carried or on the machine")
        elif a.cmd == 'manifest': print(manifest_id(manifest(a.dir)))
        elif a.cmd == 'check':
            r = check(a.src, a.carry, a.prefix)
            print(f"{a.carry}: the {len(r['archive_bytes'])} parts hold exactly the {r['files']} files of {a.src}")
    except KitError as e:
        print(f"kit.py {a.cmd}: {e}", file=sys.stderr); return 2
    return 0


if __name__ == '__main__': sys.exit(main())
