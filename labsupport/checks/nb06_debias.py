"""Notebook 06, debiasing with a VAE's latent density: resampling_weights (the DB-VAE's sampling probabilities).

The exercise: per latent dimension, ``bins`` equal-width bins over the codes' own range, the share of codes in each
bin plus ``smoothing`` as the density q̂_d, an example's weight max_d q̂_d(its bin)^(-alpha), normalised to sum 1.
The cases keep every code at least a fifth of a bin away from an inner bin edge, so every way of binning (floor of a
ratio, ``bucketize``, ``histc``, ``numpy.histogram``) puts each code in the same bin and only the mistakes differ.
"""

from __future__ import annotations

from typing import Callable

import torch

from .core import CheckFailed, Unchanged, call, check, close, expect_tensor, named, passed


def _bins(mu: torch.Tensor, bins: int) -> torch.Tensor:
    """mu: (N, D) -> (N, D) bin index per dimension, equal-width bins over each dimension's own range."""
    lo, hi = mu.min(0).values, mu.max(0).values
    return ((mu - lo) / ((hi - lo).clamp_min(1e-12) / bins)).floor().long().clamp(0, bins - 1)


def _shares(idx: torch.Tensor, bins: int) -> torch.Tensor:
    """(N, D) bin indices -> (N, D): the share of the N codes in each code's bin, per dimension."""
    share = torch.nn.functional.one_hot(idx, bins).double().mean(0)  # (D, bins)
    return share.gather(1, idx.T).T


def _weights(mu: torch.Tensor, bins: int, smoothing: float, alpha: float, *, combine: str = "max", sign: float = -1.0,
             per_dim_norm: bool = False, additive: bool = False, count: bool = False, normalise: bool = True) -> torch.Tensor:
    """The reference (all defaults) and its known mistakes, selected by the keywords. mu: (N, D) -> (N,) float64."""
    mu = mu.double()
    q = _shares(_bins(mu, bins), bins) * (len(mu) if count else 1) + smoothing
    w = 1.0 / (q + alpha) if additive else q.pow(sign * alpha)
    if per_dim_norm:
        w = w / w.sum(0, keepdim=True)
    w = {"max": lambda: w.max(1).values, "prod": lambda: w.prod(1), "sum": lambda: w.sum(1), "min": lambda: w.min(1).values}[combine]()
    return w / w.sum() if normalise else w


def _case(seed: int = 0, n: int = 240, bins: int = 6) -> torch.Tensor:
    """(n, 3) codes with a common bulk, a rare cluster of 4 (rows 2-5) and one lone code (row 6); dimensions on different
    scales and offsets; each dimension's min and max are hit exactly (rows 0 and 1), every other code sits 0.2-0.8 of
    the way across its bin."""
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(torch.tensor([1.0, 6, 10, 6, 2, 1])[:bins].repeat(3, 1), n, replacement=True, generator=g).T  # (n, 3)
    k[2:6] = torch.tensor([bins - 1, 0, bins - 1])  # the rare cluster: the emptiest bins
    k[6] = torch.tensor([bins - 2, bins - 1, 0])
    u = 0.2 + 0.6 * torch.rand(n, 3, generator=g, dtype=torch.float64)
    unit = (k + u) / bins
    unit[0], unit[1] = 0.0, 1.0
    scale, offset = torch.tensor([1.0, 3.0, 0.4], dtype=torch.float64), torch.tensor([-0.5, -1.0, -1.0], dtype=torch.float64)
    return (unit * scale + offset).float()


def _scaled(w: torch.Tensor) -> torch.Tensor:
    return w.double() * len(w)  # mean 1, so the catalogue's tolerance means the same for every N


