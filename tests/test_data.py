from pathlib import Path

import pytest
import torch
import torchvision

from labsupport import config, data


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.delenv("LABSUPPORT_DATA", raising=False)
    assert config.data_root() == (Path.home() / ".cache" / "labsupport" / "data").resolve()
    monkeypatch.setenv("LABSUPPORT_DATA", str(tmp_path / "env"))
    assert config.data_root() == (tmp_path / "env").resolve()
    assert config.data_root(tmp_path / "arg") == (tmp_path / "arg").resolve()


def test_offline_and_missing_gives_clear_error(monkeypatch, tmp_path):
    # An unreachable mirror makes the download fail the same way with or without internet.
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(data.DataUnavailable) as info:
        data.mnist(train=True, root=tmp_path)
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg and "LABSUPPORT_DATA" in msg and str(tmp_path) in msg


def test_mnist_tensors(mnist_available):
    x, y = data.mnist_tensors(train=False, n=500)
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (500,)
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.99
    x2, y2 = data.mnist_tensors(train=False, n=500)
    assert torch.equal(y, y2), "the same seed must give the same subset"
    assert len(y.unique()) == 10


def test_binarize_is_bernoulli():
    x = torch.full((20000,), 0.3)
    b = data.binarize(x, torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert abs(b.mean().item() - 0.3) < 0.02


def test_tensor_loader_covers_everything_once():
    x, y = torch.arange(10).float(), torch.arange(10)
    loader = data.TensorLoader(x, y, batch_size=4, seed=0)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert all(torch.equal(bx.long(), by) for bx, by in batches)
    assert len(data.TensorLoader(x, batch_size=4, drop_last=True)) == 2


def test_toy_mixtures():
    x, c = data.ring_of_gaussians(2000, seed=0)
    assert x.shape == (2000, 2) and c.shape == (8, 2)
    assert len(torch.unique(c.round(decimals=4), dim=0)) == 8, "8 distinct centres (no repeated endpoint)"
    assert torch.allclose(c.norm(dim=1), torch.ones(8))
    d = torch.cdist(x, c).min(1).values
    assert (d < 0.05).float().mean() > 0.99
    g, gc = data.grid_of_gaussians(1000, seed=0)
    assert gc.shape == (25, 2) and gc.min() == -4 and gc.max() == 4
