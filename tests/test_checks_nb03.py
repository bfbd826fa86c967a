"""Notebook 03's checks (labsupport/checks/nb03.py): reparameterize, kl_divergence, negative_elbo, vae_loss. Every
correct way passes, each typical mistake fails with a message naming it."""

import functools

import pytest
import torch
import torch.nn.functional as F

from labsupport import checks, models, train
from labsupport.checks import CheckFailed


# --- reparameterize -------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [
    lambda mu, logvar: mu + torch.exp(0.5 * logvar) * torch.randn_like(mu),
    lambda mu, logvar: mu + logvar.mul(0.5).exp() * torch.randn(mu.shape),
    lambda mu, logvar: torch.distributions.Normal(mu, (0.5 * logvar).exp()).rsample(),
    lambda mu, logvar: mu + torch.sqrt(logvar.exp()) * torch.empty_like(mu).normal_(),
])
def test_reparameterize_accepts_correct_versions(fn, capsys):
    checks.check_reparameterize(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda mu, logvar: mu + logvar.exp() * torch.randn_like(mu), "variance is used as the standard deviation"),
    (lambda mu, logvar: mu + logvar * torch.randn_like(mu), "logvar itself is used"),
    (lambda mu, logvar: mu + logvar.exp() * torch.randn(mu.shape[1]), "variance is used as the standard deviation"),
    (lambda mu, logvar: mu + (0.5 * logvar).exp() * torch.randn(mu.shape[1]), "shared across the batch"),
    (lambda mu, logvar: mu + (0.5 * logvar).exp() * torch.randn(mu.shape[0], 1), "shared across dimensions"),
    (lambda mu, logvar: torch.distributions.Normal(mu, (0.5 * logvar).exp()).sample(), "blocks them"),
    (lambda mu, logvar: torch.normal(mu, (0.5 * logvar).exp()), "sample blocks them"),
    (lambda mu, logvar: (mu + (0.5 * logvar).exp() * torch.randn_like(mu)).detach(), "blocks them"),
    (lambda mu, logvar: mu + (0.25 * logvar).exp() * torch.randn_like(mu), "missing 1/2"),
    (lambda mu, logvar: mu + 0 * logvar, "no noise"),
    (lambda mu, logvar: mu + (0.5 * logvar).exp() * torch.rand_like(mu), "uniform"),
    (lambda mu, logvar: mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0)), "same z"),
    (lambda mu, logvar: (mu + (0.5 * logvar).exp() * torch.randn_like(mu)).sum(1), "shape"),
])
def test_reparameterize_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_reparameterize(fn)


def test_reparameterize_in_place_is_caught():
    def in_place(mu, logvar):
        with torch.no_grad():
            logvar.mul_(0.5)
        return mu + logvar.exp() * torch.randn_like(mu)

    with pytest.raises(CheckFailed, match="in place"):
        checks.check_reparameterize(in_place)


# --- kl_divergence --------------------------------------------------------------------------------


def kl_ok(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


@pytest.mark.parametrize("fn", [
    kl_ok,
    lambda mu, logvar: -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=-1),  # pytorch/examples' form
    lambda mu, logvar: torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)).sum(1),
    lambda mu, logvar: (0.5 * (mu * mu + logvar.exp()) - 0.5 - 0.5 * logvar).sum(dim=1),
])
def test_kl_accepts_correct_versions(fn, capsys):
    checks.check_kl_divergence(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda mu, logvar: -kl_ok(mu, logvar), "sign is flipped"),
    (lambda mu, logvar: 2 * kl_ok(mu, logvar), "1/2 in front is missing"),
    (lambda mu, logvar: kl_ok(mu, logvar) / mu.shape[1], "mean over the latent dimensions"),
    (lambda mu, logvar: 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(1), "mean over the latent dimensions"),
    (lambda mu, logvar: 0.5 * (mu.pow(2) + (2 * logvar).exp() - 1 - 2 * logvar).sum(1), r"log\(sigma\) instead"),
    (lambda mu, logvar: 0.5 * (mu.pow(2) + (0.5 * logvar).exp() - 1 - logvar).sum(1), "standard deviation"),
    (lambda mu, logvar: 0.5 * (mu.pow(2) + logvar.exp() - logvar).sum(1), "-1 is missing"),
    (lambda mu, logvar: 0.5 * (logvar.exp() - 1 - logvar).sum(1), "mu\\^2 term is missing"),
    (lambda mu, logvar: 0.5 * (mu.pow(2) + logvar.exp() - 1 + logvar).sum(1), "sign of the logvar term"),
    (lambda mu, logvar: kl_ok(mu, logvar).mean(), "single number"),
    (lambda mu, logvar: 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar), "forget to sum over the last dimension"),
    (lambda mu, logvar: kl_ok(mu, logvar).detach(), "gradients"),
    (lambda mu, logvar: torch.tensor(kl_ok(mu, logvar).tolist()), "gradients"),
])
def test_kl_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_kl_divergence(fn)


