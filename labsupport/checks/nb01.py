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


def _sampling_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three 2D classes with unequal priors and full covariances whose mistakes all look different: each Cholesky factor
    is far from symmetric (so L L^T and L^T L differ) and no covariance is near its own square (so Sigma used as the
    factor shows). Returns ``means: (3, 2), covs: (3, 2, 2), priors: (3,), factors: (3, 2, 2)``, float32."""
    means = torch.tensor([[-3.0, 1.0], [2.0, 2.5], [1.0, -2.5]])
    factors = torch.tensor([[[1.5, 0.0], [1.2, 0.4]], [[0.5, 0.0], [-0.6, 0.8]], [[1.0, 0.0], [0.9, 1.3]]])
    return means, factors @ factors.transpose(1, 2), torch.tensor([0.55, 0.3, 0.15]), factors


def _class_covariances(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The sample covariance of each class's points, float64: ``(n, D), (n,) -> (k, D, D)``."""
    return torch.stack([torch.cov(x[y == c].T.double()) for c in range(k)])


@check
def check_sample_classes(fn: Callable) -> None:
    """``sample_classes(n, means, covs, priors) -> (x: (n, D), y: (n,) integers)``: ancestral sampling of the Gaussian class
    model with torch's global random numbers. Judged on statistics of 100 000 draws (frequencies, means, covariances per
    class), with tolerances of 7 or more standard errors of a right answer, and on every mistake's own statistics."""
    means, covs, priors, L = _sampling_case()
    n, (k, d) = 100_000, means.shape
    kept = Unchanged(means, covs, priors)
    torch.manual_seed(0)  # the wrapper forks torch's generator: the caller's random numbers stay as they were
    out = call(fn, n, means, covs, priors)
    kept.verify("sample_classes changed means, covs or priors in place: leave the model's parameters as they are.")
    x, y = _sample_pair(out, n, d, f"sample_classes({n}, means, covs, priors)")
    if not ((y >= 0) & (y < k)).all():
        raise CheckFailed(f"y holds values outside 0 ... {k - 1}: it should be the index of each sample's class.")
    torch.manual_seed(1)
    again = call(fn, n, means, covs, priors)
    if isinstance(again, (tuple, list)) and len(again) == 2 and isinstance(again[0], torch.Tensor) and torch.equal(again[0], x):
        raise CheckFailed("Two calls gave exactly the same samples: is a seed (torch.manual_seed, a Generator) set inside the function? "
                          "Draw from torch's global random numbers, so that every call gives new points.")
    freq = torch.bincount(y, minlength=k).double() / n
    top = int(freq.argmax())
    if freq[top] > 0.999:
        raise CheckFailed(f"Every sample is from class {top}: draw a class for *each* of the n samples (n draws from p(y)), "
                          "not one class for all of them.")
    if not close(freq, priors, rtol=0, atol=0.02):  # one standard error: under 0.002
        raise CheckFailed(named(freq, [
            (f"The classes come out uniform ({[round(v, 2) for v in freq.tolist()]}): y ~ p(y) means class c is drawn with "
             f"probability pi_c = {[round(v, 2) for v in priors.tolist()]}, the prior you are given.", torch.full((k,), 1 / k)),
        ], rtol=0, atol=0.02) or f"The class frequencies are {[round(v, 3) for v in freq.tolist()]}, but the priors are "
                                 f"{[round(v, 3) for v in priors.tolist()]}: class c must be drawn with probability pi_c.")
    got_means = torch.stack([x[y == c].double().mean(0) for c in range(k)])
    if not close(got_means, means, rtol=0, atol=0.1):  # one standard error: under 0.013
        raise CheckFailed(named(got_means, [
            ("The points of every class are centred at 0: add the class mean mu_y to the noise.", torch.zeros(k, d)),
            ("The points are not drawn from the class you return in y: every class's points have the same mean (the "
             "mixture's). Draw x of sample i from the Gaussian of *its* class y_i.", (priors[:, None] * means).sum(0).expand(k, d)),
        ], rtol=0, atol=0.1) or f"The points of class c do not have mean mu_c: got {[[round(v, 2) for v in m] for m in got_means.tolist()]}, "
                                f"expected {means.tolist()}.")
    got_covs = _class_covariances(x, y, k)
    if not close(got_covs, covs, rtol=0.1, atol=0.05):  # one standard error: under 0.03
        raise CheckFailed(named(got_covs, [
            ("Each class's points have covariance Sigma^2: you multiplied the noise by Sigma itself. A matrix A turns "
             "N(0, I) noise into covariance A A^T, so use a factor L with L L^T = Sigma (Cholesky).", covs @ covs),
            ("The covariance is L^T L instead of L L^T = Sigma: the factor is transposed. With the noise as rows, eps: (n, D), "
             "a row eps_i becomes (L eps_i)^T = eps_i^T L^T.", L.transpose(1, 2) @ L),
            ("Each class's points have the identity covariance: the noise is not shaped by the class's covariance at all.",
             torch.eye(d).expand(k, d, d)),
            ("The points have no correlation between coordinates: you scaled each coordinate by its own standard deviation. "
             "The covariance's off-diagonal terms need its full factor L (L L^T = Sigma).", torch.diag_embed(torch.diagonal(covs, dim1=1, dim2=2))),
        ], rtol=0.1, atol=0.05) or "The points of each class do not have covariance Sigma_c: transform N(0, I) noise by a "
                                   "factor L_c with L_c L_c^T = Sigma_c.")
    _other_sizes(fn)
    passed("sample_classes", f"class frequencies, means and covariances of {n:,} samples")


