"""Notebook 03's forward-pass exercise `vae_loss`: every correct way passes, each mistake fails with its own message."""

import functools

import pytest
import torch
import torch.nn.functional as F

from labsupport import checks, models, train
from labsupport.checks import CheckFailed


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second thread only adds contention on a busy machine (conftest restores the count)."""
    torch.set_num_threads(1)


def reparameterize(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_divergence(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)


def negative_elbo(x, x_logits, mu, logvar):
    rec = F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)
    return (rec + kl_divergence(mu, logvar)).mean()


def rec_nll(x, x_logits):
    return F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)


# --- correct versions -------------------------------------------------------------------------------


def via_negative_elbo(model, x, beta=1.0):
    mu, logvar = model.encode(x)
    x_logits = model.decode(reparameterize(mu, logvar))
    return negative_elbo(x, x_logits, mu, logvar) + (beta - 1) * kl_divergence(mu, logvar).mean()


def inline_sums(model, x, beta=1.0):
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape)
    rec = F.binary_cross_entropy_with_logits(model.decode(z), x, reduction="sum") / len(x)
    return rec + beta * kl_divergence(mu, logvar).mean()


def with_distributions(model, x, beta=1.0):
    mu, logvar = model.encode(x)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    rec = -torch.distributions.Bernoulli(logits=model.decode(q.rsample())).log_prob(x).flatten(1).sum(1)
    return (rec + beta * torch.distributions.kl_divergence(q, p).sum(1)).mean()


@pytest.mark.parametrize("fn", [via_negative_elbo, inline_sums, with_distributions])
def test_vae_loss_accepts_correct_versions(fn, capsys):
    checks.check_vae_loss(fn)
    assert "\u2713 vae_loss" in capsys.readouterr().out


# --- mistakes ---------------------------------------------------------------------------------------


def make(sample=reparameterize, rec_of=rec_nll, combine=lambda rec, kl, beta: (rec + beta * kl).mean(), detach=False, call_forward=False):
    def vae_loss(model, x, beta=1.0):
        if call_forward:
            x_logits, mu, logvar = model(x)
        else:
            mu, logvar = model.encode(x)
            if detach:
                mu, logvar = mu.detach(), logvar.detach()
            x_logits = model.decode(sample(mu, logvar))
        return combine(rec_of(x, x_logits), kl_divergence(mu, logvar), beta)
    return vae_loss


MISTAKES = [
    (make(sample=lambda mu, logvar: mu), "got mu itself"),
    (make(sample=lambda mu, logvar: mu + torch.randn_like(mu)), "not scaled by the standard deviation"),
    (make(sample=lambda mu, logvar: torch.randn_like(mu)), "ignores mu"),
    (make(sample=lambda mu, logvar: mu + logvar * torch.randn_like(mu)), "logvar itself is used as the standard deviation"),
    (make(sample=lambda mu, logvar: mu + logvar.exp() * torch.randn_like(mu)), "variance exp\\(logvar\\) is used"),
    (make(combine=lambda rec, kl, beta: rec.mean()), "KL term is missing"),
    (make(combine=lambda rec, kl, beta: (rec - beta * kl).mean()), "KL has the wrong sign"),
    (make(combine=lambda rec, kl, beta: (beta * kl).mean()), "reconstruction term is missing"),
    (make(combine=lambda rec, kl, beta: (rec + beta * kl).sum()), "summed over the batch; negative_elbo averages"),
    (make(combine=lambda rec, kl, beta: rec.sum() + beta * kl.mean()), "summed over the batch and the KL averaged"),
    (make(combine=lambda rec, kl, beta: rec.mean() + beta * kl.sum()), "KL is summed over the batch and the reconstruction"),
    (make(rec_of=lambda x, logits: F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).mean(1)), "per-pixel mean"),
    (make(detach=True), "No gradient reaches the encoder"),
    (make(sample=lambda mu, logvar: torch.normal(mu, (0.5 * logvar).exp())), "sample z is detached"),
    (make(sample=lambda mu, logvar: reparameterize(mu.detach(), logvar.detach())), "sample z is detached"),
    (make(combine=lambda rec, kl, beta: rec + beta * kl), "should have shape \\(\\)"),
    (make(combine=lambda rec, kl, beta: (rec + kl).mean()), "beta is ignored"),
    (make(combine=lambda rec, kl, beta: (beta * rec + kl).mean()), "beta multiplies the reconstruction"),
    (make(call_forward=True), "You called model\\(x\\)"),
    (make(combine=lambda rec, kl, beta: ((rec + beta * kl).mean(), rec.mean(), kl.mean())), "returned a tuple"),
]


@pytest.mark.parametrize("fn, message", MISTAKES, ids=[m for _, m in MISTAKES])
def test_vae_loss_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_vae_loss(fn)


# --- train_vae trains with it ------------------------------------------------------------------------


def test_train_vae_batch_loss_follows_the_built_in_path():
    digits = torch.rand(300, 1, 28, 28)
    built_in, student = models.MLPVAE(4, 16), models.MLPVAE(4, 16)
    student.load_state_dict(built_in.state_dict())
    torch.manual_seed(0)
    want = train.train_vae(built_in, digits, epochs=1, seed=0, batch_size=100)
    torch.manual_seed(0)
    got = train.train_vae(student, digits, epochs=1, seed=0, batch_size=100, batch_loss=via_negative_elbo)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    torch.manual_seed(0)
    weighted = train.train_vae(models.MLPVAE(4, 16), digits, epochs=1, seed=0, batch_size=100,
                               batch_loss=functools.partial(via_negative_elbo, beta=4.0))
    assert len(weighted["loss"]) == 3
    with pytest.raises(ValueError, match="batch_loss"):
        train.train_vae(models.MLPVAE(4, 16), digits, epochs=1, batch_loss=via_negative_elbo, beta=2.0)