def test_kl_monte_carlo_estimate_is_named():
    def monte_carlo(mu, logvar):
        q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
        z = q.rsample((64,))
        return (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1).mean(0)

    with pytest.raises(CheckFailed, match="Monte Carlo"):
        checks.check_kl_divergence(monte_carlo)


# --- negative_elbo --------------------------------------------------------------------------------


def rec_sum(x, x_logits):
    return F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)


def elbo_ok(x, x_logits, mu, logvar):
    return (rec_sum(x, x_logits) + kl_ok(mu, logvar)).mean()


@pytest.mark.parametrize("fn", [
    elbo_ok,
    lambda x, xl, mu, lv: (F.binary_cross_entropy_with_logits(xl, x, reduction="sum") + kl_ok(mu, lv).sum()) / len(x),
    lambda x, xl, mu, lv: (-torch.distributions.Bernoulli(logits=xl).log_prob(x).sum((1, 2, 3)) + kl_ok(mu, lv)).mean(),
    lambda x, xl, mu, lv: (F.binary_cross_entropy(torch.sigmoid(xl), x, reduction="none").sum((1, 2, 3)) + kl_ok(mu, lv)).mean(),
    lambda x, xl, mu, lv: -(x * F.logsigmoid(xl) + (1 - x) * F.logsigmoid(-xl)).view(len(x), -1).sum(1).mean() + kl_ok(mu, lv).mean(),
])
def test_negative_elbo_accepts_correct_versions(fn, capsys):
    checks.check_negative_elbo(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda x, xl, mu, lv: -elbo_ok(x, xl, mu, lv), "sign is flipped"),
    (lambda x, xl, mu, lv: (rec_sum(x, xl) - kl_ok(mu, lv)).mean(), "KL has the wrong sign"),
    (lambda x, xl, mu, lv: F.binary_cross_entropy_with_logits(xl, x) + kl_ok(mu, lv).mean(), "per-pixel mean"),
    (lambda x, xl, mu, lv: F.binary_cross_entropy_with_logits(xl, x) + (kl_ok(mu, lv) / mu.shape[1]).mean(), "both terms are means"),
    (lambda x, xl, mu, lv: (rec_sum(x, xl) + kl_ok(mu, lv) / mu.shape[1]).mean(), "KL is a mean over latent"),
    (lambda x, xl, mu, lv: (rec_sum(x, torch.sigmoid(xl)) + kl_ok(mu, lv)).mean(), "sigmoid is applied twice"),
    (lambda x, xl, mu, lv: rec_sum(x, xl).mean(), "KL term is missing"),
    (lambda x, xl, mu, lv: (rec_sum(x, xl) + 2 * kl_ok(mu, lv)).mean(), "twice too big"),
    (lambda x, xl, mu, lv: (rec_sum(x, xl) + kl_ok(mu, lv)).sum(), "summed over the batch"),
    (lambda x, xl, mu, lv: rec_sum(x, xl) + kl_ok(mu, lv), "single number"),
    (lambda x, xl, mu, lv: ((torch.sigmoid(xl) - x).pow(2).flatten(1).sum(1) + kl_ok(mu, lv)).mean(), "squared error"),
    (lambda x, xl, mu, lv: (F.binary_cross_entropy(xl, x, reduction="none").sum((1, 2, 3)) + kl_ok(mu, lv)).mean(), "logits, not probabilities"),
    (lambda x, xl, mu, lv: elbo_ok(x, xl.detach(), mu, lv), "No gradient reaches x_logits"),
    (lambda x, xl, mu, lv: elbo_ok(x, xl, mu, lv).detach(), "gradients"),
])
def test_negative_elbo_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_negative_elbo(fn)


def test_checks_report_missing_exercise():
    def stub(*args):
        raise NotImplementedError("Exercise 1 (reparameterize): your code goes here")

    for check in (checks.check_reparameterize, checks.check_kl_divergence, checks.check_negative_elbo):
        with pytest.raises(CheckFailed, match="not written yet"):
            check(stub)


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
