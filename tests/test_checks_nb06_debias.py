"""check_resampling_weights (notebook 06, debiasing): correct versions written differently pass, each planted mistake fails
with its own message, and the check leaves the caller's random numbers alone."""

import numpy as np
import pytest
import torch

from labsupport import checks, debias
from labsupport.checks import CheckFailed


def onehot_version(mu, bins=10, smoothing=1e-3, alpha=1.0):
    return debias.resampling_weights(mu, bins, smoothing, alpha)


def loop_bucketize(mu, bins=10, smoothing=1e-3, alpha=1.0):
    best = torch.zeros(len(mu), dtype=torch.float64)
    for d in range(mu.shape[1]):
        z = mu[:, d].double()
        edges = torch.linspace(z.min().item(), z.max().item(), bins + 1, dtype=torch.float64)
        idx = torch.bucketize(z, edges[1:-1], right=True)
        q = torch.bincount(idx, minlength=bins).double() / len(z) + smoothing
        best = torch.maximum(best, q[idx] ** -alpha)
    return best / best.sum()


def numpy_histogram(mu, bins=10, smoothing=1e-3, alpha=1.0):  # MIT's lab style: np.histogram, outer edges opened to +-inf
    m = mu.numpy().astype(np.float64)
    weights = []
    for d in range(m.shape[1]):
        counts, edges = np.histogram(m[:, d], bins=bins)
        edges[0], edges[-1] = -np.inf, np.inf
        idx = np.digitize(m[:, d], edges) - 1
        weights.append((counts / len(m) + smoothing)[idx] ** (-alpha))
    w = np.max(np.stack(weights, 1), 1)
    return torch.from_numpy(w / w.sum())


def histc_float32(mu, bins=10, smoothing=1e-3, alpha=1.0):
    lo, hi = mu.min(0).values, mu.max(0).values
    inv = []
    for d in range(mu.shape[1]):
        share = torch.histc(mu[:, d], bins=bins, min=lo[d].item(), max=hi[d].item()) / len(mu)
        idx = ((mu[:, d] - lo[d]) * bins / (hi[d] - lo[d])).long().clamp(max=bins - 1)
        inv.append(torch.exp(-alpha * torch.log(share[idx] + smoothing)))
    w = torch.stack(inv).amax(0)
    return w / w.sum()


@pytest.mark.parametrize("fn", [onehot_version, loop_bucketize, numpy_histogram, histc_float32])
def test_accepts_correct_versions(fn, capsys):
    checks.check_resampling_weights(fn)
    assert "\u2713" in capsys.readouterr().out


def _mutant(**kw):
    from labsupport.checks.nb06_debias import _weights

    return lambda mu, bins=10, smoothing=1e-3, alpha=1.0: _weights(mu, bins, smoothing, alpha, **kw)


def _chunked(mu, bins=10, smoothing=1e-3, alpha=1.0):  # histograms per mini-batch of 64 codes
    return torch.cat([debias.resampling_weights(c, bins, smoothing, alpha) for c in mu.split(64)]) / len(mu.split(64))


def _fixed_range(mu, bins=10, smoothing=1e-3, alpha=1.0):
    best = torch.zeros(len(mu), dtype=torch.float64)
    for d in range(mu.shape[1]):
        z = mu[:, d].double()
        share = torch.histc(z, bins=bins, min=-3, max=3) / len(z)
        idx = ((z + 3) / 6 * bins).long().clamp(0, bins - 1)
        best = torch.maximum(best, (share[idx] + smoothing) ** -alpha)
    return best / best.sum()


def _one_range(mu, bins=10, smoothing=1e-3, alpha=1.0):
    lo, hi = mu.min(), mu.max()
    idx = ((mu - lo) / (hi - lo) * bins).floor().long().clamp(0, bins - 1)
    share = torch.stack([torch.bincount(idx[:, d], minlength=bins).double()[idx[:, d]] for d in range(mu.shape[1])], 1) / len(mu)
    w = (share + smoothing).pow(-alpha).max(1).values
    return w / w.sum()


