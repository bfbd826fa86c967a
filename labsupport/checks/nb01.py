"""Notebook 01, supervised vs unsupervised: pca, log_marginal (the generative model's log p(x))."""

from __future__ import annotations

import math
from typing import Callable

import torch

from .core import CheckFailed, Unchanged, call, check, close, describe, expect_tensor, named, passed


def _pca_case(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``X: (n, d)`` float32 whose sample covariance has known eigenvectors and well-separated eigenvalues.

    Returns ``(X, mean: (d,), directions: (d, d) rows sorted by variance, variances: (d,))``, all float64 but X.
    The mean is large on purpose: forgetting to centre then gives visibly wrong directions.
    """
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    stds = 6.0 * 0.45 ** torch.arange(d, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    z, _ = torch.linalg.qr(z - z.mean(0))  # exactly uncorrelated, zero-mean columns ...
    z = z * math.sqrt(n)  # ... with unit variance (1/n convention)
    mean = 8.0 + torch.randn(d, generator=g, dtype=torch.float64)
    X = (z * stds) @ q.T + mean
    X = X.float()
    return X, X.double().mean(0), q.T.contiguous(), stds**2


@check
def check_pca(fn: Callable) -> None:
    """``pca(X, k) -> (mean, components)``: ``X: (N, D)``; ``mean: (D,)``; ``components: (k, D)`` orthonormal rows,
    the directions of largest variance first. Any sign of each row is accepted."""
    n, d, k = 300, 6, 3
    X, mean_true, dirs, variances = _pca_case(n, d, seed=0)
    kept = Unchanged(X)
    out = call(fn, X, k)
    kept.verify("pca changed X in place (e.g. `X -= mean`). Centre a copy instead: `Xc = X - mean`.")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"pca should return two things, (mean, components); it returned {describe(out)}.")
    mean, comps = out
    if isinstance(mean, torch.Tensor) and tuple(mean.shape) == (n,):
        raise CheckFailed(f"mean has shape {(n,)}: one value per sample. Average over the samples instead: X.mean(dim=0) -> ({d},).")
    if isinstance(mean, torch.Tensor) and tuple(mean.shape) == (1, d):
        raise CheckFailed(f"mean has shape (1, {d}); return it as ({d},) (drop keepdim=True, or .squeeze(0)).")
    expect_tensor(mean, (d,), "mean")
    if isinstance(comps, torch.Tensor) and tuple(comps.shape) == (d, k):
        raise CheckFailed(f"components has shape (D, k) = {(d, k)}: the directions are in its columns. "
                          f"Return them as rows, shape (k, D) = {(k, d)} (transpose, e.g. `Vh[:k]` or `V[:, :k].T`).")
    if isinstance(comps, torch.Tensor) and comps.dim() == 2 and comps.shape[1] == n:
        raise CheckFailed(f"components has shape {tuple(comps.shape)}, one entry per sample: these look like rows of U. "
                          "In X_c = U S Vh the directions in feature space are the rows of Vh.")
    if isinstance(comps, torch.Tensor) and comps.dim() == 2 and comps.shape[0] != k and comps.shape[1] == d:
        raise CheckFailed(f"components has {comps.shape[0]} rows but k = {k} were asked for: keep only the first k.")
    expect_tensor(comps, (k, d), "components")
    mean, C = mean.detach().double(), comps.detach().double()
    if not close(mean, mean_true, rtol=1e-4, atol=1e-3):
        raise CheckFailed(named(mean, [("mean is all zeros: return the mean of X over the samples, X.mean(dim=0).", torch.zeros(d))],
                                rtol=1e-4, atol=1e-3) or "mean is not the average of the rows of X: use X.mean(dim=0).")
    gram = C @ C.T
    if not close(gram, torch.eye(k), atol=1e-3):
        norms = C.norm(dim=1)
        if close(gram - torch.diag(gram.diagonal()), torch.zeros(k, k), atol=1e-3 * float(norms.max()) ** 2):
            raise CheckFailed(f"The rows of components are orthogonal but not of length 1 (lengths {[round(v, 3) for v in norms.tolist()]}). "
                              "Did you scale them by singular values or variances? Return the unit directions themselves.")
        raise CheckFailed("The rows of components are not orthonormal (components @ components.T should be the identity). "
                          "Take them from an SVD or eigendecomposition of the centred data.")
    match = (C @ dirs.T).abs()  # (k, d): |cos| between each returned row and each true direction
    best = match.argmax(1).tolist()
    if bool((match.max(1).values > 0.999).all()):
        if best == list(range(k)):
            one = call(fn, X, 1)
            C1 = one[1] if isinstance(one, (tuple, list)) and len(one) == 2 else one
            if not isinstance(C1, torch.Tensor) or tuple(C1.shape) != (1, d):
                raise CheckFailed(f"With k = 1, components should have shape (1, {d}), got {describe(C1)}.")
            X2, m2, dirs2, _ = _pca_case(40, d, seed=1)
            m_out, C_all = call(fn, X2, d)
            expect_tensor(C_all, (d, d), f"components for k = D = {d}")
            if not close(m_out.detach().double(), m2, atol=1e-3) or not close((C_all.detach().double() @ dirs2.T).abs(), torch.eye(d), atol=2e-3):
                raise CheckFailed(f"Correct for k = {k} on 300 points, but wrong with k = D = {d} on 40 points. Is something fixed to one size?")
            passed("pca", "orthonormal, sorted by variance, any signs")
            return
        if sorted(best) == list(range(k)):
            raise CheckFailed(f"You found the right directions but in the wrong order (they are the true directions {best}). "
                              "Sort them by explained variance, largest first. torch.linalg.eigh returns eigenvalues in *ascending* order: flip it.")
        if sorted(best) == list(range(d - k, d)):
            raise CheckFailed("These are the directions of *smallest* variance. torch.linalg.eigh sorts eigenvalues in ascending "
                              "order, so the largest ones are the last columns: take eigenvectors[:, -k:] and flip to put the largest first.")
    Xc = X.double() - mean_true
    uncentred = torch.linalg.svd(X.double(), full_matrices=False).Vh[:k]
    if bool(((C * uncentred).sum(1).abs() > 0.99).all()):
        raise CheckFailed("These are the principal directions of X without subtracting the mean. Centre first: Xc = X - mean, then decompose Xc.")
    got = (Xc @ C.T).pow(2).mean(0)
    if close(torch.linalg.svdvals(C @ dirs[:k].T), torch.ones(k), atol=1e-3):
        raise CheckFailed("Your rows span the right subspace but are a rotated basis of it, not the principal directions. "
                          "Use the singular vectors / eigenvectors themselves, not e.g. a QR of them.")
    raise CheckFailed(f"The rows are not the directions of largest variance: the variance along them is "
                      f"{[round(v, 2) for v in got.tolist()]}, the top-{k} principal directions give {[round(v, 2) for v in variances[:k].tolist()]}.")


def _mixture_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three 2D Gaussian classes with full covariances and unequal priors, and points near and very far from them.

    Returns ``x: (M, 2), means: (3, 2), covs: (3, 2, 2), priors: (3,)`` in float32; the far points have log-joints
    near -1000, where exp() underflows."""
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]])
    factors = torch.tensor([[[1.0, 0.0], [0.6, 0.5]], [[0.6, 0.0], [0.3, 0.9]], [[1.1, 0.0], [-0.4, 0.5]]])
    covs = factors @ factors.transpose(1, 2)
    priors = torch.tensor([0.5, 0.3, 0.2])
    near = torch.randn(12, 2, generator=g) * 1.5
    far = torch.tensor([[40.0, -35.0], [-30.0, 45.0]])
    return torch.cat([near, far]), means, covs, priors


