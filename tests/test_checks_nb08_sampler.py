"""Notebook 08's sampler exercises (`labsupport.checks.nb08_sampler`): ddim_step, guided_eps and sample.

Every correct way passes (three each, written differently), and each catalogued mistake fails with its own message.
"""

import math

import pytest
import torch

from labsupport import checks, diffusion
from labsupport.checks import CheckFailed
from labsupport.checks.nb08_sampler import _ddim


def ddim_numbers(eps, x_t, t, t_prev, schedule):
    ab, ab_prev = schedule.alpha_bar[t].item(), schedule.alpha_bar[t_prev].item()
    x0 = ((x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
    eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    return math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps


def ddim_tensors(eps, x_t, t, t_prev, schedule):
    ab = schedule.alpha_bar.float()
    x0 = ((x_t - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()).clip(-1, 1)
    return ab[t_prev].sqrt() * x0 + (1 - ab[t_prev]).sqrt() * (x_t - ab[t].sqrt() * x0) / (1 - ab[t]).sqrt()


def ddim_via_ratio(eps, x_t, t, t_prev, schedule):
    """Written as x_{t'} = sqrt(ab'/ab) x_t + (sqrt(1 - ab') - sqrt(ab'/ab) sqrt(1 - ab)) eps', with eps' after clipping."""
    ab, ab_prev = float(schedule.alpha_bar[t]), float(schedule.alpha_bar[t_prev])
    x0 = torch.clamp((x_t - (1 - ab) ** 0.5 * eps) / ab**0.5, -1.0, 1.0)
    eps2 = (x_t - ab**0.5 * x0) / (1 - ab) ** 0.5
    return (ab_prev / ab) ** 0.5 * x_t + ((1 - ab_prev) ** 0.5 - (ab_prev / ab) ** 0.5 * (1 - ab) ** 0.5) * eps2


@pytest.mark.parametrize("fn", [ddim_numbers, ddim_tensors, ddim_via_ratio])
def test_every_correct_ddim_step_passes(fn, capsys):
    fn.__name__ = "ddim_step"
    checks.check_ddim_step(fn)
    assert "\u2713 ddim_step" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda e, x, t, tp, s: _ddim(e, x, t, tp, s, clip=False), "not clipped"),
    (lambda e, x, t, tp, s: _ddim(e, x, t, tp, s, recompute=False), "consistent with the clipped x_0"),
    (lambda e, x, t, tp, s: _ddim(e, x, t, tp, s, bar=False), "alpha_t \\(one step's factor\\)"),
    (lambda e, x, t, tp, s: _ddim(e, x, t, tp, s, root=False), "square root is missing"),
    (lambda e, x, t, tp, s: _ddim(e, x, tp, t, s), "swapped"),
    (lambda e, x, t, tp, s: _ddim(e, x, t, 0, s), "That is the clipped x_0 itself"),
    (lambda e, x, t, tp, s: _ddim(e, x, t, tp, s, clip=False).clamp(-1, 1), "the result clipped"),
    (lambda e, x, t, tp, s: ddim_numbers(e, x, t, tp, s).double(), "returned float64"),
    (lambda e, x, t, tp, s: ddim_numbers(e, x.add_(0.01), t, tp, s), "in place"),
])
def test_each_ddim_step_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_ddim_step(fn)


def guided_batched(eps_model, x, t, y, w, num_classes=10):
    if w == 0:
        return eps_model(x, t, y)
    cond, uncond = eps_model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, num_classes)])).chunk(2)
    return (1 + w) * cond - w * uncond


def guided_two_calls(eps_model, x, t, y, w, num_classes=10):
    cond = eps_model(x, t, y)
    return cond + w * (cond - eps_model(x, t, torch.full_like(y, num_classes)))


def guided_lerp(eps_model, x, t, y, w, num_classes=10):
    """torch.lerp from the unconditional to the conditional prediction, with weight 1 + w."""
    return torch.lerp(eps_model(x, t, y.new_full(y.shape, num_classes)), eps_model(x, t, y), 1 + w)


