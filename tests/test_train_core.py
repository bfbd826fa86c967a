"""labsupport.train_core: the step loop's progress bar, fit, the cosine schedule and the weight average."""

import math

import pytest
import torch

from labsupport import config, train_core
from labsupport.data import TensorLoader


def _recorded_bars(monkeypatch) -> list:
    bars = []

    class Recording(train_core.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(train_core, "tqdm", Recording)
    return bars


def test_progress_of_a_time_budget_shows_seconds_not_a_made_up_step_total(monkeypatch):
    bars = _recorded_bars(monkeypatch)
    loader = TensorLoader(torch.ones(64, 1), batch_size=4)
    hist = train_core.fit(torch.nn.Linear(1, 1), lambda m, b: m(b).pow(2).mean(), loader, epochs=10**6, max_seconds=1.0, device="cpu")
    (bar,) = bars
    assert bar.total == 1.0 and 0.9 <= hist["seconds"][-1] < 1.5
    text = str(bar)
    assert "/1 s" in text and "16000000" not in text and "1000000" not in text, text


def test_progress_of_a_step_count_counts_steps(monkeypatch):
    bars = _recorded_bars(monkeypatch)
    train_core.fit(torch.nn.Linear(1, 1), lambda m, b: m(b).pow(2).mean(), TensorLoader(torch.ones(64, 1), batch_size=4), epochs=2, device="cpu")
    (bar,) = bars
    assert bar.total == 32 and bar.n == 32


def test_fit_reduces_loss_and_respects_budgets():
    config.seed_everything(0)
    x = torch.randn(512, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
    model = torch.nn.Linear(3, 1)
    loss_fn = lambda m, b: ((m(b[0]).squeeze(1) - b[1]) ** 2).mean()
    hist = train_core.fit(model, loss_fn, TensorLoader(x, y, batch_size=64), epochs=20, lr=0.05, device="cpu")
    assert len(hist["loss"]) == 20 * 8
    assert sum(hist["loss"][-8:]) / 8 < 0.01 * sum(hist["loss"][:8]) / 8
    hist = train_core.fit(model, loss_fn, TensorLoader(x, y, batch_size=64), epochs=20, max_steps=5, device="cpu")
    assert len(hist["loss"]) == 5


def test_fit_logs_extra_numbers_and_stops_on_nan():
    model = torch.nn.Linear(1, 1)
    loader = TensorLoader(torch.ones(8, 1), batch_size=4)
    hist = train_core.fit(model, lambda m, b: (m(b).pow(2).mean(), {"extra": 1.5}), loader, device="cpu")
    assert hist["extra"] == [1.5, 1.5]
    with pytest.raises(FloatingPointError, match="learning rate"):
        train_core.fit(model, lambda m, b: m(b).mean() * float("nan"), loader, device="cpu")


def test_cosine_decay_warms_up_then_falls_to_zero_by_steps_or_by_time():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    sched = train_core.cosine_decay(opt, steps=10, warmup=4)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(2.0 * 0.25 * 1.0) and lrs[3] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.3)))
    assert lrs[5] == pytest.approx(1.0) and lrs[10] == pytest.approx(0.0, abs=1e-12)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = train_core.cosine_decay(opt, seconds=1e-9)  # a time budget already spent: the rate is at the end of its cosine
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_weight_average_is_an_ema_with_a_warm_up():
    """torch's AveragedModel: the first update copies, the n-th after it lerps with decay min(decay, (1 + n) / (10 + n))."""
    model = torch.nn.Linear(3, 2)
    avg = train_core.weight_average(model, decay=0.9)
    want = None
    for n in range(30):
        with torch.no_grad():
            model.weight.add_(torch.randn(2, 3))
        avg.update_parameters(model)
        w = model.weight.detach()
        want = w.clone() if want is None else want.lerp(w, 1 - min(0.9, (1 + n) / (10 + n)))
    assert torch.equal(avg.module.weight, want)
