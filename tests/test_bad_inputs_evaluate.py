"pcam_evaluate on bad input: one-line errors naming the value (exit 2, no traceback) before any data is read; a split the run trained on is said to be."
import json
import pytest, torch

from conftest import fork_cli, run_command, assert_one_line_error, assert_clean_error, assert_uniform_help
from pcam_nb.evaluate import pcam_evaluate


def test_help_is_uniform():
    flags = assert_uniform_help(fork_cli('pcam_evaluate', '--help'))
    assert {'--no-tta', '--no-plots', '--no-progress', '--compare', '--n-boot', '--target-sensitivity'} <= flags
    assert '--tta' not in flags and '--plots' not in flags                  # TTA is on by default: one flag turns it off


def test_bad_n_boot_through_the_console_script(tiny_run_copy):
    run, _ = tiny_run_copy
    assert_one_line_error(fork_cli('pcam_evaluate', run, '--n-boot', 0, '--device', 'cpu'), 'n_boot=0', 'whole number >= 1')
    assert not list(run.glob('eval_*'))


def test_bad_inputs(tiny_run_copy, tmp_path):
    run, _ = tiny_run_copy
    go = lambda *a: run_command(pcam_evaluate, run, '--device', 'cpu', '--no-progress', *a)
    cases = [
        (('--n-boot', '-1'), ['n_boot=-1']),
        (('--target-sensitivity', '1.5'), ['target_sensitivity=1.5', 'strictly between 0 and 1']),
        (('--target-sensitivity', '0'), ['target_sensitivity=0.0']),
        (('--target-sensitivity', '1'), ['target_sensitivity=1.0']),
        (('--threshold', '1.5'), ['threshold=1.5', 'between 0 and 1']),
        (('--threshold', '-0.1'), ['threshold=-0.1']),
        (('--bs', '0'), ['bs=0']),
        (('--limit', '0'), ['limit=0']),
        (('--device', 'tpu'), ["device='tpu'"]),
        (('--split', 'nope'), ["Unknown split 'nope'"]),
    ]
    for args, frags in cases: assert_one_line_error(go(*args), *frags)
    assert not list(run.glob('eval_*'))                                     # nothing was evaluated or written
    assert_one_line_error(run_command(pcam_evaluate, tmp_path/'nothing'), 'config.json', 'not found')
    assert_one_line_error(run_command(pcam_evaluate, run, run), '2 run folders given', '--compare')
    if not torch.cuda.is_available(): assert_one_line_error(go('--device', 'cuda'), 'no CUDA GPU here')
    r = go('--n-boot', 'many')
    assert r.returncode == 2 and "invalid int value: 'many'" in r.stderr and 'Traceback' not in r.stderr


def test_train_split_is_called_optimistic(tiny_run_copy):
    "Evaluated on the split it was trained on, the report and the table both say so."
    run, _ = tiny_run_copy
    r = run_command(pcam_evaluate, run, '--split', 'train', '--limit', 128, '--no-tta', '--no-plots', '--n-boot', 50,
                    '--device', 'cpu', '--no-progress')
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((run/'eval_train.json').read_text())
    assert rep['trained_split'] and not rep['selection_split'] and 'trained on this split' in rep['note']
    assert 'note: the model was trained on this split, so these numbers are optimistic' in r.stdout