@pytest.mark.parametrize("fn, message", [
    (lambda mu, bins=10, smoothing=1e-3, alpha=1.0: debias.resampling_weights(mu, bins, smoothing, -alpha), "grow with the density"),
    (lambda mu, bins=10, smoothing=1e-3, alpha=1.0: 1 / debias.resampling_weights(mu, bins, smoothing, alpha)
     / (1 / debias.resampling_weights(mu, bins, smoothing, alpha)).sum(), "grow with the density"),
    (lambda mu, bins=10, smoothing=1e-3, alpha=1.0: debias.resampling_weights(mu, bins, smoothing, alpha) * 7.0, "sum to"),
    (_mutant(normalise=False), "sum to"),
    (lambda mu, bins=10, smoothing=1e-3, alpha=1.0: debias.resampling_weights(mu, bins, smoothing, 1.0), "alpha is ignored"),
    (_mutant(additive=True), "added to the density"),
    (lambda mu, bins=10, smoothing=1e-3, alpha=1.0: debias.resampling_weights(mu, bins, 0.0, alpha), "No smoothing"),
    (_mutant(count=True), "No smoothing"),
    (_mutant(per_dim_norm=True), "each dimension's weights before"),
    (_mutant(combine="prod"), "multiplied"),
    (_mutant(combine="sum"), "summed"),
    (_mutant(combine="min"), "smallest inverse density"),
    (_chunked, "another order"),
    (_fixed_range, "fixed range"),
    (_one_range, "all\\* codes at once"),
    (lambda mu, bins=10, smoothing=1e-3, alpha=1.0: debias.resampling_weights(mu, bins + 1, smoothing, alpha), "Wrong weights"),
    (lambda mu, bins=10, smoothing=1e-3, alpha=1.0: -debias.resampling_weights(mu, bins, smoothing, alpha), "negative"),
    (lambda mu, bins=10, smoothing=1e-3, alpha=1.0: debias.resampling_weights(mu, bins, smoothing, alpha)[None], "shape"),
])
def test_rejects_each_mistake_with_its_message(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_resampling_weights(fn)


def test_in_place_is_caught():
    def in_place(mu, bins=10, smoothing=1e-3, alpha=1.0):
        w = debias.resampling_weights(mu, bins, smoothing, alpha)
        mu -= mu.min(0).values
        return w

    with pytest.raises(CheckFailed, match="in place"):
        checks.check_resampling_weights(in_place)


def test_not_written_yet_is_named():
    def stub(mu, bins=10, smoothing=1e-3, alpha=1.0):
        raise NotImplementedError("write resampling_weights")

    with pytest.raises(CheckFailed, match="not written yet"):
        checks.check_resampling_weights(stub)


def test_the_check_keeps_the_callers_random_numbers():
    torch.manual_seed(5)
    np.random.seed(5)
    checks.check_resampling_weights(loop_bucketize)
    after = torch.rand(3), np.random.rand(3)
    torch.manual_seed(5)
    np.random.seed(5)
    assert torch.equal(after[0], torch.rand(3)) and np.array_equal(after[1], np.random.rand(3))


def test_the_reference_in_labsupport_agrees_with_the_checks():
    from labsupport.checks.nb06_debias import _case, _weights

    mu = _case()
    assert torch.allclose(debias.resampling_weights(mu, 6, 0.01, 0.5), _weights(mu, 6, 0.01, 0.5))


# --- check_db_vae_loss ---------------------------------------------------------------------------------------------------

import torch.nn.functional as F  # noqa: E402


def _terms(model, x, y, std=lambda logvar: (0.5 * logvar).exp(), sample=True, sigmoid_first=False):
    logits, mu, logvar = model(x)
    z = mu + torch.randn_like(mu) * std(logvar) if sample else mu
    out = model.decode(z)
    out = torch.sigmoid(out) if sigmoid_first else out
    rec = F.binary_cross_entropy_with_logits(out, x.flatten(1), reduction="none").sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return logits, rec, kl


def loss_reference(model, x, y, vae_weight=1.0):
    return debias.reference_loss(model, x, y, vae_weight)


def loss_per_pixel_means(model, x, y, vae_weight=1.0):  # the reconstruction as a mean over all pixels, the KL per pixel
    logits, mu, logvar = model(x)
    std = torch.exp(logvar / 2)
    z = torch.distributions.Normal(mu, std).rsample()
    rec = F.binary_cross_entropy_with_logits(model.decoder(z).view_as(x), x, reduction="mean")
    kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1)) / 784
    return F.cross_entropy(logits, y) + vae_weight * (rec + kl)


def loss_explicit_bernoulli(model, x, y, vae_weight=1.0):  # log-probabilities written out, log_softmax + nll
    logits, mu, logvar = model(x)
    eps = torch.randn(mu.shape)
    z = mu + eps * logvar.mul(0.5).exp()
    pixel_logits = model.decode(z)
    log_p = x.flatten(1) * F.logsigmoid(pixel_logits) + (1 - x.flatten(1)) * F.logsigmoid(-pixel_logits)
    neg_elbo = -log_p.sum(1) + 0.5 * (mu * mu + logvar.exp() - 1 - logvar).sum(1)
    ce = F.nll_loss(F.log_softmax(logits, dim=1), y)
    return ce + vae_weight * (neg_elbo / x[0].numel()).mean()


