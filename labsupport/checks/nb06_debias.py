"""Notebook 06, debiasing with a VAE's latent density: db_vae_loss (the DB-VAE's training loss) and resampling_weights
(the DB-VAE's sampling probabilities).

db_vae_loss: the mean over the batch of the cross-entropy plus ``vae_weight`` x the negative ELBO per pixel, on a stand-in
model whose code noise a case can make negligible (exact values, gradients) or large (the noise's scale, averaged over
3000 copies of one image). resampling_weights: per latent dimension, ``bins`` equal-width bins over the codes' own range, the share of codes in each
bin plus ``smoothing`` as the density q̂_d, an example's weight max_d q̂_d(its bin)^(-alpha), normalised to sum 1.
The cases keep every code at least a fifth of a bin away from an inner bin edge, so every way of binning (floor of a
ratio, ``bucketize``, ``histc``, ``numpy.histogram``) puts each code in the same bin and only the mistakes differ.
"""

from __future__ import annotations

from typing import Callable

import torch

from .core import CheckFailed, Unchanged, call, carries_gradient, check, close, expect_tensor, named, passed


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



# --- db_vae_loss: the DB-VAE's training loss ---------------------------------------------------------------------------


class _JointNet(torch.nn.Module):
    """A stand-in DebiasingVAE: ``forward(x (B, 1, 28, 28)) -> (logits (B, 10), mu (B, D), logvar (B, D))`` and
    ``decode(z (B, D)) -> (B, 784)`` Bernoulli logits, linear layers with fixed weights; ``logvar`` is shifted by
    ``log_var_shift`` so that a check can make the code's noise negligible (-30) or large (log 4)."""

    def __init__(self, latent_dim: int = 3, seed: int = 0, log_var_shift: float = -30.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.latent_dim, self.num_classes, self.log_var_shift = latent_dim, 10, log_var_shift
        self.encoder = torch.nn.Linear(784, 10 + 2 * latent_dim)
        self.decoder = torch.nn.Linear(latent_dim, 784)
        with torch.no_grad():
            for lin, scale in ((self.encoder, 0.05), (self.decoder, 1.5)):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * scale)
                lin.bias.copy_(torch.randn(lin.bias.shape, generator=g))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.encoder(x.flatten(1))
        d = self.latent_dim
        return out[:, :10], out[:, 10 : 10 + d], 0.3 * out[:, 10 + d :] + self.log_var_shift

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def _loss_terms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor | None = None, *, std_power: float = 0.5,
                sigmoid_first: bool = False, softmax_first: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image (B,): cross-entropy, reconstruction -log p(x|z) in nats, KL(q(z|x) || N(0, I)); the reference by default.
    ``eps`` the noise of z = mu + std * eps (None: z = mu); the keywords select known mistakes."""
    logits, mu, logvar = model(x)
    z = mu if eps is None else mu + eps * (std_power * logvar).exp()
    pixel_logits = model.decode(z)
    if sigmoid_first:
        pixel_logits = torch.sigmoid(pixel_logits)
    rec = torch.nn.functional.binary_cross_entropy_with_logits(pixel_logits, x.flatten(1), reduction="none").sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    ce = torch.nn.functional.cross_entropy(logits.softmax(1) if softmax_first else logits, y, reduction="none")
    return ce, rec, kl


def _db_cases(seed: int = 0, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


@check
def check_db_vae_loss(fn: Callable) -> None:
    """``db_vae_loss(model, x: (B, 1, 28, 28), y: (B,), vae_weight) -> scalar``: mean over the batch of the cross-entropy plus
    ``vae_weight`` x the negative ELBO per pixel, (rec + KL) / 784, with z = mu + exp(logvar / 2) * eps."""
    model, (x, y), w = _JointNet(), _db_cases(), 0.5
    keep = Unchanged(x, y)
    out = call(fn, model, x, y, w)
    keep.verify("db_vae_loss changed x or y in place: the training loop reuses its batch, work on new tensors.")
    out = expect_tensor(out, (), f"db_vae_loss(model, x, y, vae_weight={w}) for a batch of {len(x)}")
    carries_gradient(out, "The loss carries no gradient (a .item(), a float() or a detach() on the way?): training calls "
                          "backward() on it, so build it from the model's outputs with torch operations.")
    # logvar = -30: the code's noise (std 3e-7) is far below the tolerance, so every way of drawing it gives the same value
    ce, rec, kl = (t.detach().double() for t in _loss_terms(model, x, y))
    pix = x[0].numel()
    want = (ce + w * (rec + kl) / pix).mean().item()
    got = out.item()
    if not close(got, want, rtol=1e-4, atol=1e-5):
        def with_terms(**kw):
            return lambda: (lambda c, r, k: (c + w * (r + k) / pix).mean().item())(*(t.detach().double() for t in _loss_terms(model, x, y, **kw)))
        message = named(got, [
            ("The KL term has the wrong sign: the negative ELBO is the reconstruction *plus* KL(q(z|x) || N(0, I)), which is >= 0.",
             (ce + w * (rec - kl) / pix).mean().item()),
            ("The KL term is twice too big: KL = 1/2 sum_d (mu^2 + exp(logvar) - 1 - logvar); the 1/2 is missing.",
             (ce + w * (rec + 2 * kl) / pix).mean().item()),
            ("The KL term is missing: the VAE's loss is its negative ELBO, reconstruction + KL.", (ce + w * rec / pix).mean().item()),
            ("The KL is averaged over the latent dimensions: it is a *sum* over them (each dimension is a factor of q(z|x)).",
             (ce + w * (rec + kl / model.latent_dim) / pix).mean().item()),
            ("The decoder's outputs went through a sigmoid before a loss that takes logits (binary_cross_entropy_with_logits "
             "applies the sigmoid itself): the pixel probabilities were squashed twice.", with_terms(sigmoid_first=True)),
            ("The class logits went through a softmax before the cross-entropy, which applies (log-)softmax itself: pass the raw logits.",
             with_terms(softmax_first=True)),
            ("The cross-entropy was taken on raw logits with nll_loss: nll_loss expects log-probabilities (log_softmax first), "
             "cross_entropy takes logits.", lambda: (-model(x)[0].detach().double().gather(1, y[:, None])[:, 0] + w * (rec + kl) / pix).mean().item()),
            (f"The VAE's term is summed over the batch while the cross-entropy is averaged: both are means over the {len(x)} images "
             "(a sum makes the VAE's weight grow with the batch size).", (ce.mean() + w * ((rec + kl) / pix).sum()).item()),
            (f"The loss is summed over the batch: it is the *mean* over the {len(x)} images, so that the learning rate does not "
             "depend on the batch size.", (ce + w * (rec + kl) / pix).sum().item()),
            ("The negative ELBO is per image (nats), not per pixel: divide reconstruction + KL by the number of pixels, 784, or the "
             "VAE's ~100s of nats drown the classifier's cross-entropy.", (ce + w * (rec + kl)).mean().item()),
            ("The reconstruction is per pixel (a mean over the pixels) but the KL is per image: divide the *whole* negative ELBO, "
             "reconstruction + KL, by the 784 pixels.", (ce + w * (rec / pix + kl)).mean().item()),
            (f"vae_weight is ignored: the call asked for vae_weight = {w}; it multiplies the VAE's term.",
             (ce + (rec + kl) / pix).mean().item()),
            ("vae_weight multiplies the cross-entropy; it weights the *VAE's* term: ce + vae_weight * negative ELBO per pixel.",
             (w * ce + (rec + kl) / pix).mean().item()),
            ("The cross-entropy is missing: the classifier head learns only from it.", (w * (rec + kl) / pix).mean().item()),
            ("Only the cross-entropy: the VAE's negative ELBO per pixel, weighted by vae_weight, is missing (without it the codes "
             "learn nothing about the images, and the density of the codes says nothing about rarity).", ce.mean().item()),
        ], rtol=1e-4, atol=1e-5)
        raise CheckFailed(message or f"Expected {want:.5f} for a batch of {len(x)} with vae_weight = {w}, got {got:.5f} "
                          f"(mean cross-entropy {ce.mean().item():.4f}, mean reconstruction {rec.mean().item():.1f} nats, mean KL "
                          f"{kl.mean().item():.2f} nats per image).")
    # its gradient: every weight gets the reference's (a detach on z or mu, or a .data, shows here)
    model.zero_grad()
    out.backward()
    got_grads = [p.grad.detach().double().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float64) for p in model.parameters()]
    ref = _JointNet()
    c, r, k = _loss_terms(ref, x, y)
    (c + w * (r + k) / pix).mean().backward()
    for (name, p), g_ in zip(ref.named_parameters(), got_grads):
        if not close(g_, p.grad.double(), rtol=1e-3, atol=1e-5 * p.grad.abs().max().item()):
            raise CheckFailed(f"Right value, wrong gradient for the model's {name}: something on the way is detached (z, mu or logvar "
                              "through .detach(), .data or a numpy round trip), so training would not learn the VAE's part through it.")
    _noise_is_right(fn, w)
    passed("db_vae_loss", f"{want:.4f} on a batch of {len(x)}, gradients and the code's noise as in the reference")


def _noise_is_right(fn: Callable, w: float) -> None:
    """With std = 2 and 3000 copies of one image, the batch mean of the loss averages over 3000 draws of the code: it must match
    z = mu + exp(logvar / 2) * eps, not z = mu, nor std = exp(logvar)."""
    n = 3000
    model = _JointNet(seed=1, log_var_shift=float(torch.log(torch.tensor(4.0))))
    x1, y1 = _db_cases(seed=1, n=1)
    x, y = x1.expand(n, 1, 28, 28).clone(), y1.expand(n).clone()
    torch.manual_seed(0)
    with torch.no_grad():
        got = float(call(fn, model, x, y, w))
    pix = x[0].numel()

    def mean_and_se(**kw) -> tuple[float, float]:
        with torch.no_grad():
            c, r, k = _loss_terms(model, x, y, **kw)
        per = (c + w * (r + k) / pix).double()
        return per.mean().item(), per.std().item() / n**0.5

    g = torch.Generator().manual_seed(5)
    eps = torch.randn(n, model.latent_dim, generator=g)
    want, se = mean_and_se(eps=eps)
    tol = 6 * se * 2**0.5  # two independent Monte Carlo means
    if abs(got - want) <= tol:
        return
    no_noise = mean_and_se()[0]
    var_as_std = mean_and_se(eps=eps, std_power=1.0)[0]
    if abs(got - no_noise) < 1e-4 * abs(no_noise):
        raise CheckFailed("The reconstruction is decoded from z = mu, with no noise: the ELBO's reconstruction term is an average "
                          "over z ~ q(z|x), so draw one z = mu + std * eps per image (the reparameterization of notebook 03).")
    if abs(got - var_as_std) <= tol:
        raise CheckFailed("The code's noise has the wrong scale: logvar is the log of the *variance*, so std = exp(logvar / 2), "
                          "not exp(logvar).")
    raise CheckFailed(f"Averaged over {n} draws of the code, your loss is {got:.4f}, the reference {want:.4f} ± {se:.4f}: draw one "
                      "z = mu + exp(logvar / 2) * eps per image, eps ~ N(0, I), and decode that z.")


__all__ = ["check_resampling_weights", "check_db_vae_loss"]
