"pcam_download on bad input: each case a one-line error naming the value (exit 2, no traceback), before anything is downloaded."
import os
from pathlib import Path
import pytest

from conftest import fork_cli, run_command, assert_one_line_error, assert_uniform_help
from pcam_nb.download import pcam_download

NOWHERE = 'http://127.0.0.1:9/files'   # never contacted: every case fails before the first request


def test_help_is_uniform():
    flags = assert_uniform_help(fork_cli('pcam_download', '--help'))
    assert {'--base-url', '--no-meta', '--keep-gz', '--no-progress', '--retries', '--timeout'} <= flags
    assert '--quiet' not in flags and '--meta' not in flags


def test_bad_retries_through_the_console_script(tmp_path):
    r = fork_cli('pcam_download', '--dest', tmp_path/'d', '--retries', -1, '--base-url', NOWHERE)
    assert_one_line_error(r, 'retries=-1', 'whole number >= 0')
    assert not (tmp_path/'d').exists()


def read_only_folder(tmp_path) -> Path:
    "A folder that cannot be written to: a read-only one, or (as root, who writes anywhere) one under /sys."
    if os.geteuid() != 0:
        d = tmp_path/'ro'; d.mkdir(); d.chmod(0o555)
        return d
    if not Path('/sys/kernel').is_dir(): pytest.skip('no read-only folder for root here')
    return Path('/sys/kernel/pcam-nb-test')


def test_bad_inputs(tmp_path):
    (tmp_path/'afile').write_text('')
    (tmp_path/'sums.txt').write_text('not a checksum line\n')
    go = lambda *a: run_command(pcam_download, '--base-url', NOWHERE, '--no-progress', *a)
    cases = [
        (('--dest', tmp_path/'a', '--retries', '-3'), ['retries=-3']),
        (('--dest', tmp_path/'a', '--timeout', '0'), ['timeout=0', 'seconds > 0']),
        (('--dest', tmp_path/'a', '--timeout', '-1.5'), ['timeout=-1.5']),
        (('--dest', tmp_path/'a', '--splits', 'train val'), ["Unknown split 'val'"]),
        (('--dest', tmp_path/'a', '--splits', ' , '), ['No split given']),
        (('--dest', tmp_path/'afile'), ['afile: is a file, not a folder', '--dest']),
        (('--dest', tmp_path/'afile'/'pcam'), ['cannot write there', '--dest']),
        (('--dest', read_only_folder(tmp_path)/'pcam'), ['cannot write there']),
        (('--dest', tmp_path/'b', '--md5', tmp_path/'nope.txt'), ['nope.txt: checksum file not found']),
        (('--dest', tmp_path/'b', '--md5', tmp_path/'sums.txt'), ['sums.txt, line 1', 'md5sum']),
    ]
    for args, frags in cases: assert_one_line_error(go(*args), *frags)
    assert not (tmp_path/'a').exists()                       # refused before the folder is made
    r = run_command(pcam_download, '--dest', tmp_path/'c', '--retries', 'x')
    assert r.returncode == 2 and "invalid int value: 'x'" in r.stderr      # argparse's own message
