"""Notebook 09's model exercise (`labsupport.checks.nb09_model`): the 2D velocity network `VelocityMLP`.

Every correct way passes (three, written differently: the statement's sinusoidal features with ReLU, the raw time as a third
input with SiLU, a learned time embedding added to the hidden features), each catalogued mistake fails with its own message,
and partial credit stops at the stage that fails.
"""

import math

import pytest
import torch
from torch import nn

from labsupport import checks
from labsupport.checks import CheckFailed


def velocity_class(no_time=False, no_point=False, bare_t=False, column_t=False, no_y=False, tanh_out=False, relu_out=False, softplus_out=False, tiny=False,
                   unused=False, batch_mix=False, detach=False, three_out=False, linear=False, fast_time=False, fixed_width=False):
    """The statement's network, with one switch per known mistake."""

    class VelocityMLP(nn.Module):
        def __init__(self, hidden=128):
            super().__init__()
            h = 2 if tiny else 64 if fixed_width else hidden
            self.register_buffer("frequencies", math.pi * torch.arange(1, 9.0))
            act = nn.Identity if linear else nn.ReLU
            self.net = nn.Sequential(nn.Linear(18, h), act(), nn.Linear(hidden if fixed_width else h, h), act(), nn.Linear(h, h), act(),
                                     nn.Linear(h, 3 if three_out else 2))
            if unused:
                self.extra = nn.Linear(2, 2)

        def _forward(self, x, t, y=None):
            if bare_t:
                t = t.to(x.dtype)
            elif column_t:
                t = t[:, None]
            else:
                t = t.reshape(-1, 1).to(x.dtype)
            angles = (1000 if fast_time else 1) * t * self.frequencies
            if no_time:
                angles = torch.zeros_like(angles)
            features = torch.cat([torch.zeros_like(x) if no_point else x, angles.sin(), angles.cos()], 1)
            if batch_mix:
                features = features - features.mean(0, keepdim=True)
            out = self.net(features)
            out = torch.tanh(out) if tanh_out else torch.relu(out) if relu_out else nn.functional.softplus(out) if softplus_out else out
            return out.detach() if detach else out

        if no_y:
            def forward(self, x, t):
                return self._forward(x, t)
        else:
            def forward(self, x, t, y=None):
                return self._forward(x, t, y)

    return VelocityMLP


class ConcatTime(nn.Module):
    """Another design: the raw time as a third input, SiLU, a width-and-depth loop."""

    def __init__(self, hidden=128):
        super().__init__()
        layers, width = [], 3
        for _ in range(3):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.body = nn.Sequential(*layers, nn.Linear(hidden, 2))

    def forward(self, x, t, y=None):
        return self.body(torch.cat([x, t.view(len(x), 1).float()], dim=-1))


class AddedEmbedding(nn.Module):
    """Another design: a learned embedding of t (a small MLP) added to the point's hidden features."""

    def __init__(self, hidden=128):
        super().__init__()
        self.point, self.time = nn.Linear(2, hidden), nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, x, t, y=None):
        t = t.flatten()[:, None]
        return self.head(self.point(x) + self.time(t))


@pytest.mark.parametrize("cls", [velocity_class(), ConcatTime, AddedEmbedding], ids=["sinusoidal", "concat-silu", "added-embedding"])
def test_every_correct_velocity_network_passes(cls, capsys):
    torch.set_num_threads(1)
    checks.check_VelocityMLP(cls)
    assert "\u2713 VelocityMLP" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(no_time=True), "the network ignores the time"),
    (dict(no_point=True), "the network ignores the point"),
    (dict(bare_t=True), "Give t an axis first, (B, 1)"),
    (dict(column_t=True), "accept a t that already is (B, 1)"),
    (dict(no_y=True), "accept a third argument y=None"),
    (dict(three_out=True), "the velocity lives where the point lives"),
    (dict(fixed_width=True), "sized from the constructor's hidden"),
    (dict(tiny=True), "far from the statement's network"),
    (dict(batch_mix=True), "depends on the other points of its batch"),
    (dict(detach=True), "does not track gradients"),
    (dict(unused=True), "get no gradient"),
    (dict(tanh_out=True), "something squashes them"),
    (dict(relu_out=True), "ReLU"),
    (dict(softplus_out=True), "never negative"),
    (dict(linear=True), "distance to the exact velocity field"),
    (dict(fast_time=True), "distance to the exact velocity field"),
])
def test_each_velocity_network_mistake_is_named(mistake, message):
    torch.set_num_threads(1)
    with pytest.raises(CheckFailed, match=message.replace("(", "\\(").replace(")", "\\)")):
        checks.check_VelocityMLP(velocity_class(**mistake))


def test_partial_credit_stops_at_the_failing_stage():
    checks.PASSED.clear()
    with pytest.raises(CheckFailed):
        checks.check_VelocityMLP(velocity_class(batch_mix=True))
    assert checks.PASSED == []
    with pytest.raises(CheckFailed):
        checks.check_VelocityMLP(velocity_class(tanh_out=True))
    assert checks.PASSED == ["interface"]
    checks.PASSED.clear()
    with pytest.raises(CheckFailed):
        checks.check_VelocityMLP(velocity_class(linear=True))
    assert checks.PASSED == ["interface", "gradients"]
    checks.PASSED.clear()
