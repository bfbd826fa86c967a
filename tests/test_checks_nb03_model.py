"""Notebook 03's model exercises (`labsupport.checks.nb03_model`): the `VAE` class and the bound `iw_nll`.

Every correct way passes (three per exercise, written differently, one VAE of another architecture), and each
mistake of the catalogue fails with its own message.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labsupport import checks
from labsupport.checks import CheckFailed


def vae_class(act=nn.ReLU, heads=False, sigmoid=False, relu_logvar=False, fixed_latent=None, flat_out=False, one_tensor=False,
              unused=False, batch_mix=False, tiny=False, linear=False):
    """The statement's MLP VAE, with one switch per known mistake (and two harmless rewrites: activation, two heads)."""

    class VAE(nn.Module):
        def __init__(self, latent_dim=32, hidden=256):
            super().__init__()
            hidden = 8 if tiny else hidden
            d = fixed_latent or latent_dim
            layer = (lambda: nn.Identity()) if linear else act
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), layer(), nn.Linear(hidden, hidden), layer())
            if heads:
                self.mu, self.logvar = nn.Linear(hidden, d), nn.Linear(hidden, d)
            else:
                self.head = nn.Linear(hidden, 2 * d)
            self.dec = nn.Sequential(nn.Linear(d, hidden), layer(), nn.Linear(hidden, hidden), layer(), nn.Linear(hidden, 784))
            if unused:
                self.extra = nn.Linear(3, 3)

        def encode(self, x):
            h = self.body(x)
            if batch_mix:
                h = h - h.mean(0, keepdim=True)
            mu, logvar = (self.mu(h), self.logvar(h)) if heads else self.head(h).chunk(2, 1)
            if relu_logvar:
                logvar = torch.relu(logvar)
            return torch.cat([mu, logvar], 1) if one_tensor else (mu, logvar)

        def decode(self, z):
            out = self.dec(z)
            out = torch.sigmoid(out) if sigmoid else out
            return out if flat_out else out.view(-1, 1, 28, 28)

    return VAE


class ConvVAE(nn.Module):
    """Another architecture that meets the statement's contract (convolutions instead of an MLP)."""

    def __init__(self, latent_dim=32, hidden=256):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(64 * 49, 2 * latent_dim))
        self.dec = nn.Sequential(nn.Linear(latent_dim, 64 * 49), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                                 nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))

    def encode(self, x):
        return self.enc(x).chunk(2, 1)

    def decode(self, z):
        return self.dec(z)


