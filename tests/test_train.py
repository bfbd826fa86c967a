import math

import pytest
import torch

from labsupport import config, train
from labsupport.data import TensorLoader


@pytest.mark.parametrize("cuda, mps, best", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, best):
    monkeypatch.delenv("LABSUPPORT_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert config.get_device() == torch.device(best)
    assert config.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LABSUPPORT_DEVICE", "cpu")  # the environment overrides the best device
    assert config.get_device() == torch.device("cpu")


def test_one_device_rule(monkeypatch):
    """None: the model's device, or the best one without a model; a string goes through get_device."""
    monkeypatch.delenv("LABSUPPORT_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    model = torch.nn.Linear(2, 2)
    assert config.resolve_device(None, model) == torch.device("cpu")
    assert config.resolve_device(None, torch.nn.ReLU()) == config.get_device()  # no parameters: the best device
    assert config.resolve_device("cpu", model) == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        config.resolve_device("cuda", model)
    with pytest.raises(ValueError, match="Use 'cpu'"):
        config.resolve_device("gpu")


@pytest.mark.parametrize("call", [
    lambda: train.train_gan(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), lambda b: torch.randn(b, 2), steps=1, device="gpu"),
    lambda: train.train_vae(torch.nn.Linear(2, 2), torch.rand(4, 1, 28, 28), epochs=1, device="gpu"),
    lambda: train.fit(torch.nn.Linear(2, 2), lambda m, b: m(b).sum(), [torch.randn(2, 2)], device="gpu"),
    lambda: train.toy_gan("gan", torch.randn(10, 2), steps=1, device="gpu"),
])
def test_every_loop_validates_its_device(call):
    with pytest.raises(ValueError, match="Unknown device 'gpu'"):
        call()


def _recorded_bars(monkeypatch) -> list:
    bars = []

    class Recording(train.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(train, "tqdm", Recording)
    return bars


def test_progress_of_a_time_budget_shows_seconds_not_a_made_up_step_total(monkeypatch):
    bars = _recorded_bars(monkeypatch)
    loader = TensorLoader(torch.ones(64, 1), batch_size=4)
    hist = train.fit(torch.nn.Linear(1, 1), lambda m, b: m(b).pow(2).mean(), loader, epochs=10**6, max_seconds=1.0, device="cpu")
    (bar,) = bars
    assert bar.total == 1.0 and 0.9 <= hist["seconds"][-1] < 1.5
    text = str(bar)
    assert "/1 s" in text and "16000000" not in text and "1000000" not in text, text


def test_progress_of_a_step_count_counts_steps(monkeypatch):
    bars = _recorded_bars(monkeypatch)
    train.fit(torch.nn.Linear(1, 1), lambda m, b: m(b).pow(2).mean(), TensorLoader(torch.ones(64, 1), batch_size=4), epochs=2, device="cpu")
    (bar,) = bars
    assert bar.total == 32 and bar.n == 32


@pytest.mark.parametrize("bad", ["gpu", "cuda:banana", "tpu"])
def test_unknown_device_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="Use 'cpu', 'cuda'"):
        config.get_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        config.get_device("cuda")


def test_seed_everything_repeats():
    config.seed_everything(3)
    a = torch.randn(5)
    config.seed_everything(3)
    assert torch.equal(a, torch.randn(5))


def test_fit_reduces_loss_and_respects_budgets():
    config.seed_everything(0)
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


def test_every_loop_has_the_one_nan_guard():
    """train.run_steps is the only step loop: CycleGAN (which once had no guard) and M2 stop with the same message as fit."""
    from labsupport import models
    nets = [models.CycleGenerator(1, 1, width=2), models.CycleGenerator(1, 1, width=2), models.PatchDiscriminator(1, width=2),
            models.PatchDiscriminator(1, width=2)]
    with pytest.raises(FloatingPointError, match=r"^cycle became nan at step 1: lower the learning rate$"):
        train.train_cyclegan(*nets, torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28), steps=2, batch_size=2, device="cpu",
                             cycle_loss=lambda *a: torch.tensor(float("nan"), requires_grad=True))
    assert not any(n.training for n in nets), "eval mode after the loop, error or not"
    model = torch.nn.Linear(1, 1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match=r"^loss became nan at step 1: lower the learning rate$"):
        train.fit(model, lambda m, b: m(b).mean() * float("nan"), [torch.ones(2, 1)], device="cpu")
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters())), "fit takes no step on a NaN loss"


def test_cosine_decay_warms_up_then_falls_to_zero_by_steps_or_by_time():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    sched = train.cosine_decay(opt, steps=10, warmup=4)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(2.0 * 0.25 * 1.0) and lrs[3] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.3)))
    assert lrs[5] == pytest.approx(1.0) and lrs[10] == pytest.approx(0.0, abs=1e-12)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = train.cosine_decay(opt, seconds=1e-9)  # a time budget already spent: the rate is at the end of its cosine
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_weight_average_is_an_ema_with_a_warm_up():
    """torch's AveragedModel: the first update copies, the n-th after it lerps with decay min(decay, (1 + n) / (10 + n))."""
    model = torch.nn.Linear(3, 2)
    avg = train.weight_average(model, decay=0.9)
    want = None
    for n in range(30):
        with torch.no_grad():
            model.weight.add_(torch.randn(2, 3))
        avg.update_parameters(model)
        w = model.weight.detach()
        want = w.clone() if want is None else want.lerp(w, 1 - min(0.9, (1 + n) / (10 + n)))
    assert torch.equal(avg.module.weight, want)


def test_train_cyclegan_trains_the_generators_with_the_given_step():
    """step= replaces the generators' half (notebook 05's cyclegan_g_step); the discriminators still take their own step."""
    from labsupport import losses, models
    torch.manual_seed(0)
    nets = [models.CycleGenerator(1, 3, width=2), models.CycleGenerator(3, 1, width=2), models.PatchDiscriminator(1, width=2),
            models.PatchDiscriminator(3, width=2)]
    calls = []

    def g_step(G_AB, G_BA, D_A, D_B, opt_g, a, b, lam_cyc, lam_id):
        calls.append((tuple(a.shape), tuple(b.shape), lam_cyc, lam_id))
        adv = losses.least_squares(D_B(G_AB(a)), 1.0) + losses.least_squares(D_A(G_BA(b)), 1.0)
        cyc = losses.cycle_l1(G_AB, G_BA, a, b)
        opt_g.zero_grad()
        (adv + lam_cyc * cyc).backward()
        opt_g.step()
        return {"loss_g": adv + lam_cyc * cyc, "adv": adv, "cycle": cyc, "identity": 0.0}

    d_before = [p.detach().clone() for p in nets[2].parameters()]
    hist = train.train_cyclegan(*nets, torch.rand(8, 1, 8, 8), torch.rand(8, 3, 8, 8), steps=3, batch_size=2, device="cpu", step=g_step,
                                lam_cycle=4.0, lam_id=0.0)
    assert calls == [((2, 1, 8, 8), (2, 3, 8, 8), 4.0, 0.0)] * 3
    assert len(hist["cycle"]) == 3 and all(math.isfinite(v) for v in hist["d_loss"])
    assert not all(torch.equal(a, p) for a, p in zip(d_before, nets[2].parameters())), "the discriminators still train"