def _log_gaussians(x: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    """``log N(x_m; mu_k, Sigma_k)``, float64: ``(M, D), (K, D), (K, D, D) -> (M, K)``."""
    return torch.distributions.MultivariateNormal(means.double(), covs.double()).log_prob(x.double()[:, None])


@check
def check_log_marginal(fn: Callable) -> None:
    """``log_marginal(x, means, covs, priors) -> (M,)``: ``log p(x) = log sum_k pi_k N(x; mu_k, Sigma_k)``, stable far from the data."""
    x, means, covs, priors = _mixture_case(0)
    kept = Unchanged(x, means, covs, priors)
    out = call(fn, x, means, covs, priors)
    kept.verify("log_marginal changed one of its inputs in place: leave x and the model's parameters as they are.")
    if isinstance(out, torch.Tensor) and out.dim() == 2 and tuple(out.shape) == (len(x), 3):
        raise CheckFailed(f"Got shape {tuple(out.shape)}: one number per point *and class*, i.e. the log-joints log p(x, y). "
                          "p(x) sums the joint over the classes: combine the three columns into one, shape (14,).")
    if isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() == 1 and len(out) == len(x) and bool(torch.isinf(out[-2:]).any()):
        raise CheckFailed("log_marginal is -inf for the two points far from every class: their log-joints are near -1000, so exp() "
                          "underflows to 0 before the sum and the log of 0 is -inf. Sum the probabilities without leaving log space "
                          "(shift by the largest log-joint before exponentiating).")
    got = expect_tensor(out, (len(x),), "log_marginal(x, means, covs, priors) for 14 points and 3 classes").detach().double()
    log_gauss = _log_gaussians(x, means, covs)  # (M, K)
    log_prior = priors.double().log()
    want = torch.logsumexp(log_gauss + log_prior, 1)
    if close(got, want, rtol=1e-4, atol=1e-3):
        passed("log_marginal", "log p(x) of the Gaussian class model, finite far from the data")
        return
    d = x.shape[1]
    precision_gauss = torch.distributions.MultivariateNormal(means.double(), precision_matrix=covs.double()).log_prob(x.double()[:, None])
    unnormalised = log_gauss + 0.5 * torch.logdet(2 * math.pi * covs.double())
    raise CheckFailed(named(got, [
        ("The class priors are missing: p(x) = sum_y p(x|y) p(y), so each class's log-density gets log pi_y added.", torch.logsumexp(log_gauss, 1)),
        ("You added the priors themselves, not their logs: in log space the product p(x|y) p(y) is log p(x|y) + log p(y).",
         torch.logsumexp(log_gauss + priors.double(), 1)),
        ("That is the largest log-joint, max_y log p(x, y): the class the point most likely came from, not p(x). "
         "p(x) *sums* the joint over every class.", (log_gauss + log_prior).max(1).values),
        ("You summed the log-joints over the classes: that is the log of a *product*. p(x) is the log of a *sum* of the joints.",
         (log_gauss + log_prior).sum(1)),
        ("Off by log 3: you averaged the joints over the classes. The priors already weight them: sum, do not average.",
         want - math.log(3)),
        ("Each Gaussian is missing its normalising constant -1/2 log det(2 pi Sigma): the densities must integrate to 1.",
         torch.logsumexp(unnormalised + log_prior, 1)),
        ("You used the covariance as if it were the precision (its inverse) in the quadratic form (x - mu)^T Sigma^-1 (x - mu).",
         torch.logsumexp(precision_gauss + log_prior, 1)),
    ], rtol=1e-4, atol=1e-3) or f"Wrong values: got {[round(v, 2) for v in got[:4].tolist()]}..., expected {[round(v, 2) for v in want[:4].tolist()]}... "
                                f"(log p(x) for the first points; D = {d}).")
