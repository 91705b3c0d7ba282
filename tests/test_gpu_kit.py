"The GPU kit (benchmarks/gpu): the sample's carry parts reassemble bit-identically, and damage is caught."
import importlib.util, json, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, sample

KIT = ROOT/'benchmarks'/'gpu'/'kit.py'
spec = importlib.util.spec_from_file_location('gpu_kit', KIT)
kit = importlib.util.module_from_spec(spec); spec.loader.exec_module(kit)


def run_kit(*args, cwd=None):
    return subprocess.run([sys.executable, str(KIT), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def folder(tmp_path):
    "A small sample-like folder: images/ of random bytes (incompressible, like JPEGs) and labels.csv."
    import random
    rng = random.Random(0)
    src = tmp_path/'src'; (src/'images').mkdir(parents=True)
    for i in range(40): (src/'images'/f'train_{i:07d}.jpg').write_bytes(rng.randbytes(rng.randrange(2000, 6000)))
    (src/'labels.csv').write_text('id,label,split\n' + ''.join(f'train_{i:07d},{i % 2},train\n' for i in range(40)))
    return src


def test_roundtrip_in_two_calls(folder, tmp_path):
    carry, dest = tmp_path/'carry', tmp_path/'data'/'pcam-sample'
    r = run_kit('pack', folder, carry, '--parts', 2); assert r.returncode == 0, r.stderr
    infos = [json.loads((carry/f'sample{k}'/'part.json').read_text()) for k in (1, 2)]
    assert sum(i['files'] for i in infos) == 41 and all(i['files'] > 10 for i in infos)
    assert abs(infos[0]['bytes'] - infos[1]['bytes']) < 6000  # cut at about half the bytes
    assert run_kit('check', folder, carry).returncode == 0
    # first call: part 1 only -> incomplete (exit 3), nothing at dest yet
    part2 = tmp_path/'aside'; (carry/'sample2').rename(part2)
    r = run_kit('unpack', carry, dest); assert r.returncode == kit.INCOMPLETE, r.stdout + r.stderr
    assert 'still to carry: .carry/sample2' in r.stdout and not dest.exists()
    # second call: part 2 only (part 1 is not carried again) -> complete, verified, identical
    (carry/'sample1').rename(tmp_path/'gone'); part2.rename(carry/'sample2')
    r = run_kit('unpack', carry, dest); assert r.returncode == 0, r.stdout + r.stderr
    assert kit.manifest(dest) == kit.manifest(folder)
    assert not (tmp_path/'data'/'pcam-sample.incoming').exists()
    r = run_kit('unpack', carry, dest); assert r.returncode == 0 and 'verified earlier' in r.stdout


def test_pack_is_idempotent_and_deterministic(folder, tmp_path):
    a, b = tmp_path/'a', tmp_path/'b'
    assert run_kit('pack', folder, a).returncode == 0
    arc = a/'sample1'/'sample1.tar.gz'; t = arc.stat().st_mtime_ns
    r = run_kit('pack', folder, a); assert r.returncode == 0 and 'up to date' in r.stdout and arc.stat().st_mtime_ns == t
    assert run_kit('pack', folder, b).returncode == 0
    assert arc.read_bytes() == (b/'sample1'/'sample1.tar.gz').read_bytes()
    (folder/'images'/'train_0000003.jpg').write_bytes(b'changed')  # a changed source is packed again
    r = run_kit('pack', folder, a); assert r.returncode == 0 and 'packed' in r.stdout


def test_damage_is_caught(folder, tmp_path):
    carry, dest = tmp_path/'carry', tmp_path/'pcam-sample'
    assert run_kit('pack', folder, carry).returncode == 0
    arc = carry/'sample2'/'sample2.tar.gz'; data = bytearray(arc.read_bytes()); data[len(data)//2] ^= 1
    arc.write_bytes(bytes(data))
    r = run_kit('unpack', carry, dest)
    assert r.returncode == 2 and 'Traceback' not in r.stderr and 'sample2.tar.gz' in r.stderr, r.stderr
    assert not dest.exists()
    r = run_kit('check', folder, carry); assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    # a file that differs after extraction (here: a wrong SHA256SUMS) fails the check and leaves no dest
    assert run_kit('pack', folder, carry).returncode == 0  # repairs the archive
    for k in (1, 2):
        s = carry/f'sample{k}'/'SHA256SUMS'; s.write_text(s.read_text().replace('images/train_0000005.jpg', 'images/x.jpg'))
    r = run_kit('unpack', carry, dest)
    assert r.returncode == 2 and 'files missing' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not dest.exists()


def test_missing_parts_and_mixed_samples(folder, tmp_path):
    r = run_kit('unpack', tmp_path/'nothing', tmp_path/'pcam-sample')
    assert r.returncode == 2 and 'prepare.sh' in r.stderr
    carry = tmp_path/'carry'
    assert run_kit('pack', folder, carry).returncode == 0
    (folder/'labels.csv').write_text('other\n'); other = tmp_path/'other'
    assert run_kit('pack', folder, other).returncode == 0
    (carry/'sample2').rename(tmp_path/'x'); (other/'sample2').rename(carry/'sample2')
    r = run_kit('unpack', carry, tmp_path/'pcam-sample')
    assert r.returncode == 2 and 'different samples' in r.stderr


def test_split_parts():
    man = {f'f{i}': (s, '0' * 64) for i, s in enumerate([5, 5, 5, 5, 80])}
    parts = kit.split_parts(man, 2)
    assert [len(p) for p in parts] == [4, 1] and sum(parts, []) == sorted(man)
    man = {f'f{i:02d}': (10, '0' * 64) for i in range(30)}
    assert [len(p) for p in kit.split_parts(man, 3)] == [10, 10, 10]
    with pytest.raises(kit.KitError): kit.split_parts({'a': (1, '')}, 2)


# --- the real carry parts and wheels, where prepare.sh made them (never in git: skipped on a clean clone) ---
def test_carried_sample_is_the_sample():
    src = sample()
    infos = [json.loads(p.read_text()) for p in sorted((ROOT/'.carry').glob('sample*/part.json'))]
    if not infos: pytest.skip('no .carry/sample* parts (run bash benchmarks/gpu/prepare.sh)')
    for i in infos:  # each part travels in one device call beside the wheels and the working tree (64 MiB in all)
        assert (ROOT/'.carry'/f"sample{i['part']}"/i['archive']).stat().st_size < 50 * 2**20
    r = kit.check(src, ROOT/'.carry')  # every file of the sample, byte for byte, read back from the archives
    assert r['files'] == infos[0]['total_files'] and {i['manifest_id'] for i in infos} == {r['manifest_id']}


def test_wheels_meet_requirements():
    if not list((ROOT/'.whl').glob('*.whl')): pytest.skip('no .whl (run bash benchmarks/gpu/prepare.sh)')
    probs = kit.checkdeps(ROOT/'.whl', ROOT/'benchmarks'/'gpu'/'machine_packages.txt',
                          kit.settings_requirements(ROOT/'settings.ini'), log=lambda *a: None)
    assert probs == []
    assert all(p.name.endswith('-none-any.whl') for p in (ROOT/'.whl').glob('*.whl'))
