"""Notebook 01's checks (labsupport/checks/nb01.py): pca and log_marginal, every correct way passes, each mistake is named."""

import math

import pytest
import torch

from labsupport import checks
from labsupport.checks import CheckFailed


# --- pca ------------------------------------------------------------------------------------------


def pca_svd(X, k):
    mean = X.mean(0)
    return mean, torch.linalg.svd(X - mean, full_matrices=False).Vh[:k]


def pca_eigh(X, k):
    mean = X.mean(dim=0)
    Xc = X - mean
    _, vecs = torch.linalg.eigh(Xc.T @ Xc / (len(X) - 1))
    return mean, vecs[:, -k:].flip(1).T


def pca_lowrank(X, k):
    _, _, V = torch.pca_lowrank(X, q=k, center=True, niter=6)
    return X.mean(0), V.T


def pca_flipped_signs(X, k):
    mean, C = pca_svd(X, k)
    return mean, C * torch.tensor([(-1.0) ** i for i in range(k)])[:, None]


def pca_float64(X, k):
    return pca_svd(X.double(), k)


@pytest.mark.parametrize("fn", [pca_svd, pca_eigh, pca_lowrank, pca_flipped_signs, pca_float64])
def test_pca_accepts_correct_versions(fn, capsys):
    checks.check_pca(fn)
    assert "\u2713 pca" in capsys.readouterr().out


def _in_place(X, k):
    X -= X.mean(0)
    return pca_svd(X, k)


def _no_centring(X, k):
    return X.mean(0), torch.linalg.svd(X, full_matrices=False).Vh[:k]


def _ascending(X, k):
    mean, C = pca_eigh(X, k)
    return mean, C.flip(0)


def _smallest(X, k):
    Xc = X - X.mean(0)
    return X.mean(0), torch.linalg.eigh(Xc.T @ Xc)[1][:, :k].T


def _scaled(X, k):
    Xc = X - X.mean(0)
    _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    return X.mean(0), S[:k, None] * Vh[:k]


def _rotated(X, k):
    mean, C = pca_svd(X, k)
    angle = torch.tensor(0.6)
    R = torch.eye(k)
    R[:2, :2] = torch.tensor([[angle.cos(), -angle.sin()], [angle.sin(), angle.cos()]])
    return mean, R @ C


def _random_rows(X, k):
    q, _ = torch.linalg.qr(torch.randn(X.shape[1], k, generator=torch.Generator().manual_seed(0)))
    return X.mean(0), q.T


def _fixed_k(X, k):
    return pca_svd(X, 3)


@pytest.mark.parametrize("fn, message", [
    (lambda X, k: (X.mean(0), torch.linalg.svd(X - X.mean(0), full_matrices=False).Vh[:k].T), r"\(D, k\)"),
    (lambda X, k: (X.mean(1), pca_svd(X, k)[1]), "wrong|over the samples"),
    (lambda X, k: (X.mean(0, keepdim=True), pca_svd(X, k)[1]), "keepdim"),
    (lambda X, k: (torch.zeros(X.shape[1]), pca_svd(X, k)[1]), "all zeros"),
    (lambda X, k: (X.mean(0), torch.linalg.svd(X - X.mean(0), full_matrices=False).U[:, :k].T), "rows of U"),
    (lambda X, k: (X.mean(0), torch.linalg.svd(X - X.mean(0), full_matrices=False).Vh), "first k"),
    (lambda X, k: pca_svd(X, k)[1], "two things"),
    (_in_place, "in place"),
    (_no_centring, "without subtracting the mean"),
    (_ascending, "wrong order"),
    (_smallest, "smallest"),
    (_scaled, "not of length 1"),
    (_rotated, "rotated basis"),
    (_random_rows, "not the directions of largest variance"),
    (_fixed_k, "k = 1"),
    (lambda X, k: (_ for _ in ()).throw(NotImplementedError("Exercise 1")), "not written yet"),
])
def test_pca_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_pca(fn)


def test_pca_non_orthogonal_rows_are_named():
    def skewed(X, k):
        mean, C = pca_svd(X, k)
        C = C.clone()
        C[1] = (C[0] + C[1]) / 2 ** 0.5
        return mean, C

    with pytest.raises(CheckFailed, match="not orthonormal"):
        checks.check_pca(skewed)


# --- log_marginal: log p(x) of the Gaussian class model ---------------------------------------------------------------