def loss_per_image_then_mean(model, x, y, vae_weight=1.0):  # one total per image, then the batch mean
    logits, rec, kl = _terms(model, x, y)
    per_image = F.cross_entropy(logits, y, reduction="none") + vae_weight * (rec + kl) / 784
    return per_image.mean()


@pytest.mark.parametrize("fn", [loss_reference, loss_per_pixel_means, loss_explicit_bernoulli, loss_per_image_then_mean])
def test_db_vae_loss_accepts_correct_versions(fn, capsys):
    checks.check_db_vae_loss(fn)
    assert "\u2713 db_vae_loss" in capsys.readouterr().out


def _mistake(ce=lambda logits, y: F.cross_entropy(logits, y), combine=lambda ce, rec, kl, w: ce + w * ((rec + kl) / 784).mean(), **kw):
    def fn(model, x, y, vae_weight=1.0):
        logits, rec, kl = _terms(model, x, y, **kw)
        return combine(ce(logits, y), rec, kl, vae_weight)
    return fn


MISTAKES = {
    "kl sign": (_mistake(combine=lambda ce, rec, kl, w: ce + w * ((rec - kl) / 784).mean()), "wrong sign"),
    "kl without 1/2": (_mistake(combine=lambda ce, rec, kl, w: ce + w * ((rec + 2 * kl) / 784).mean()), "1/2 is missing"),
    "no kl": (_mistake(combine=lambda ce, rec, kl, w: ce + w * (rec / 784).mean()), "KL term is missing"),
    "decoder outputs squashed twice": (_mistake(sigmoid_first=True), "squashed twice"),
    "softmax before cross_entropy": (_mistake(ce=lambda logits, y: F.cross_entropy(logits.softmax(1), y)), "softmax before"),
    "nll_loss on logits": (_mistake(ce=lambda logits, y: F.nll_loss(logits, y)), "nll_loss expects log-probabilities"),
    "vae term summed over the batch": (_mistake(combine=lambda ce, rec, kl, w: ce + w * ((rec + kl) / 784).sum()), "summed over the batch while"),
    "everything summed over the batch": (_mistake(ce=lambda logits, y: F.cross_entropy(logits, y, reduction="sum"),
                                                  combine=lambda ce, rec, kl, w: ce + w * ((rec + kl) / 784).sum()), "loss is summed over the batch"),
    "per image, not per pixel": (_mistake(combine=lambda ce, rec, kl, w: ce + w * (rec + kl).mean()), "not per pixel"),
    "kl per image": (_mistake(combine=lambda ce, rec, kl, w: ce + w * (rec / 784 + kl).mean()), "KL is per image"),
    "vae_weight ignored": (_mistake(combine=lambda ce, rec, kl, w: ce + ((rec + kl) / 784).mean()), "vae_weight is ignored"),
    "vae_weight on the cross-entropy": (_mistake(combine=lambda ce, rec, kl, w: w * ce + ((rec + kl) / 784).mean()), "multiplies the cross-entropy"),
    "no cross-entropy": (_mistake(combine=lambda ce, rec, kl, w: w * ((rec + kl) / 784).mean()), "cross-entropy is missing"),
    "no vae term": (_mistake(combine=lambda ce, rec, kl, w: ce), "Only the cross-entropy"),
    "no sample": (_mistake(sample=False), "z = mu, with no noise"),
    "std = exp(logvar)": (_mistake(std=lambda logvar: logvar.exp()), "wrong scale"),
    "item": (lambda model, x, y, vae_weight=1.0: torch.tensor(loss_reference(model, x, y, vae_weight).item()), "no gradient"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_db_vae_loss_names_each_mistake(name):
    fn, message = MISTAKES[name]
    with pytest.raises(CheckFailed, match=message):
        checks.check_db_vae_loss(fn)


def test_db_vae_loss_detached_code_and_in_place():
    def detached(model, x, y, vae_weight=1.0):
        logits, mu, logvar = model(x)
        z = (mu + torch.randn_like(mu) * (0.5 * logvar).exp()).detach()
        rec = F.binary_cross_entropy_with_logits(model.decode(z), x.flatten(1), reduction="none").sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return F.cross_entropy(logits, y) + vae_weight * ((rec + kl) / 784).mean()

    def in_place(model, x, y, vae_weight=1.0):
        out = loss_reference(model, x, y, vae_weight)
        x.mul_(0.5)
        return out

    with pytest.raises(CheckFailed, match="wrong gradient for the model's encoder"):
        checks.check_db_vae_loss(detached)
    with pytest.raises(CheckFailed, match="in place"):
        checks.check_db_vae_loss(in_place)


def test_db_vae_loss_keeps_the_callers_random_numbers():
    torch.manual_seed(5)
    checks.check_db_vae_loss(loss_reference)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