@pytest.mark.parametrize("fn", [guided_batched, guided_two_calls, guided_lerp])
def test_every_correct_guided_eps_passes(fn, capsys):
    checks.check_guided_eps(fn)
    assert "\u2713 guided_eps" in capsys.readouterr().out


def _null(y, n=10):
    return torch.full_like(y, n)


@pytest.mark.parametrize("fn, message", [
    (lambda m, x, t, y, w, n=10: w * m(x, t, y) + (1 - w) * m(x, t, _null(y)), "w = 1 means no guidance"),
    (lambda m, x, t, y, w, n=10: (1 + w) * m(x, t, _null(y)) - w * m(x, t, y), "swapped"),
    (lambda m, x, t, y, w, n=10: (1 + w) * m(x, t, y) + w * m(x, t, _null(y)), "it is subtracted"),
    (lambda m, x, t, y, w, n=10: m(x, t, y), "w is ignored"),
    (lambda m, x, t, y, w, n=10: (1 + w) * m(x, t, y) - w * m(x, t, torch.zeros_like(y)), "used label 0"),
    (lambda m, x, t, y, w, n=10: (1 + w) * m(x, t, y) - w * m(x, t, torch.full_like(y, -1)), "not asked with label num_classes"),
    (lambda m, x, t, y, w, n=10: m(x, int(t[0]), y), "a \\(B,\\) int64"),
])
def test_each_guided_eps_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_guided_eps(fn)


def sampler(grid="linspace", guidance=True, last=True, image=False, in_place=False, ddim=ddim_numbers, guided=guided_batched):
    """A sampler with one switch per known mistake (and harmless rewrites: the grid's arithmetic, ddim, guidance)."""

    def sample(eps_model, schedule, x_T, steps, y=None, w=0.0, num_classes=10):
        T = schedule.T
        times = {
            "linspace": lambda: torch.linspace(T, 1, steps).round().long().tolist(),
            "integer": lambda: [T - (i * (T - 1)) // (steps - 1) for i in range(steps)],
            "to_zero": lambda: torch.linspace(T, 0, steps).round().long().tolist(),
            "from_T_minus_1": lambda: torch.linspace(T - 1, 1, steps).round().long().tolist(),
            "ascending": lambda: torch.linspace(1, T, steps).round().long().tolist(),
            "one_extra": lambda: torch.linspace(T, 1, steps + 1).round().long().tolist(),
            "uneven": lambda: [T, T - 1, T - 2, T - 3, T - 4, 1][:steps],
        }[grid]()
        x = x_T if in_place else x_T.clone()
        for i, t in enumerate(times):
            tt = torch.full((len(x),), t, dtype=torch.long)
            eps = eps_model(x, tt, y) if y is None else guided(eps_model, x, tt, y, w if guidance else 0.0, num_classes)
            nxt = times[i + 1] if i + 1 < len(times) else 0
            if not last and nxt == 0:
                break
            x = ddim(eps, x, t, nxt, schedule)
            if in_place:
                x_T.copy_(x)
        return diffusion.to_image(x) if image else x

    return sample


@pytest.mark.parametrize("fn", [sampler(), sampler(grid="integer", ddim=ddim_tensors, guided=guided_two_calls),
                                sampler(ddim=ddim_via_ratio, guided=guided_lerp)], ids=["linspace", "integer-grid", "ratio-lerp"])
def test_every_correct_sample_passes(fn, capsys):
    checks.check_sample(fn)
    assert "\u2713 sample" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (sampler(grid="to_zero"), "last network call is at t = 0"),
    (sampler(grid="from_T_minus_1"), "first network call is at t = 49"),
    (sampler(grid="ascending"), "first network call is at t = 1"),
    (sampler(grid="one_extra"), "evaluated the network at 7 different times"),
    (sampler(grid="uneven"), "not evenly spaced"),
    (sampler(guidance=False), "without guidance"),
    (sampler(last=False), "The last step, from t = 1 to t = 0, is missing"),
    (sampler(image=True), "The result is in \\[0, 1\\]"),
    (sampler(in_place=True), "changed x_T or y in place"),
])
def test_each_sample_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_sample(fn)
