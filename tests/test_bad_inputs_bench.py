"pcam_bench on bad input: one-line errors naming the value (exit 2, no traceback) before any data is generated."
import pytest, torch

from conftest import fork_cli, run_command, assert_one_line_error, assert_uniform_help
from pcam_nb.bench import pcam_bench


def test_help_is_uniform():
    flags = assert_uniform_help(fork_cli('pcam_bench', '--help'))
    assert {'--json', '--no-compile', '--no-progress', '--per-item-steps', '--n-train', '--tta-n'} <= flags
    assert '--compile' not in flags


def test_bad_batch_size_through_the_console_script(tmp_path):
    r = fork_cli('pcam_bench', '--json', tmp_path/'b.json', '--data', tmp_path/'d', '--archs', 'simple_cnn', '--bs', 0, '--device', 'cpu')
    assert_one_line_error(r, 'bs=0', 'whole number >= 1')
    assert not (tmp_path/'d').exists() and not (tmp_path/'b.json').exists()


def test_bad_inputs(tmp_path):
    (tmp_path/'afile').write_text('')
    base = ['--data', tmp_path/'d', '--archs', 'simple_cnn', '--device', 'cpu', '--no-progress']
    go = lambda *a: run_command(pcam_bench, '--json', tmp_path/'out'/'b.json', *base, *a)
    cases = [
        (('--archs', ','), ['at least one architecture']),
        (('--archs', 'vgg17'), ['vgg17']),
        (('--steps', '0'), ['steps=0']),
        (('--warmup', '-1'), ['warmup=-1']),
        (('--per-item-steps', '0'), ['per-item-steps=0']),
        (('--workers', '-1'), ['workers=-1']),
        (('--n-train', '8', '--bs', '16'), ['n-train=8 is less than one batch']),
        (('--n-valid', '0'), ['n-valid=0']),
        (('--tta-n', '0'), ['tta-n=0']),
        (('--device', 'tpu'), ["device='tpu'"]),
    ]
    for args, frags in cases: assert_one_line_error(go(*args), *frags)
    assert_one_line_error(run_command(pcam_bench, *base), '--json FILE is required')
    assert_one_line_error(run_command(pcam_bench, '--json', tmp_path, *base), 'is a folder')
    assert_one_line_error(run_command(pcam_bench, '--json', tmp_path/'afile'/'b.json', *base), 'afile: is a file, not a folder', '--json')
    assert_one_line_error(run_command(pcam_bench, '--json', tmp_path/'b.json', '--profile', tmp_path/'afile', *base), '--profile')
    if not torch.cuda.is_available(): assert_one_line_error(go('--device', 'cuda'), 'no CUDA GPU here')
    assert not (tmp_path/'d').exists() and not (tmp_path/'out').exists()   # nothing generated, nothing written


def test_too_few_batches(tmp_path):
    "Settings that only the data can refute: after the (tiny) data exists, before any timing."
    r = run_command(pcam_bench, '--json', tmp_path/'b.json', '--data', tmp_path/'d', '--archs', 'simple_cnn', '--bs', 16,
                    '--steps', 500, '--n-train', 64, '--n-valid', 16, '--device', 'cpu', '--no-progress')
    assert_one_line_error(r, 'warmup + steps')
    assert not (tmp_path/'b.json').exists()
