"""Notebook 01, supervised vs unsupervised: pca."""

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
