"pcam_synth on bad input: each case a one-line error naming the value (exit 2, no traceback), before anything is generated."
from conftest import fork_cli, run_command, assert_one_line_error, assert_uniform_help
from pcam_nb.synth import pcam_synth


def test_help_is_uniform():
    flags = assert_uniform_help(fork_cli('pcam_synth', '--help'))
    assert {'--dest', '--n-train', '--n-valid', '--n-test', '--seed', '--size', '--force', '--no-progress'} <= flags


def test_negative_count_through_the_console_script(tmp_path):
    r = fork_cli('pcam_synth', '--dest', tmp_path/'bad', '--n-train', -5, '--n-valid', 0, '--n-test', 0, timeout=120)
    assert_one_line_error(r, 'n_train=-5', '>= 0')
    assert not (tmp_path/'bad').exists()


def test_bad_inputs(tmp_path):
    (tmp_path/'afile').write_text('')
    go = lambda *a: run_command(pcam_synth, '--dest', tmp_path/'out', *a)
    cases = [
        (('--n-valid', '-1'), ['n_valid=-1', 'whole number >= 0']),
        (('--n-train', '0', '--n-valid', '0', '--n-test', '0'), ['all 0: nothing to generate']),
        (('--size', '50'), ['size=50', 'multiple of 32']),
        (('--size', '32'), ['size=32', 'from 64 to 512']),
        (('--size', '1024'), ['size=1024']),
        (('--seed', '-1'), ['seed=-1', '>= 0']),
    ]
    for args, frags in cases: assert_one_line_error(go(*args), *frags)
    assert not (tmp_path/'out').exists()
    assert_one_line_error(run_command(pcam_synth, '--dest', tmp_path/'afile', '--n-train', 8), 'afile: is a file, not a folder')
    assert_one_line_error(run_command(pcam_synth, '--dest', tmp_path/'afile'/'sub', '--n-train', 8), 'cannot write there')
    r = go('--size', 'abc')
    assert r.returncode == 2 and "invalid int value: 'abc'" in r.stderr and 'Traceback' not in r.stderr