def _sample_pair(out: object, n: int, d: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` must be ``(x: (n, d) float, y: (n,) integers)``; returns them detached, or names what is wrong."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"sample_classes should return two tensors, (x, y); it returned {describe(out)}.")
    x, y = out
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and not x.is_floating_point() and y.is_floating_point():
        raise CheckFailed("The first thing returned holds integers and the second floats: return (x, y), the points first.")
    if isinstance(x, torch.Tensor) and x.numel() == n * d and tuple(x.shape) != (n, d):
        raise CheckFailed(f"x should have shape (n, D) = {(n, d)}, got {tuple(x.shape)}: one row per sample "
                          "(a matrix product of (D, D) by (D, 1) columns leaves a dimension to squeeze, or the rows and columns are swapped).")
    x = expect_tensor(x, (n, d), f"x of {what}").detach()
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise CheckFailed(f"y should be a tensor of class indices (integers, e.g. torch.long), got {describe(y)}.")
    if tuple(y.shape) != (n,):
        raise CheckFailed(f"y should have shape (n,) = {(n,)}, got {tuple(y.shape)}.")
    return x, y.detach().long()


def _other_sizes(fn: Callable) -> None:
    """Another n, dimension and number of classes: nothing may be fixed to the notebook's sizes."""
    g = torch.Generator().manual_seed(2)
    k, d, n = 4, 3, 7
    factors = torch.randn(k, d, d, generator=g).tril()
    covs = factors @ factors.transpose(1, 2) + 0.5 * torch.eye(d)
    x, y = _sample_pair(call(fn, n, torch.randn(k, d, generator=g), covs, torch.full((k,), 1 / k)), n, d,
                        f"sample_classes({n}, means, covs, priors) with {k} classes in {d} dimensions")
    if not ((y >= 0) & (y < k)).all():
        raise CheckFailed(f"With {k} classes, y holds values outside 0 ... {k - 1}: is the number of classes fixed somewhere?")


def _fit_case(seed: int, counts: tuple[int, ...], d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffled points of ``len(counts)`` classes with ``counts`` points each, every class its own mean (far from 0) and
    correlated spread: ``x: (sum(counts), d)``, ``y`` long."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, n in enumerate(counts):
        factor = torch.randn(d, d, generator=g).tril() + torch.eye(d)
        xs.append(3.0 * torch.randn(d, generator=g) + 2.0 + torch.randn(n, d, generator=g) @ factor.T)
        ys.append(torch.full((n,), c))
    order = torch.randperm(sum(counts), generator=g)
    return torch.cat(xs)[order], torch.cat(ys)[order]


def _fit_reference(x: torch.Tensor, y: torch.Tensor, k: int, correction: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maximum-likelihood fit (``correction=0``) or the unbiased covariances (``correction=1``), float64."""
    x = x.double()
    priors = torch.stack([(y == c).double().mean() for c in range(k)])
    means = torch.stack([x[y == c].mean(0) for c in range(k)])
    covs = torch.stack([torch.cov(x[y == c].T, correction=correction) for c in range(k)])
    return priors, means, covs


@check
def check_fit_class_gaussians(fn: Callable) -> None:
    """``fit_class_gaussians(x: (N, D), y: (N,), k) -> (priors: (k,), means: (k, D), covs: (k, D, D))``: the class frequencies,
    means and covariances (dividing by N_c or by N_c - 1, both accepted)."""
    counts, d = (14, 9, 6), 2
    k, n = len(counts), sum(counts)
    x, y = _fit_case(0, counts, d)
    kept = Unchanged(x, y)
    out = call(fn, x, y, k)
    kept.verify("fit_class_gaussians changed x or y in place: leave the data as it is.")
    priors, means, covs = _fit_triple(out, k, d, f"fit_class_gaussians(x, y, {k}) for {n} points in D = {d}")
    want_p, want_m, want_c = _fit_reference(x, y, k)
    if not close(priors, want_p, atol=1e-4):
        raise CheckFailed(named(priors, [
            ("priors are the class counts: divide them by the number of points, so that they sum to 1.", want_p * n),
            ("priors are uniform, 1/k each: they are the classes' frequencies in the data.", torch.full((k,), 1 / k)),
        ], atol=1e-4) or f"priors should be the share of the points in each class, {[round(v, 3) for v in want_p.tolist()]}; "
                         f"got {[round(v, 3) for v in priors.tolist()]}.")
    if not close(means, want_m, atol=1e-4):
        raise CheckFailed(named(means, [
            ("Every class got the mean of *all* the points: average only the points of class c.", x.double().mean(0).expand(k, d)),
        ], atol=1e-4) or "means[c] should be the average of the points of class c (the rows of x where y == c).")
    unbiased = _fit_reference(x, y, k, correction=1)[2]
    if not (close(covs, want_c, atol=1e-4) or close(covs, unbiased, atol=1e-4)):
        xd = x.double()
        pooled = sum((xd[y == c] - want_m[c]).T @ (xd[y == c] - want_m[c]) for c in range(k)) / n
        raise CheckFailed(named(covs, [
            ("covs are not centred: subtract the class mean from each point before taking the outer products "
             "(the covariance is E[(x - mu)(x - mu)^T], not E[x x^T]).",
             torch.stack([xd[y == c].T @ xd[y == c] / (y == c).sum() for c in range(k)])),
            ("Every class got the covariance of all the points together: take each class's points alone.",
             torch.cov(xd.T, correction=0).expand(k, d, d)),
            ("Every class got the covariance of all the points together: take each class's points alone.", torch.cov(xd.T).expand(k, d, d)),
            ("Every class got the same, shared covariance (the within-class covariance pooled over the classes, as in linear "
             "discriminant analysis): here each class has its own, from its points alone.", pooled.expand(k, d, d)),
            ("Only the variances are there (a diagonal matrix): keep the covariances between coordinates too.",
             torch.diag_embed(torch.diagonal(want_c, dim1=1, dim2=2))),
            ("Each class's sum of outer products is divided by the number of *all* points: divide by the class's own count N_c.",
             want_c * torch.tensor(counts, dtype=torch.float64)[:, None, None] / n),
        ], atol=1e-4) or "covs[c] should be the covariance of the points of class c (divided by N_c, or by N_c - 1).")
    x2, y2 = _fit_case(1, (5, 8, 4, 7), 3)
    p2, m2, c2 = _fit_triple(call(fn, x2, y2, 4), 4, 3, "fit_class_gaussians(x, y, 4) for 4 classes in D = 3")
    r2, r2u = _fit_reference(x2, y2, 4), _fit_reference(x2, y2, 4, correction=1)
    if not (close(p2, r2[0], atol=1e-4) and close(m2, r2[1], atol=1e-4) and (close(c2, r2[2], atol=1e-4) or close(c2, r2u[2], atol=1e-4))):
        raise CheckFailed("Right for 3 classes in 2 dimensions, wrong for 4 classes in 3: is a size fixed somewhere?")
    passed("fit_class_gaussians", "class frequencies, means, covariances")


def _fit_triple(out: object, k: int, d: int, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``out`` must be ``(priors: (k,), means: (k, d), covs: (k, d, d))``; returns them in float64, or names what is wrong."""
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise CheckFailed(f"fit_class_gaussians should return three tensors, (priors, means, covs); it returned {describe(out)}.")
    shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else None for v in out]
    if sorted(map(str, shapes)) == sorted(map(str, [(k,), (k, d), (k, d, d)])) and shapes != [(k,), (k, d), (k, d, d)]:
        raise CheckFailed(f"The shapes are right but in another order, {shapes}: return (priors, means, covs).")
    if isinstance(out[1], torch.Tensor) and tuple(out[1].shape) == (d, k) and d != k:
        raise CheckFailed(f"means has shape (D, k) = {(d, k)}: one row per class is wanted, (k, D) = {(k, d)}.")
    if isinstance(out[2], torch.Tensor) and out[2].dim() == 2:
        raise CheckFailed(f"covs has shape {tuple(out[2].shape)}: one (D, D) covariance per class is wanted, stacked as (k, D, D) = {(k, d, d)}.")
    names = ("priors", "means", "covs")
    return tuple(expect_tensor(v, s, f"{name} of {what}").detach().double() for v, s, name in zip(out, [(k,), (k, d), (k, d, d)], names))