@pytest.mark.parametrize("cls", [vae_class(), vae_class(act=nn.SiLU, heads=True), ConvVAE], ids=["statement", "two-heads-silu", "conv"])
def test_every_correct_vae_passes(cls, capsys):
    torch.set_num_threads(1)
    checks.check_VAE(cls)
    assert "\u2713 VAE" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(sigmoid=True), "look like probabilities"),
    (dict(relu_logvar=True), "logvar is never negative"),
    (dict(fixed_latent=32), "must be the latent_dim the constructor got"),
    (dict(flat_out=True), "reshape the output to images"),
    (dict(one_tensor=True), "it must return two, (mu, logvar)"),
    (dict(unused=True), "get no gradient from the negative ELBO"),
    (dict(batch_mix=True), "depends on the other images in its batch"),
    (dict(tiny=True), "far from the statement's network"),
    (dict(linear=True), "your VAE's held-out negative ELBO"),
])
def test_each_vae_mistake_is_named(mistake, message):
    torch.set_num_threads(1)
    with pytest.raises(CheckFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        checks.check_VAE(vae_class(**mistake))


def test_vae_partial_credit_stops_at_the_stage_that_fails():
    checks.PASSED.clear()
    with pytest.raises(CheckFailed):
        checks.check_VAE(vae_class(batch_mix=True))
    assert checks.PASSED == ["interface"]
    checks.PASSED.clear()


def _log_weights(model, x, k):
    mu, logvar = model.encode(x)
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn(k, *mu.shape)
    logits = model.decode(z.flatten(0, 1)).view(k, *x.shape)
    log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(2).sum(2)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(2)
    log_qz = torch.distributions.Normal(mu, std).log_prob(z).sum(2)
    return log_px_z, log_pz, log_qz


def iw_reference(model, x, k):
    a, b, c = _log_weights(model, x, k)
    return math.log(k) - torch.logsumexp(a + b - c, 0)


def iw_loop_max_shift(model, x, k):
    """Codes in chunks of 250, and log-mean-exp written by hand with the max shift."""
    mu, logvar = model.encode(x)
    rows = []
    for n in [250] * (k // 250) + [k % 250] * bool(k % 250):
        eps = torch.randn(n, *mu.shape)
        z = mu + (0.5 * logvar).exp() * eps  # (n, B, D)
        logits = model.decode(z.reshape(-1, z.shape[-1])).view(n, *x.shape)
        log_px_z = (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).flatten(2).sum(2)
        log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(2)
        log_qz = (-0.5 * eps**2 - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(2)
        rows.append(log_px_z + log_pz - log_qz)
    lw = torch.cat(rows, 0).T  # (B, K)
    top = lw.max(1, keepdim=True).values
    return -(top.squeeze(1) + (lw - top).exp().mean(1).log())


def iw_distributions(model, x, k):
    """Batch-first, with torch.distributions.Independent and Bernoulli(logits=...)."""
    mu, logvar = model.encode(x)
    q = torch.distributions.Independent(torch.distributions.Normal(mu, (0.5 * logvar).exp()), 1)
    z = q.rsample((k,)).transpose(0, 1)  # (B, K, D)
    px = torch.distributions.Independent(torch.distributions.Bernoulli(logits=model.decode(z.reshape(-1, z.shape[-1])).view(*z.shape[:2], -1)), 1)
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z)), 1)
    lw = px.log_prob(x.flatten(1)[:, None]) + prior.log_prob(z) - q.log_prob(z.transpose(0, 1)).T
    return math.log(k) - torch.logsumexp(lw, 1)


@pytest.mark.parametrize("fn", [iw_reference, iw_loop_max_shift, iw_distributions])
def test_every_correct_iw_nll_passes(fn, capsys):
    fn.__name__ = "iw_nll"
    checks.check_iw_nll(fn)
    assert "\u2713 iw_nll" in capsys.readouterr().out


def iw_mistake(kind):
    def iw_nll(model, x, k):
        a, b, c = _log_weights(model, x, k)
        lw = a + b - c
        return {
            "elbo": lambda: -lw.mean(0),
            "sum": lambda: -torch.logsumexp(lw, 0),
            "sign": lambda: torch.logsumexp(lw, 0) - math.log(k),
            "log_k_sign": lambda: -torch.logsumexp(lw, 0) - math.log(k),
            "no_prior": lambda: math.log(k) - torch.logsumexp(a - c, 0),
            "no_proposal": lambda: math.log(k) - torch.logsumexp(a + b, 0),
            "proposal_sign": lambda: math.log(k) - torch.logsumexp(a + b + c, 0),
            "underflow": lambda: -lw.exp().mean(0).log(),
            "batch_mean": lambda: (math.log(k) - torch.logsumexp(lw, 0)).mean(),
        }[kind]()
    return iw_nll


@pytest.mark.parametrize("kind, message", [
    ("elbo", "That is the negative ELBO"),
    ("sum", "the log of the \\*sum\\*"),
    ("sign", "sign flipped"),
    ("log_k_sign", "log K went in with the wrong sign"),
    ("no_prior", "The prior term is missing"),
    ("no_proposal", "The proposal term is missing"),
    ("proposal_sign", "log q\\(z\\|x\\) went in with the wrong sign"),
    ("underflow", "exp\\(\\) underflows to 0"),
    ("batch_mean", "one estimate per image"),
])
def test_each_iw_nll_mistake_is_named(kind, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_iw_nll(iw_mistake(kind))
