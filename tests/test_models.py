"Model zoo: pretrained-weight sources and failures (offline, refused and stalled downloads, bad files), registry errors."
import os, socket, threading, time
from pathlib import Path

import pytest, torch, torchvision

import pcam_nb.models as M
from pcam_nb.models import WeightsUnavailableError, create_model, imagenet_state_dict, load_weights_file


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    "An empty TORCH_HOME, so no real cache is used."
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'th'))
    monkeypatch.delenv('PCAM_OFFLINE', raising=False)
    return tmp_path/'th'


def fake_source(monkeypatch, tmp_path, url):
    "Point resnet18's weights at `url`, cached under tmp_path."
    path = tmp_path/'th'/'hub'/'checkpoints'/'resnet18-f37072fd.pth'
    monkeypatch.setattr(M, 'weights_file', lambda tv_name: (path, url))
    return path


def test_offline_is_fast_and_says_what_to_do(torch_home, monkeypatch):
    monkeypatch.setenv('PCAM_OFFLINE', '1')
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as e: create_model('vgg16_bn', pretrained=True)
    assert time.perf_counter() - t0 < 2
    msg = str(e.value)
    for s in ('vgg16_bn-6c64b313.pth', str(torch_home/'hub'/'checkpoints'), 'TORCH_HOME', '--weights PATH', 'without --pretrained',
              'https://download.pytorch.org/models/vgg16_bn-6c64b313.pth'):
        assert s in msg, s
    assert isinstance(e.value, RuntimeError)


def test_refused_download_fails_fast(torch_home, tmp_path, monkeypatch):
    with socket.socket() as s:                      # a port with nothing listening
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    path = fake_source(monkeypatch, tmp_path, f'http://127.0.0.1:{port}/resnet18-f37072fd.pth')
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match='downloading it failed'): create_model('resnet18', pretrained=True)
    assert time.perf_counter() - t0 < 5 and not path.exists()
    assert socket.getdefaulttimeout() is None       # the temporary timeout was undone


def test_stalled_download_times_out(torch_home, tmp_path, monkeypatch):
    "A server that accepts the connection and never answers: the download gives up after the timeout, no hang."
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(4)
    conns = []
    t = threading.Thread(target=lambda: conns.append(srv.accept()), daemon=True); t.start()
    try:
        fake_source(monkeypatch, tmp_path, f'http://127.0.0.1:{srv.getsockname()[1]}/resnet18-f37072fd.pth')
        t0 = time.perf_counter()
        with pytest.raises(WeightsUnavailableError, match='timed out'): imagenet_state_dict('resnet18', timeout=1)
        assert time.perf_counter() - t0 < 5
    finally:
        for c, _ in conns: c.close()
        srv.close()


def test_cache_and_weights_path(torch_home, tmp_path):
    ref = torchvision.models.resnet18()
    path, _ = M.weights_file('resnet18')
    assert path == torch_home/'hub'/'checkpoints'/'resnet18-f37072fd.pth'
    path.parent.mkdir(parents=True); torch.save(ref.state_dict(), path)
    m = create_model('resnet18', pretrained=True, n_out=3)
    assert torch.equal(m[0][4][0].conv1.weight, ref.layer1[0].conv1.weight)
    assert m(torch.zeros(2, 3, 96, 96)).shape == (2, 3)
    # the same file passed explicitly, wrapped the way training checkpoints often are
    torch.save({'state_dict': ref.state_dict()}, tmp_path/'w.pth')
    m = create_model('resnet18', weights=tmp_path/'w.pth')
    assert torch.equal(m[0][1].running_mean, ref.bn1.running_mean)
    # torchvision's published files predate BatchNorm's num_batches_tracked: a file without it loads completely
    torch.save({k: v for k, v in ref.state_dict().items() if not k.endswith('num_batches_tracked')}, tmp_path/'old.pth')
    m = create_model('resnet18', weights=tmp_path/'old.pth')
    assert not any(t.is_meta for t in m.state_dict().values()) and m[0][1].num_batches_tracked.item() == 0


def test_bad_weights_files(torch_home, tmp_path):
    torch.save({'layer9.weight': torch.zeros(3)}, tmp_path/'keys.pth')
    with pytest.raises(WeightsUnavailableError, match=r"does not fit torchvision's vgg11_bn: 0 of \d+ body tensors"):
        create_model('vgg11_bn', weights=tmp_path/'keys.pth')
    with pytest.raises(WeightsUnavailableError, match='not found'): create_model('vgg11_bn', weights=tmp_path/'nope.pth')
    # a pcam_nb model's own state_dict is not a torchvision state_dict
    torch.save(create_model('resnet18').state_dict(), tmp_path/'ours.pth')
    with pytest.raises(WeightsUnavailableError, match="keys like"): create_model('resnet18', weights=tmp_path/'ours.pth')


class _Evil:
    def __reduce__(self): return (os.system, (f'touch {_Evil.marker}',))


def test_pickled_code_is_never_run(tmp_path):
    _Evil.marker = tmp_path/'pwned'
    torch.save({'w': torch.zeros(1), 'x': _Evil()}, tmp_path/'evil.pth')
    with pytest.raises(WeightsUnavailableError, match='refused for safety'): load_weights_file(tmp_path/'evil.pth')
    assert not _Evil.marker.exists()


def test_registry_errors():
    with pytest.raises(ValueError, match="Did you mean 'vgg16_bn'"): create_model('vgg16bn')
    with pytest.raises(ValueError, match='Known architectures: .*simple_cnn'): create_model('alexnet')
    with pytest.raises(ValueError, match='no pretrained weights'): create_model('simple_cnn', pretrained=True)