def log_marginal_distributions(x, means, covs, priors):
    return torch.logsumexp(torch.distributions.MultivariateNormal(means, covs).log_prob(x[:, None]) + priors.log(), 1)


def log_marginal_by_hand(x, means, covs, priors):
    """The quadratic form with a linear solve, and log-sum-exp written out with the max shift."""
    diff = x[:, None] - means
    quad = (diff * torch.linalg.solve(covs, diff.unsqueeze(-1)).squeeze(-1)).sum(-1)
    a = -0.5 * quad - 0.5 * torch.logdet(2 * math.pi * covs) + priors.log()
    top = a.max(1, keepdim=True).values
    return (top + (a - top).exp().sum(1, keepdim=True).log()).squeeze(1)


def log_marginal_loop(x, means, covs, priors):
    rows = [torch.distributions.MultivariateNormal(means[k], covs[k]).log_prob(x) + math.log(priors[k]) for k in range(len(priors))]
    return torch.logsumexp(torch.stack(rows, 1), dim=1)


@pytest.mark.parametrize("fn", [log_marginal_distributions, log_marginal_by_hand, log_marginal_loop])
def test_every_correct_log_marginal_passes(fn, capsys):
    checks.check_log_marginal(fn)
    assert "\u2713 log_marginal" in capsys.readouterr().out


def _gauss(x, m, c):
    return torch.distributions.MultivariateNormal(m, c).log_prob(x[:, None])


@pytest.mark.parametrize("fn, message", [
    (lambda x, m, c, p: torch.logsumexp(_gauss(x, m, c), 1), "priors are missing"),
    (lambda x, m, c, p: torch.logsumexp(_gauss(x, m, c) + p, 1), "not their logs"),
    (lambda x, m, c, p: (_gauss(x, m, c) + p.log()).max(1).values, "the largest log-joint"),
    (lambda x, m, c, p: (_gauss(x, m, c) + p.log()).sum(1), "log of a \\*product\\*"),
    (lambda x, m, c, p: torch.logsumexp(_gauss(x, m, c) + p.log(), 1) - math.log(3), "Off by log 3"),
    (lambda x, m, c, p: (_gauss(x, m, c).exp() * p).sum(1).log(), "underflows to 0"),
    (lambda x, m, c, p: _gauss(x, m, c) + p.log(), "one number per point \\*and class\\*"),
    (lambda x, m, c, p: torch.logsumexp(torch.distributions.MultivariateNormal(m, precision_matrix=c).log_prob(x[:, None]) + p.log(), 1),
     "as if it were the precision"),
    (lambda x, m, c, p: torch.logsumexp(_gauss(x, m, c) + 0.5 * torch.logdet(2 * math.pi * c) + p.log(), 1), "normalising constant"),
])
def test_each_log_marginal_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_log_marginal(fn)


# --- sample_classes: ancestral sampling of the Gaussian class model ----------------------------------------------------


def sample_cholesky(n, means, covs, priors):
    y = torch.multinomial(priors, n, replacement=True)
    L = torch.linalg.cholesky(covs)
    eps = torch.randn(n, means.shape[1])
    return means[y] + (L[y] @ eps[:, :, None]).squeeze(-1), y


def sample_distributions(n, means, covs, priors):
    """Every class's Gaussian sampled for every point, then the drawn class's column kept."""
    y = torch.distributions.Categorical(probs=priors).sample((n,))
    every = torch.distributions.MultivariateNormal(means, covs).sample((n,))  # (n, K, D)
    return every[torch.arange(n), y], y


def sample_per_class(n, means, covs, priors):
    """One MultivariateNormal per class, filled into the rows of that class."""
    y = torch.multinomial(priors, n, replacement=True)
    x = torch.empty(n, means.shape[1])
    for c in range(len(priors)):
        rows = y == c
        x[rows] = torch.distributions.MultivariateNormal(means[c], covs[c]).sample((int(rows.sum()),))
    return x, y


def sample_rows_einsum(n, means, covs, priors):
    """Noise as rows times the transposed factor, written with einsum, classes from inverse-CDF sampling."""
    y = torch.searchsorted(priors.cumsum(0), torch.rand(n)).clamp(max=len(priors) - 1)
    return means[y] + torch.einsum("nd,ned->ne", torch.randn(n, means.shape[1]), torch.linalg.cholesky(covs)[y]), y