@check
def check_resampling_weights(fn: Callable) -> None:
    """``resampling_weights(mu: (N, D), bins, smoothing, alpha) -> (N,)``: max_d q̂_d(bin)^(-alpha), normalised to sum 1."""
    mu, bins, s, alpha = _case(), 6, 0.01, 0.5
    keep = Unchanged(mu)
    out = call(fn, mu, bins, s, alpha)
    keep.verify("resampling_weights changed mu in place (e.g. a sort_ or mu -= mu.min(0)...): work on new tensors, the caller "
                "still needs its codes.")
    out = expect_tensor(out, (len(mu),), f"resampling_weights(mu, bins={bins}, smoothing={s}, alpha={alpha}) for mu of shape {tuple(mu.shape)}")
    if (out < 0).any():
        raise CheckFailed("Some weights are negative: a sampling probability must be >= 0 (inverse of a positive density).")
    want = _weights(mu, bins, s, alpha)
    got = _scaled(out)
    if not close(got, _scaled(want), rtol=1e-3, atol=1e-4):
        normed = _scaled(out / out.sum()) if out.sum() > 0 else got
        if close(normed, _scaled(want), rtol=1e-3, atol=1e-4):
            raise CheckFailed(f"Right shape of weights, but they sum to {out.sum().item():.4g}, not 1: torch.multinomial would take "
                              "them, but they are meant as probabilities. Divide by their sum at the end.")
        message = named(normed, [
            ("Your weights grow with the density: common codes get the most weight, which makes the bias worse. The weight is the "
             "*inverse* density, q̂^(-alpha).", lambda: _scaled(_weights(mu, bins, s, alpha, sign=1.0, combine="min"))),
            ("Your weights grow with the density (q̂^(+alpha), the largest over dimensions): the weight is the *inverse* density, q̂^(-alpha).",
             lambda: _scaled(_weights(mu, bins, s, alpha, sign=1.0))),
            (f"alpha is ignored: these are the weights for alpha = 1, but the call asked for alpha = {alpha}. Raise the inverse density "
             "to the power alpha (alpha = 0: no debiasing, larger alpha: rarer codes drawn more often).",
             lambda: _scaled(_weights(mu, bins, s, 1.0))),
            ("alpha is added to the density, 1 / (q̂ + alpha) (the paper's form), but here it is an exponent: q̂^(-alpha), with the "
             "smoothing added to q̂.", lambda: _scaled(_weights(mu, bins, s, alpha, additive=True))),
            ("No smoothing: a code alone in its bin gets a huge weight and a few examples take most of the draws. Add `smoothing` "
             "to every bin's *share* of the N codes (count / N, not the count) before inverting.", lambda: _scaled(_weights(mu, bins, 0.0, alpha))),
            ("You normalised each dimension's weights before taking the maximum (as MIT's lab does); here take the maximum of the "
             "raw q̂_d^(-alpha) over dimensions and normalise once, at the end.",
             lambda: _scaled(_weights(mu, bins, s, alpha, per_dim_norm=True))),
            ("You multiplied the dimensions' inverse densities (the paper's product); here an example's weight is the *largest* "
             "over dimensions: rare along any one dimension is enough.", lambda: _scaled(_weights(mu, bins, s, alpha, combine="prod"))),
            ("You summed the dimensions' inverse densities; here an example's weight is the *largest* over dimensions.",
             lambda: _scaled(_weights(mu, bins, s, alpha, combine="sum"))),
            ("You took the smallest inverse density over dimensions; the weight is the *largest*: an example rare along any one "
             "dimension is rare.", lambda: _scaled(_weights(mu, bins, s, alpha, combine="min"))),
        ])
        if message:
            raise CheckFailed(message)
        # bins that do not follow each dimension's own range over all N codes
        pooled = mu.double().flatten()
        lo, hi = pooled.min(), pooled.max()
        idx = ((mu.double() - lo) / ((hi - lo) / bins)).floor().long().clamp(0, bins - 1)
        one_range = _shares(idx, bins) + s
        one_range = one_range.pow(-alpha).max(1).values
        if close(normed, _scaled(one_range / one_range.sum()), rtol=1e-3, atol=1e-4):
            raise CheckFailed("Your bins span the range of *all* codes at once, but each latent dimension has its own spread: cut "
                              "each dimension's own [min, max] into `bins` equal bins.")
        _bins_follow_the_codes(fn, mu, bins, s, alpha, out)
        lone = int((normed - _scaled(want)).abs().argmax())
        raise CheckFailed(f"Wrong weights for mu of shape {tuple(mu.shape)} (bins={bins}, smoothing={s}, alpha={alpha}): example "
                          f"{lone} should get {want[lone].item():.5f}, you gave {out[lone].item():.5f}. Per dimension: equal-width bins "
                          "over that dimension's [min, max], q̂ = share of codes in the bin + smoothing, weight = max over dimensions of "
                          "q̂^(-alpha), divided by the sum.")
    _bins_follow_the_codes(fn, mu, bins, s, alpha, out)
    # a lone code far out, the default smoothing: it must not take the draws
    far = _case(seed=2, n=400)
    far[7] = torch.tensor([40.0, 40.0, 40.0])
    w_far = expect_tensor(call(fn, far, 10, 1e-3, 1.0), (len(far),), "resampling_weights with one code far from the others")
    ref_far = _weights(far, 10, 1e-3, 1.0)
    if not close(_scaled(w_far), _scaled(ref_far), rtol=1e-3, atol=1e-4):
        share = w_far[7].item() / max(w_far.sum().item(), 1e-12)
        raise CheckFailed(f"With one code far from the others (row 7) it gets {share:.1%} of the draws, the reference "
                          f"{ref_far[7].item():.1%}. Check the smoothing and what happens to the bins when one code stretches a "
                          "dimension's range (most codes then share one bin).")
    flat = expect_tensor(call(fn, mu, bins, s, 0.0), (len(mu),), "resampling_weights with alpha = 0")
    if not close(_scaled(flat), torch.ones(len(mu), dtype=torch.float64), rtol=1e-3, atol=1e-4):
        raise CheckFailed("With alpha = 0 every weight should be 1/N (no debiasing): q̂^0 = 1 for every code.")
    passed("resampling_weights", f"the rare cluster's share of the draws {out[2:6].sum().item():.1%} against {4 / len(mu):.1%} of the codes")


def _bins_follow_the_codes(fn: Callable, mu: torch.Tensor, bins: int, s: float, alpha: float, out: torch.Tensor) -> None:
    """The bins belong to the whole set of codes: the order of the rows, their scale and their offset change no weight."""
    perm = torch.randperm(len(mu), generator=torch.Generator().manual_seed(1))
    shuffled = expect_tensor(call(fn, mu[perm], bins, s, alpha), (len(mu),), "resampling_weights on the same codes in another order")
    if not close(_scaled(shuffled), _scaled(out[perm]), rtol=1e-3, atol=1e-4):
        raise CheckFailed("The same codes in another order got other weights: your histogram depends on which codes come together "
                          "(e.g. bins or counts per chunk or mini-batch of rows). Count each dimension over all N codes at once, so an "
                          "example's weight depends on its code, not on its neighbours in the batch.")
    moved = expect_tensor(call(fn, 2.5 * mu - 0.7, bins, s, alpha), (len(mu),), "resampling_weights on the codes scaled by 2.5 and shifted by -0.7")
    if not close(_scaled(moved), _scaled(out), rtol=1e-3, atol=1e-4):
        raise CheckFailed("The codes scaled by 2.5 and shifted by -0.7 got other weights: your bins have a fixed range (e.g. histc's "
                          "min/max or edges from -3 to 3) instead of each dimension's own [min, max], so codes outside it are lost "
                          "or lumped together.")

__all__ = ["check_resampling_weights"]
