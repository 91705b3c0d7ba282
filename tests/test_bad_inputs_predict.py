"pcam_predict on bad input: one-line errors naming the file or value (exit 2, no traceback) before the model is loaded; no CSV."
import numpy as np, pytest, torch
from PIL import Image

from conftest import fork_cli, run_command, assert_one_line_error, assert_uniform_help
from pcam_nb.predict import pcam_predict


def test_help_is_uniform():
    flags = assert_uniform_help(fork_cli('pcam_predict', '--help'))
    assert {'--out', '--no-tta', '--stride', '--heatmaps', '--all-cells', '--max-pixels', '--no-progress'} <= flags
    assert '--tta' not in flags                                             # on by default; --no-tta turns it off


@pytest.fixture
def inputs(tiny_run_copy, tmp_path):
    "The run, a 64x64 patch, a 300 x 200 region, an image smaller than one window, a folder without images."
    from pcam_nb.data import load_patches
    run, data = tiny_run_copy
    x = load_patches(data, 'test', progress=False).x
    d = tmp_path/'in'; d.mkdir()
    Image.fromarray(x[0]).save(d/'patch.png')
    Image.fromarray(np.concatenate([np.concatenate(list(x[r * 5:r * 5 + 5]), 1) for r in range(4)])[:200, :300]).save(d/'region.png')
    Image.fromarray(np.full((50, 200, 3), 200, np.uint8)).save(tmp_path/'small.png')
    (tmp_path/'empty').mkdir(); (tmp_path/'empty'/'notes.txt').write_text('')
    (tmp_path/'zero.png').write_bytes(b'')
    return run, d


def test_small_image_through_the_console_script(inputs, tmp_path):
    run, d = inputs
    r = fork_cli('pcam_predict', run, tmp_path/'small.png', '--out', tmp_path/'x.csv', '--device', 'cpu')
    assert_one_line_error(r, 'small.png: 200x50 px is smaller than one 64x64 window')
    assert not (tmp_path/'x.csv').exists()


def test_bad_inputs(inputs, tmp_path):
    run, d = inputs
    out = tmp_path/'res'/'x.csv'
    go = lambda *a: run_command(pcam_predict, run, '--device', 'cpu', '--no-progress', *a)   # a case's own --device comes last
    cases = [
        ((d/'patch.png', '--out', out, '--stride', 0), ['stride 0', 'from 1 to 64']),
        ((d/'patch.png', '--out', out, '--stride', 80), ['stride 80']),              # larger than the run's 64 px window
        ((d/'patch.png', '--out', out, '--bs', 0), ['bs=0']),
        ((d/'patch.png', '--out', out, '--device', 'tpu'), ["device='tpu'"]),
        ((d/'patch.png',), ['no output file', '--out']),
        ((d/'patch.png', '--out', d/'patch.png'), ['patch.png: is one of the inputs']),
        ((d/'patch.png', '--out', d/'patch.png'/'x.csv'), ['Pass --out with a folder']),
        ((d/'region.png', '--out', out, '--heatmaps', d/'patch.png'), ['Pass --heatmaps with a folder']),
        ((tmp_path/'empty', '--out', out), ['empty: no image files']),
        ((tmp_path/'zero.png', '--out', out), ['zero.png: unreadable image']),
        ((d/'region.png', '--out', out, '--max-pixels', 10000), ['region.png: 300x200 px (60,000 pixels) is over the limit of 10,000 pixels', 'pass --max-pixels 60000']),
        ((d/'region.png', '--out', out, '--max-pixels', -1), ['max_pixels=-1']),
    ]
    for args, frags in cases: assert_one_line_error(go(*args), *frags)
    assert_one_line_error(run_command(pcam_predict, tmp_path/'norun', d/'patch.png', '--out', out), 'norun', 'config.json', 'not found')
    r = go(d/'patch.png', '--out', out, '--tta')                                  # the flag that only "said so" is gone
    assert r.returncode == 2 and 'unrecognized arguments: --tta' in r.stderr and 'Traceback' not in r.stderr
    assert not out.exists()
    r = go(d/'region.png', '--out', out, '--max-pixels', 60000, '--no-tta')       # lifted for this call: it runs
    assert r.returncode == 0 and out.exists(), r.stderr[-2000:]
