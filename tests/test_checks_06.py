"""Checks of notebook 06: correct versions pass, each planted mistake fails with its message."""

import pytest
import torch
import torch.nn.functional as F

from labsupport import checks
from labsupport.checks import CheckFailed


def _h(x):
    return x[..., :, 1:] - x[..., :, :-1]


def _v(x):
    return x[..., 1:, :] - x[..., :-1, :]


@pytest.mark.parametrize("fn", [
    lambda x: _h(x).pow(2).mean((1, 2, 3)) + _v(x).pow(2).mean((1, 2, 3)),
    lambda x: (torch.diff(x, dim=3) ** 2).flatten(1).mean(1) + (torch.diff(x, dim=2) ** 2).flatten(1).mean(1),
    # one mean over all 2 * 28 * 27 pairs, times 2: the same number on square images
    lambda x: 2 * torch.cat([_h(x).flatten(1), _v(x).flatten(1)], 1).pow(2).mean(1),
])
def test_gradient_energy_accepts_correct_versions(fn, capsys):
    checks.check_gradient_energy(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda x: _h(x).abs().mean((1, 2, 3)) + _v(x).abs().mean((1, 2, 3)), "absolute"),
    (lambda x: (x - x.roll(1, -1)).pow(2).mean((1, 2, 3)) + (x - x.roll(1, -2)).pow(2).mean((1, 2, 3)), "torch.roll"),
    (lambda x: _h(x).pow(2).mean((1, 2, 3)), "one direction"),
    (lambda x: (_h(x).pow(2).mean((1, 2, 3)) + _v(x).pow(2).mean((1, 2, 3))) / 2, "half"),
    (lambda x: _h(x).pow(2).sum((1, 2, 3)) + _v(x).pow(2).sum((1, 2, 3)), "not the sum"),
    (lambda x: _h(x).pow(2).mean() + _v(x).pow(2).mean(), "single number"),
    (lambda x: x.pow(2).mean((1, 2, 3)), "flat grey"),
    (lambda x: (_h(x).pow(2).mean((1, 2, 3)) + _v(x).pow(2).mean((1, 2, 3))).sqrt(), "Wrong values"),
])
def test_gradient_energy_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_gradient_energy(fn)


def test_gradient_energy_in_place_is_caught():
    def in_place(x):
        out = _h(x).pow(2).mean((1, 2, 3)) + _v(x).pow(2).mean((1, 2, 3))
        x.mul_(0.5)
        return out

    with pytest.raises(CheckFailed, match="in place"):
        checks.check_gradient_energy(in_place)


def _terms(vae, x, sample=False):
    mu, logvar = vae.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if sample else mu
    logits = vae.decode(z)
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return rec, kl, logits, mu, logvar


@pytest.mark.parametrize("fn", [
    lambda vae, x: sum(_terms(vae, x)[:2]),
    lambda vae, x: sum(_terms(vae, x, sample=True)[:2]),  # one sampled z, as metrics.negative_elbo does
    lambda vae, x: -torch.distributions.Bernoulli(logits=_terms(vae, x)[2]).log_prob(x).flatten(1).sum(1) + torch.distributions.kl_divergence(
        torch.distributions.Normal(_terms(vae, x)[3], (0.5 * _terms(vae, x)[4]).exp()), torch.distributions.Normal(0.0, 1.0)).sum(1),
    lambda vae, x: sum(_terms(vae, x)[:2]).detach(),
])
def test_anomaly_score_accepts_correct_versions(fn, capsys):
    checks.check_anomaly_score(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda vae, x: -sum(_terms(vae, x)[:2]), "negative"),
    (lambda vae, x: _terms(vae, x)[0], "Only the reconstruction"),
    (lambda vae, x: _terms(vae, x)[1], "Only the KL"),
    (lambda vae, x: _terms(vae, x)[0] - _terms(vae, x)[1], "wrong sign"),
    (lambda vae, x: _terms(vae, x)[0] + 2 * _terms(vae, x)[1], "twice"),
    (lambda vae, x: F.binary_cross_entropy_with_logits(_terms(vae, x)[2], x, reduction="none").flatten(1).mean(1) + _terms(vae, x)[1], "averaged over pixels"),
    (lambda vae, x: (torch.sigmoid(_terms(vae, x)[2]) - x).pow(2).flatten(1).sum(1) + _terms(vae, x)[1], "squared error"),
    (lambda vae, x: sum(_terms(vae, x)[:2]).mean(), "single number"),
    (lambda vae, x: sum(_terms(vae, x)[:2]).flip(0), "mix"),
    (lambda vae, x: F.binary_cross_entropy(torch.sigmoid(torch.sigmoid(_terms(vae, x)[2])), x, reduction="none").flatten(1).sum(1) + _terms(vae, x)[1], "logits"),
    (lambda vae, x: vae.nope(x), "crashed"),
])
def test_anomaly_score_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_anomaly_score(fn)
