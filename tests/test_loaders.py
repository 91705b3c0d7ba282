"CPU tests of the device-resident / host-staged loaders through fastai's API: fit, get_preds, tta, show_batch, seeding."
import matplotlib; matplotlib.use('Agg')
import numpy as np, pytest, torch, torch.nn as nn
import fastai.callback.schedule  # Learner.fine_tune
from fastai.learner import Learner
import fastai.callback.progress  # Learner.no_bar, used by tta
from fastai.losses import CrossEntropyLossFlat
from fastai.torch_core import set_seed
from pcam_nb.data import Patches, PCAM_CLASSES
from pcam_nb.core import d4
from pcam_nb.loaders import patch_dls, RandomD4, PatchDL
from fastai.torch_core import TensorImage


def patches(n, seed, size=32):
    rng = np.random.default_rng(seed)
    return Patches(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 2, n), PCAM_CLASSES)


TRAIN, VALID = patches(100, 0), patches(37, 1)


def tiny_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


@pytest.mark.parametrize('resident', [True, False])
def test_shapes_partial_batches(resident):
    dls = patch_dls(TRAIN, VALID, bs=16, device='cpu', resident=resident)
    assert dls.train.resident == resident
    xb, yb = dls.one_batch()
    assert xb.shape == (16, 3, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert [len(b[1]) for b in dls.train] == [16] * 6                   # train drops the partial batch
    assert [len(b[1]) for b in dls.valid] == [32, 5]                    # valid keeps it (no drop_last)
    assert torch.cat([b[1] for b in dls.valid]).tolist() == list(VALID.y)  # in order


def test_d4_exact_and_complete():
    x = TensorImage(torch.randint(0, 256, (512, 3, 12, 12), dtype=torch.uint8))
    out = RandomD4()(x, split_idx=0)
    ks = [[k for k in range(8) if torch.equal(out[i], d4(x[i], k))] for i in range(len(x))]
    assert all(len(k) == 1 for k in ks)
    counts = np.bincount([k[0] for k in ks], minlength=8)
    assert (counts > 30).all(), counts                                  # all 8 elements, roughly uniform


def _epochs(seed, resident=True, n=2):
    set_seed(seed)
    dls = patch_dls(TRAIN, VALID, bs=16, device='cpu', resident=resident)
    return [torch.cat([b[0] for b in dl]) for _ in range(n) for dl in (dls.train, dls.valid)]


def test_determinism_and_staged_equals_resident():
    a, b, c, s = _epochs(7), _epochs(7), _epochs(8), _epochs(7, resident=False)
    for u, v, w in zip(a, b, s): assert torch.equal(u, v) and torch.equal(u, w)
    assert not torch.equal(a[0], c[0])                                  # another seed, another order/augmentation
    assert not torch.equal(a[0], a[2])                                  # each epoch reshuffles (and re-augments)
    assert torch.equal(a[1], a[3])                                      # valid: the same every epoch


@pytest.mark.parametrize('resident', [True, False])
def test_learner_api(resident, tmp_path):
    set_seed(0)
    dls = patch_dls(TRAIN, VALID, bs=16, device='cpu', resident=resident)
    learn = Learner(dls, tiny_model(), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    preds, targs = learn.get_preds()
    assert preds.shape == (37, 2) and targs.tolist() == list(VALID.y)
    p1, _ = learn.get_preds(); assert torch.equal(preds, p1)           # validation is deterministic
    tp, tt = learn.tta(n=2)
    assert tp.shape == (37, 2) and tt.tolist() == list(VALID.y)
    assert torch.allclose(preds.sum(-1), torch.ones(37)) and not torch.allclose(tp, preds)  # probabilities; the augmented views count
    # new, unlabelled patches: test_dl over an array gives the valid predictions; predict decodes the class
    tdl = dls.test_dl(VALID.x[:5])
    tpreds, _ = learn.get_preds(dl=tdl)
    assert torch.allclose(tpreds, preds[:5], atol=1e-6)
    cat, idx, probs = learn.predict(VALID.x[3])
    assert str(cat) in VALID.classes and int(idx) == int(preds[3].argmax()) and torch.allclose(probs, preds[3], atol=1e-6)
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, freeze_epochs=1)           # fastai's fine-tuning schedule
    assert len(learn.recorder.values) == 1
    dls.show_batch(max_n=4)
    dls.valid.show_batch(max_n=4, centre=False)
    dls.train.show_batch(max_n=4, unique=True)                          # fastai patches get_idxs with endless zeros
    xb, yb = dls.valid.one_batch()
    assert xb.shape == (32, 3, 32, 32)