@pytest.mark.parametrize("fn", [sample_cholesky, sample_distributions, sample_per_class, sample_rows_einsum])
def test_every_correct_sample_classes_passes(fn, capsys):
    checks.check_sample_classes(fn)
    assert "\u2713 sample_classes" in capsys.readouterr().out


def _with_factor(factor):
    """A sampler right but for the matrix that shapes the noise: factor(covs) -> (K, D, D), applied to column noise."""
    def sampler(n, means, covs, priors):
        y = torch.multinomial(priors, n, replacement=True)
        return means[y] + (factor(covs)[y] @ torch.randn(n, means.shape[1], 1)).squeeze(-1), y
    return sampler


def _seeded(n, means, covs, priors):
    torch.manual_seed(0)
    return sample_cholesky(n, means, covs, priors)


def _unmatched(n, means, covs, priors):
    x, _ = sample_cholesky(n, means, covs, priors)
    return x, torch.multinomial(priors, n, replacement=True)


def _in_place(n, means, covs, priors):
    priors /= priors.max()  # multinomial normalises, so the samples stay right: only the write is wrong
    return sample_cholesky(n, means, covs, priors)


def _uncentred(n, means, covs, priors):
    x, y = sample_cholesky(n, means, covs, priors)
    return x - means[y], y


def _one_class(n, means, covs, priors):
    y = torch.multinomial(priors, 1).expand(n)
    return torch.distributions.MultivariateNormal(means[y], covs[y]).sample(), y


def _fixed_classes(n, means, covs, priors):
    x, y = sample_cholesky(n, means, covs, priors)
    return x, y if len(priors) == 3 else y + 3


@pytest.mark.parametrize("fn, message", [
    (lambda n, m, c, p: sample_cholesky(n, m, c, torch.ones_like(p) / len(p)), "uniform"),
    (_with_factor(lambda c: c), "Sigma\\^2"),
    (_with_factor(lambda c: torch.linalg.cholesky(c).transpose(1, 2)), "transposed"),
    (lambda n, m, c, p: (lambda y: (m[y] + torch.randn(n, m.shape[1]), y))(torch.multinomial(p, n, replacement=True)), "identity covariance"),
    (_with_factor(lambda c: torch.diag_embed(torch.diagonal(c, dim1=1, dim2=2).sqrt())), "no correlation"),
    (_uncentred, "centred at 0"),
    (_one_class, "Every sample is from class"),
    (lambda n, m, c, p: (lambda x, y: (x[:, None], y))(*sample_cholesky(n, m, c, p)), "one row per sample"),
    (lambda n, m, c, p: (lambda x, y: (x.T, y))(*sample_cholesky(n, m, c, p)), "one row per sample"),
    (lambda n, m, c, p: (lambda x, y: (x, y[:, None]))(*sample_cholesky(n, m, c, p)), "y should have shape"),
    (lambda n, m, c, p: (lambda x, y: (x, y.float()))(*sample_cholesky(n, m, c, p)), "class indices"),
    (lambda n, m, c, p: (lambda x, y: (y, x))(*sample_cholesky(n, m, c, p)), "return \\(x, y\\)"),
    (lambda n, m, c, p: sample_cholesky(n, m, c, p)[0], "two tensors"),
    (_seeded, "exactly the same samples"),
    (_unmatched, "not drawn from the class you return"),
    (_in_place, "in place"),
    (_fixed_classes, "number of classes fixed"),
    (lambda n, m, c, p: (_ for _ in ()).throw(NotImplementedError("Exercise 3")), "not written yet"),
])
def test_each_sample_classes_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_sample_classes(fn)


# --- fit_class_gaussians: the generative classifier's maximum-likelihood fit -------------------------------------------


def fit_loop_cov(x, y, k):
    priors = torch.bincount(y, minlength=k).float() / len(y)
    means = torch.stack([x[y == c].mean(0) for c in range(k)])
    covs = torch.stack([torch.cov(x[y == c].T, correction=0) for c in range(k)])
    return priors, means, covs


def fit_unbiased(x, y, k):
    """torch.cov's default, dividing by N_c - 1."""
    rows = [x[y == c] for c in range(k)]
    return torch.tensor([len(r) / len(x) for r in rows]), torch.stack([r.mean(0) for r in rows]), torch.stack([torch.cov(r.T) for r in rows])


