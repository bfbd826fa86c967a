"""Notebook 07's check (labsupport/checks/nb07.py): slerp. The bulk of its cases live in tests/test_widgets.py next to
the explorer; these are the blind spots closed in issue 35: no clamp before acos, parallel codes of different lengths,
float64 results."""

import pytest
import torch

from labsupport import checks
from labsupport.checks import CheckFailed


def _arc(z0, z1, t, omega):
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def slerp_unclamped(z0, z1, t):
    """Right everywhere except that the cosine is not clamped: NaN when rounding puts it just above 1. Nearly equal codes
    take the straight line first, so the check's one (nearly) equal pair passes: only nearly parallel codes of other
    lengths show it."""
    t = t[:, None]
    if (z1 - z0).norm() < 1e-3 * z0.norm():
        return (1 - t) * z0 + t * z1
    omega = torch.acos((z0 / z0.norm()) @ (z1 / z1.norm()))
    if torch.sin(omega) < 1e-6:
        return (1 - t) * z0 + t * z1
    return _arc(z0, z1, t, omega)


def slerp_stays_at_z0(z0, z1, t):
    """Right, but for a vanishing angle it returns z0 for every t (only right when z1 = z0)."""
    t = t[:, None]
    omega = torch.acos(((z0 / z0.norm()) @ (z1 / z1.norm())).clamp(-1, 1))
    if torch.sin(omega) < 1e-6:
        return z0.expand(len(t), -1).clone()
    return _arc(z0, z1, t, omega)


def slerp_float64(z0, z1, t):
    """Right values, computed and returned in float64."""
    z0, z1, t = z0.double(), z1.double(), t.double()[:, None]
    omega = torch.acos(((z0 / z0.norm()) @ (z1 / z1.norm())).clamp(-1, 1))
    if torch.sin(omega) < 1e-6:
        return (1 - t) * z0 + t * z1
    return _arc(z0, z1, t, omega)


@pytest.mark.parametrize("fn, message", [
    (slerp_unclamped, "random nearly parallel pairs"),
    (slerp_stays_at_z0, "stays at z0 for every t"),
    (slerp_float64, "slerp returned float64"),
])
def test_slerp_rejects_the_blind_spots(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_slerp(fn)


def test_the_unclamped_slerp_really_gives_nan_on_nearly_parallel_pairs():
    """The case the check plants: some pairs of nearly parallel float32 codes put the cosine above 1."""
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, 5)
    bad = 0
    for _ in range(200):
        a = torch.randn(48, generator=g)
        b = a * (0.5 + torch.rand((), generator=g)) + 1e-4 * torch.randn(48, generator=g)
        bad += not torch.isfinite(slerp_unclamped(a, b, t)).all()
    assert bad > 0


# --- attribute_direction ----------------------------------------------------------------------------------------------


def direction_masks(codes, attribute, q):
    high = attribute >= torch.quantile(attribute, 1 - q)
    low = attribute <= torch.quantile(attribute, q)
    d = codes[high].mean(0) - codes[low].mean(0)
    return d / d.norm()


def direction_topk(codes, attribute, q):
    """Ranks instead of quantiles: the k = q N largest and smallest, mean codes by a weighted sum."""
    k = round(q * len(attribute))
    order = attribute.argsort()
    d = codes[order[-k:]].sum(0) / k - codes[order[:k]].sum(0) / k
    return torch.nn.functional.normalize(d, dim=0)


def direction_weights(codes, attribute, q):
    """Masks as weights in a matrix product, the norm from torch.linalg."""
    lo_q, hi_q = torch.quantile(attribute, torch.tensor([q, 1 - q]))
    w = (attribute >= hi_q).float() / (attribute >= hi_q).sum() - (attribute <= lo_q).float() / (attribute <= lo_q).sum()
    d = w @ codes
    return d / torch.linalg.vector_norm(d)


def direction_numpy(codes, attribute, q):
    import numpy as np

    a, c = attribute.numpy(), codes.numpy()
    d = c[a >= np.quantile(a, 1 - q)].mean(0) - c[a <= np.quantile(a, q)].mean(0)
    return torch.from_numpy(d / np.linalg.norm(d))


@pytest.mark.parametrize("fn", [direction_masks, direction_topk, direction_weights, direction_numpy])
def test_every_correct_attribute_direction_passes(fn, capsys):
    checks.check_attribute_direction(fn)
    assert "\u2713 attribute_direction" in capsys.readouterr().out


def _groups(high, low, unit=True):
    def fn(codes, attribute, q):
        d = codes[high(attribute, q)].mean(0) - codes[low(attribute, q)].mean(0)
        return d / d.norm() if unit else d
    return fn


_HIGH = lambda a, q: a >= torch.quantile(a, 1 - q)  # noqa: E731
_LOW = lambda a, q: a <= torch.quantile(a, q)  # noqa: E731


def _sorted_in_place(codes, attribute, q):
    """Sorts the pairs in place (the same pairs, so the direction is still right): only the write is wrong."""
    order = attribute.argsort()
    attribute.copy_(attribute[order])
    codes.copy_(codes[order])
    return direction_masks(codes, attribute, q)


def _fixed_q(codes, attribute, q):
    return direction_masks(codes, attribute, 0.25)


