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