def fit_one_hot(x, y, k):
    """Counts, means and covariances as matrix products with the one-hot labels."""
    onehot = torch.nn.functional.one_hot(y, k).float()  # (N, k)
    counts = onehot.sum(0)
    means = onehot.T @ x / counts[:, None]
    centred = x[:, None] - means  # (N, k, D): each point against every class mean, kept only for its own class
    covs = torch.einsum("nk,nkd,nke->kde", onehot, centred, centred) / counts[:, None, None]
    return counts / len(x), means, covs


def fit_numpy(x, y, k):
    import numpy as np

    xn, yn = x.numpy(), y.numpy()
    parts = [xn[yn == c] for c in range(k)]
    return (torch.tensor([len(p) / len(xn) for p in parts]), torch.tensor(np.stack([p.mean(0) for p in parts])),
            torch.tensor(np.stack([np.cov(p, rowvar=False, bias=True) for p in parts])))


@pytest.mark.parametrize("fn", [fit_loop_cov, fit_unbiased, fit_one_hot, fit_numpy])
def test_every_correct_fit_class_gaussians_passes(fn, capsys):
    checks.check_fit_class_gaussians(fn)
    assert "\u2713 fit_class_gaussians" in capsys.readouterr().out


def _with(priors=None, means=None, covs=None):
    """The right fit with one of its three parts replaced: part(x, y, k, right_part) -> wrong part."""
    def fit(x, y, k):
        p, m, c = fit_loop_cov(x, y, k)
        return (priors(x, y, k, p) if priors else p, means(x, y, k, m) if means else m, covs(x, y, k, c) if covs else c)
    return fit


def _pooled(x, y, k, c):
    m = fit_loop_cov(x, y, k)[1]
    return (sum((x[y == j] - m[j]).T @ (x[y == j] - m[j]) for j in range(k)) / len(x)).expand(k, -1, -1)


def _fixed_three(x, y, k):
    p, m, c = fit_loop_cov(x, y, 3)
    return (p, m, c) if k == 3 else (torch.cat([p, torch.zeros(k - 3)]), torch.cat([m, torch.zeros(k - 3, m.shape[1])]), torch.cat([c, torch.eye(c.shape[1]).expand(k - 3, -1, -1)]))


def _fixed_n(x, y, k):
    p, m, c = fit_loop_cov(x, y, k)
    return torch.bincount(y, minlength=k).float() / 29, m, c  # the first case's number of points


def _in_place(x, y, k):
    out = fit_loop_cov(x, y, k)
    x += 0.0
    x[0] += 1.0
    return out


@pytest.mark.parametrize("fn, message", [
    (_with(priors=lambda x, y, k, p: torch.bincount(y, minlength=k)), "class counts"),
    (_with(priors=lambda x, y, k, p: torch.full((k,), 1 / k)), "uniform"),
    (_with(means=lambda x, y, k, m: x.mean(0).expand(k, -1)), "mean of \\*all\\* the points"),
    (_with(means=lambda x, y, k, m: m.T), "one row per class"),
    (_with(covs=lambda x, y, k, c: torch.stack([x[y == j].T @ x[y == j] / (y == j).sum() for j in range(k)])), "not centred"),
    (_with(covs=lambda x, y, k, c: torch.cov(x.T).expand(k, -1, -1)), "all the points together"),
    (_with(covs=_pooled), "shared covariance"),
    (_with(covs=lambda x, y, k, c: torch.diag_embed(torch.diagonal(c, dim1=1, dim2=2))), "Only the variances"),
    (_with(covs=lambda x, y, k, c: c * torch.bincount(y, minlength=k)[:, None, None] / len(x)), "number of \\*all\\* points"),
    (_with(covs=lambda x, y, k, c: torch.cov(x.T)), "stacked as"),
    (lambda x, y, k: tuple(reversed(fit_loop_cov(x, y, k))), "another order"),
    (lambda x, y, k: fit_loop_cov(x, y, k)[:2], "three tensors"),
    (_fixed_three, "4 classes in D = 3 should have shape"),
    (_fixed_n, "Right for 3 classes in 2 dimensions"),
    (_in_place, "in place"),
    (lambda x, y, k: (_ for _ in ()).throw(NotImplementedError("Exercise 2")), "not written yet"),
])
def test_each_fit_class_gaussians_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_fit_class_gaussians(fn)