@pytest.mark.parametrize("fn, message", [
    (_groups(_LOW, _HIGH), "wrong way"),
    (_groups(_HIGH, _LOW, unit=False), "not of length 1"),
    (_groups(_HIGH, lambda a, q: torch.ones_like(a, dtype=torch.bool)), "mean code of \\*all\\* the images"),
    (_groups(_HIGH, lambda a, q: ~_HIGH(a, q)), "all those not high"),
    (_groups(lambda a, q: torch.ones_like(a, dtype=torch.bool), _LOW), "compared the images low"),
    (_groups(lambda a, q: a >= (1 - q) * a.max(), lambda a, q: a <= q * a.max()), "fractions of the attribute's largest value"),
    (lambda c, a, q: direction_masks(c, a, q) / 2, "length 1, got 0.5"),
    (lambda c, a, q: direction_masks(c, a, q)[None], "shape \\(1, 5\\)"),
    (lambda c, a, q: c[_HIGH(a, q)].mean(1), "one number per image"),
    (lambda c, a, q: direction_masks(c.double(), a, q), "float64"),
    (_sorted_in_place, "in place"),
    (_fixed_q, "q = 0.1"),
    (lambda c, a, q: (_ for _ in ()).throw(NotImplementedError("Exercise 2")), "not written yet"),
])
def test_each_attribute_direction_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_attribute_direction(fn)


# --- nearest_neighbours -----------------------------------------------------------------------------------------------


def neighbours_cdist(samples, train):
    return torch.cdist(samples, train).min(dim=1)


def neighbours_expanded(samples, train):
    """|a - b|^2 = |a|^2 - 2 a.b + |b|^2 as one matrix product, clamped before the root."""
    sq = samples.pow(2).sum(1, keepdim=True) - 2 * samples @ train.T + train.pow(2).sum(1)
    best = sq.argmin(1)
    return sq.gather(1, best[:, None]).squeeze(1).clamp_min(0).sqrt(), best


def neighbours_chunked(samples, train, chunk=1024):
    """Differences broadcast over chunks of train only, with a running minimum."""
    best_d = torch.full((len(samples),), float("inf"))
    best_i = torch.zeros(len(samples), dtype=torch.long)
    for start in range(0, len(train), chunk):
        d = (samples[:, None] - train[None, start:start + chunk]).pow(2).sum(-1).sqrt()
        value, where = d.min(1)
        better = value < best_d
        best_d = torch.where(better, value, best_d)
        best_i = torch.where(better, where + start, best_i)
    return best_d, best_i


def neighbours_per_sample(samples, train):
    """One sample at a time: (N, D) differences each."""
    pairs = [(train - s).norm(dim=1).min(0) for s in samples]
    return torch.stack([p.values for p in pairs]), torch.stack([p.indices for p in pairs])


@pytest.mark.parametrize("fn", [neighbours_cdist, neighbours_expanded, neighbours_chunked, neighbours_per_sample])
def test_every_correct_nearest_neighbours_passes(fn, capsys):
    checks.check_nearest_neighbours(fn)
    assert "\u2713 nearest_neighbours" in capsys.readouterr().out


def _broadcast(samples, train):
    d = (samples[:, None] - train[None]).pow(2).sum(-1).sqrt()
    return d.min(1)


def _in_place_train(samples, train):
    train[0, 0] += 100.0  # a row that was nobody's nearest moves away: the answer stays right, the write is wrong
    return neighbours_cdist(samples, train)


def _squeezed(samples, train):
    d, i = neighbours_cdist(samples, train)
    return d.squeeze(), i.squeeze()


def _fixed_six(samples, train):
    return neighbours_cdist(samples, train) if len(samples) == 6 else (torch.zeros(len(samples)), torch.zeros(len(samples), dtype=torch.long))


@pytest.mark.parametrize("fn, message", [
    (lambda s, t: (lambda d: (d.max(1).values, d.argmax(1)))(torch.cdist(s, t)), "farthest"),
    (lambda s, t: torch.cdist(s, t).min(0), "one entry per \\*training\\* image"),
    (lambda s, t: torch.cdist(s, t, p=1).min(1), "L1"),
    (lambda s, t: (lambda d, i: (d**2, i))(*neighbours_cdist(s, t)), "squared distances"),
    (lambda s, t: (lambda d, i: (d**2 / s.shape[1], i))(*neighbours_cdist(s, t)), "mean squared differences per pixel"),
    (lambda s, t: (lambda d, i: (d / s.shape[1] ** 0.5, i))(*neighbours_cdist(s, t)), "divided by sqrt\\(D\\)"),
    (lambda s, t: tuple(reversed(neighbours_cdist(s, t))), "return \\(distances, indices\\)"),
    (lambda s, t: neighbours_cdist(s, t).indices, "two tensors"),
    (lambda s, t: (lambda d, i: (d, i.float()))(*neighbours_cdist(s, t)), "tensor of integers"),
    (lambda s, t: (lambda d, i: (d, i[:, None]))(*neighbours_cdist(s, t)), "indices should have shape"),
    (lambda s, t: (lambda d, i: (d, (i + 1) % len(t)))(*neighbours_cdist(s, t)), "Wrong indices for samples"),
    (_broadcast, "M x N x D"),
    (_in_place_train, "in place"),
    (_squeezed, "squeeze"),
    (_fixed_six, "one sample"),
    (lambda s, t: (_ for _ in ()).throw(NotImplementedError("Exercise 3")), "not written yet"),
])
def test_each_nearest_neighbours_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_nearest_neighbours(fn)
