import pytest
import torch

from labsupport import config, train
from labsupport.data import TensorLoader


def test_get_device_default_and_cpu(monkeypatch):
    monkeypatch.delenv("LABSUPPORT_DEVICE", raising=False)
    assert train.get_device("cpu") == torch.device("cpu")
    assert train.get_device().type in ("cpu", "cuda", "mps")
    monkeypatch.setenv("LABSUPPORT_DEVICE", "cpu")
    assert train.get_device() == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:banana", "tpu"])
def test_unknown_device_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="Use 'cpu', 'cuda'"):
        train.get_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        train.get_device("cuda")


def test_seed_everything_repeats():
    train.seed_everything(3)
    a = torch.randn(5)
    train.seed_everything(3)
    assert torch.equal(a, torch.randn(5))


def test_fit_reduces_loss_and_respects_budgets():
    train.seed_everything(0)
    x = torch.randn(512, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
    model = torch.nn.Linear(3, 1)
    loss_fn = lambda m, b: ((m(b[0]).squeeze(1) - b[1]) ** 2).mean()
    hist = train.fit(model, loss_fn, TensorLoader(x, y, batch_size=64), epochs=20, lr=0.05, device="cpu")
    assert len(hist["loss"]) == 20 * 8
    assert sum(hist["loss"][-8:]) / 8 < 0.01 * sum(hist["loss"][:8]) / 8
    hist = train.fit(model, loss_fn, TensorLoader(x, y, batch_size=64), epochs=20, max_steps=5, device="cpu")
    assert len(hist["loss"]) == 5


def test_fit_logs_extra_numbers_and_stops_on_nan():
    model = torch.nn.Linear(1, 1)
    loader = TensorLoader(torch.ones(8, 1), batch_size=4)
    hist = train.fit(model, lambda m, b: (m(b).pow(2).mean(), {"extra": 1.5}), loader, device="cpu")
    assert hist["extra"] == [1.5, 1.5]
    with pytest.raises(FloatingPointError, match="learning rate"):
        train.fit(model, lambda m, b: m(b).mean() * float("nan"), loader, device="cpu")


def test_config_pick(monkeypatch):
    monkeypatch.setattr(config, "FAST", True)
    assert config.pick(normal=10, fast=1) == 1
    monkeypatch.setattr(config, "FAST", False)
    assert config.pick(normal=10, fast=1) == 10
    monkeypatch.setenv("LABSUPPORT_THREADS", "3")
    assert config.num_threads() == 3
