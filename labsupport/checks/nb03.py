"""Notebook 03, variational autoencoders: reparameterize, kl_divergence, negative_elbo, vae_loss."""

from __future__ import annotations

from typing import Callable

import torch

from .. import losses
from .core import CheckFailed, Unchanged, call, call_explained, carries_gradient, check, close, describe, expect_tensor, named, passed, ratio_hint, stage
from .fakes import LossVAE, flat


def _vae_case(b: int, d: int, seed: int, requires_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``mu, logvar: (b, d)`` with spread-out values (``logvar`` in [-2.5, 1.5], never 0), leaves that track gradients."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(b, d, generator=g)
    logvar = torch.empty(b, d).uniform_(0.3, 1.5, generator=g) * torch.where(torch.rand(b, d, generator=g) < 0.5, -1.7, 1.0)
    return mu.requires_grad_(requires_grad), logvar.requires_grad_(requires_grad)


@check
def check_reparameterize(fn: Callable) -> None:
    """``reparameterize(mu, logvar) -> z``: ``mu, logvar: (B, D)``, z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)."""
    name = "reparameterize(mu, logvar)"
    mu, logvar = _vae_case(5, 3, seed=0)
    kept = Unchanged(mu, logvar)
    z = expect_tensor(call(fn, mu, logvar), (5, 3), name)
    kept.verify("reparameterize changed mu or logvar in place (e.g. logvar.mul_(0.5)). Build new tensors instead.")
    # gradients: dz/dmu = 1 and dz/dlogvar = 0.5 * sigma * eps = 0.5 * (z - mu)
    carries_gradient(z, "z does not track gradients back to mu and logvar: the sample blocks them. "
                          "Distribution.sample(), torch.no_grad() or .detach() cut the graph; write z = mu + sigma * eps "
                     "with eps = torch.randn_like(mu) (or use .rsample()).")
    z.sum().backward()
    if mu.grad is None or logvar.grad is None:
        missing = "mu" if mu.grad is None else "logvar"
        raise CheckFailed(f"No gradient reaches {missing}: z must be computed from both mu and logvar with differentiable operations.")
    if mu.grad.abs().max() < 1e-8 and logvar.grad.abs().max() < 1e-8:
        raise CheckFailed("The gradients of z with respect to mu and logvar are all zero: the sample blocks them. torch.normal(mu, std) "
                          "and Distribution.sample() give no gradient; write z = mu + std * eps with eps = torch.randn_like(mu).")
    if not close(mu.grad, torch.ones_like(mu), atol=1e-5):
        raise CheckFailed("dz/dmu should be 1 for every element (z = mu + sigma * eps moves one-for-one with mu); it is not.")
    zd, md, lvd = z.detach(), mu.detach(), logvar.detach()
    if not close(logvar.grad, 0.5 * (zd - md), rtol=1e-3, atol=1e-5):
        raise CheckFailed(named(logvar.grad, [
            ("The variance is used as the standard deviation: sigma = exp(logvar / 2) = sqrt(exp(logvar)), not exp(logvar).", zd - md),
            ("logvar itself is used as the standard deviation: sigma = exp(logvar / 2).", (zd - md) / lvd),
        ], rtol=1e-3, atol=1e-5) or "dz/dlogvar should be 0.5 * sigma * eps = 0.5 * (z - mu) when sigma = exp(0.5 * logvar); yours is not. "
                          "Check how you turn logvar into the standard deviation (a missing 1/2?).")
    # statistics: standardised noise must be N(0, 1), fresh for every element and every call
    b, d = 4000, 4
    mu = torch.randn(b, d, generator=torch.Generator().manual_seed(1))
    logvar = torch.tensor([-2.0, -0.8, 0.7, 1.6]).repeat(b, 1)
    with torch.no_grad():
        z1 = expect_tensor(call(fn, mu, logvar), (b, d), name).double()
        z2 = expect_tensor(call(fn, mu, logvar), (b, d), name).double()
    noise = z1 - mu.double()
    if noise.abs().max() < 1e-7:
        raise CheckFailed("z equals mu: no noise was added. z = mu + sigma * eps with eps drawn from N(0, I).")
    if (noise.std(0) < 1e-4).any():
        raise CheckFailed("Every row got the same noise: the noise is shared across the batch (e.g. torch.randn(D)). "
                          "Draw eps with the full shape (B, D): torch.randn_like(mu).")
    if torch.corrcoef(noise.T)[0, 1:].min() > 0.99:  # each row's noise is one number times a per-dimension scale
        raise CheckFailed("All latent dimensions of an example got the same noise: the noise is shared across dimensions "
                          "(e.g. torch.randn(B, 1)). Draw eps with the full shape (B, D): torch.randn_like(mu).")
    if torch.equal(z1, z2):
        raise CheckFailed("Two calls gave exactly the same z: draw new noise every call (no fixed seed or stored eps inside).")
    sd = noise.std(0)
    if (noise.mean(0) / sd).abs().max() > 0.1:  # about 0.016 for N(0, 1) noise
        raise CheckFailed("The noise does not have mean 0: eps must come from a standard normal N(0, I) (torch.randn_like), "
                          "not a uniform draw (torch.rand).")
    if not close(sd, (0.5 * logvar[0]).exp(), rtol=0.08, atol=0):  # the spread, within 8% in every dimension
        shown = (f"The spread of z - mu per dimension is {[round(v, 2) for v in sd.tolist()]} but should be "
                 f"exp(logvar / 2) = {[round(v, 2) for v in (0.5 * logvar[0]).exp().tolist()]}")
        found = named(sd, [("the variance exp(logvar) is used as the standard deviation; sigma = exp(0.5 * logvar)", logvar[0].exp()),
                           ("logvar itself is used as the standard deviation; sigma = exp(0.5 * logvar)", logvar[0].abs()),
                           ("the square root is taken twice; sigma = exp(0.5 * logvar)", (0.25 * logvar[0]).exp())], rtol=0.08, atol=0)
        raise CheckFailed(f"{shown}: {found}." if found else f"{shown}.")
    if (noise - noise.mean(0)).abs().max() / sd.max() < 2.5:
        raise CheckFailed("The noise never goes far from its mean: is it Gaussian? Use eps = torch.randn_like(mu).")
    passed("reparameterize", "z = mu + exp(logvar / 2) * eps, gradients reach mu and logvar")


@check
def check_kl_divergence(fn: Callable) -> None:
    """``kl_divergence(mu, logvar) -> (B,)``: KL(N(mu, diag exp(logvar)) || N(0, I)) summed over the D latent dims."""
    b, d = 6, 5
    mu, logvar = _vae_case(b, d, seed=2)
    with torch.no_grad():
        mu[0], logvar[0] = 0.0, 0.0   # q equals the prior: KL = 0
        logvar[1] = 0.0               # unit variance: KL = |mu|^2 / 2
    kl = expect_tensor(call(fn, mu, logvar), (b,), "kl_divergence(mu, logvar)")
    stage("shape")
    m, lv = mu.detach().double(), logvar.detach().double()
    want = losses.kl_normal(m, lv)
    got = kl.detach().double()
    if not close(got, want, rtol=1e-4, atol=1e-4):
        again = call(fn, mu, logvar).detach().double()
        found = named(got, [
            ("the sign is flipped: KL = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar), which is never negative", -want),
            ("the 1/2 in front is missing", 2 * want),
            ("you took the mean over the latent dimensions; sum over them instead", want / d),
            ("logvar is treated as log(sigma) instead of log(sigma^2): the variance is exp(logvar)",
             0.5 * (m.pow(2) + (2 * lv).exp() - 1 - 2 * lv).sum(1)),
            ("the standard deviation exp(logvar / 2) is used where the variance exp(logvar) belongs",
             0.5 * (m.pow(2) + (0.5 * lv).exp() - 1 - lv).sum(1)),
            ("the -1 is missing (when q equals the prior the KL must be 0)", 0.5 * (m.pow(2) + lv.exp() - lv).sum(1)),
            ("the mu^2 term is missing", 0.5 * (lv.exp() - 1 - lv).sum(1)),
            ("the sign of the logvar term is wrong: it is - logvar", 0.5 * (m.pow(2) + lv.exp() - 1 + lv).sum(1)),
        ], rtol=1e-4, atol=1e-4)
        if found:
            raise CheckFailed(f"kl_divergence is off: {found}.")
        if not close(got, again, rtol=1e-6, atol=1e-6):
            raise CheckFailed("kl_divergence gives a different answer each call: it looks like a Monte Carlo estimate. "
                              "Use the closed form 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar).")
        if abs(got[0]) > 1e-4:
            raise CheckFailed(f"For mu = 0 and logvar = 0 (q equals the prior) the KL must be 0, got {got[0].item():.4g}.")
        raise CheckFailed(f"kl_divergence gives {[round(v, 3) for v in got.tolist()]}, expected "
                          f"{[round(v, 3) for v in want.tolist()]} (0.5 * sum over dims of mu^2 + exp(logvar) - 1 - logvar).{ratio_hint(got, want)}")
    stage("values")
    carries_gradient(kl, "The KL does not track gradients (.item(), numpy or .detach() inside?): training needs them.")
    kl.sum().backward()
    if mu.grad is None or logvar.grad is None or not close(mu.grad, m.float(), atol=1e-4) or not close(logvar.grad, 0.5 * (lv.exp() - 1).float(), atol=1e-4):
        raise CheckFailed("The value is right but its gradients with respect to mu and logvar are not: is part of it detached?")
    passed("kl_divergence", "closed form, summed over latent dimensions")


@check
def check_negative_elbo(fn: Callable) -> None:
    """``negative_elbo(x, x_logits, mu, logvar) -> scalar``: batch mean of (Bernoulli NLL summed over pixels + KL)."""
    import torch.nn.functional as F

    b, d = 8, 5
    g = torch.Generator().manual_seed(3)
    x = torch.bernoulli(torch.rand(b, 1, 28, 28, generator=g), generator=g)
    x_logits = (torch.randn(b, 1, 28, 28, generator=g) * 2.5).clamp(-6, 6).requires_grad_()
    mu, logvar = _vae_case(b, d, seed=4)
    out = call_explained(fn, lambda message, err: f"{message}\n  x_logits are logits, not probabilities: use "
                         "F.binary_cross_entropy_with_logits (or apply torch.sigmoid once before F.binary_cross_entropy)."
                         if "between 0 and 1" in message else None, x, x_logits, mu, logvar)
    loss = expect_tensor(out, (), "negative_elbo(x, x_logits, mu, logvar)")
    stage("shape")
    xl, m, lv = x_logits.detach().double(), mu.detach().double(), logvar.detach().double()
    xd = x.double()
    rec = losses.bernoulli_nll(xd, xl)
    kl = losses.kl_normal(m, lv)
    want = (rec + kl).mean()
    got = loss.detach().double()
    if not close(got, want, rtol=1e-4, atol=1e-3):
        twice = F.binary_cross_entropy_with_logits(torch.sigmoid(xl), xd, reduction="none").flatten(1).sum(1)
        found = named(got, [
            ("the sign is flipped: return the NEGATIVE ELBO (reconstruction NLL + KL), which training minimises", -want),
            ("the KL has the wrong sign: the negative ELBO ADDS the KL to the reconstruction term", (rec - kl).mean()),
            ("the reconstruction term is a per-pixel mean; sum the Bernoulli NLL over the 784 pixels "
             "(reduction='none' then .sum over pixels, or reduction='sum' divided by the batch size)", (rec / 784 + kl).mean()),
            ("both terms are means over pixels / latent dimensions; sum over them, average only over the batch", (rec / 784 + kl / d).mean()),
            ("the KL is a mean over latent dimensions; sum it over them", (rec + kl / d).mean()),
            ("the sigmoid is applied twice: binary_cross_entropy_with_logits already applies it to the logits", (twice + kl).mean()),
            ("the KL term is missing", rec.mean()),
            ("the reconstruction term is missing", kl.mean()),
            ("the KL is twice too big (its 1/2 is missing)", (rec + 2 * kl).mean()),
            ("you summed over the batch; take the mean over the batch", (rec + kl).sum()),
            ("the reconstruction term is summed over the batch too; average both terms over the batch", rec.sum() + kl.mean()),
            ("this is a squared error; the decoder is a Bernoulli, so the reconstruction term is the binary cross-entropy "
             "(F.binary_cross_entropy_with_logits)", ((torch.sigmoid(xl) - xd).pow(2).flatten(1).sum(1) + kl).mean()),
        ], rtol=1e-4, atol=1e-3)
        if found:
            raise CheckFailed(f"negative_elbo is off: {found}.")
        raise CheckFailed(f"negative_elbo gives {got.item():.4f}, expected {want.item():.4f} "
                          f"(reconstruction {rec.mean().item():.2f} + KL {kl.mean().item():.2f}).{ratio_hint(got, want)}")
    stage("value")
    carries_gradient(loss, "The loss does not track gradients (.item(), numpy or .detach() inside?): training needs them.")
    loss.backward()
    for t, n in [(x_logits, "x_logits"), (mu, "mu"), (logvar, "logvar")]:
        if t.grad is None or t.grad.abs().max() == 0:
            raise CheckFailed(f"No gradient reaches {n}: is part of the loss detached?")
    passed("negative_elbo", f"{got.item():.2f} nats on a test batch")


def _vae_loss_call(fn: Callable, model: LossVAE, x: torch.Tensor, beta: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the student's loss once; return the loss and the one code it decoded, after the checks on the call itself."""
    model.codes.clear()
    shown = "vae_loss(model, x)" if beta is None else f"vae_loss(model, x, beta={beta:g})"
    out = call(fn, model, x) if beta is None else call(fn, model, x, beta=beta)
    if isinstance(out, tuple):
        raise CheckFailed(f"{shown} returned a tuple {describe(out)}: return the loss alone, one scalar tensor.")
    loss = expect_tensor(out, (), shown)
    if model.forward_calls:
        raise CheckFailed("You called model(x): its forward pass samples z with the course's own reparameterization, not yours. "
                          "Write the pass yourself: model.encode(x), your reparameterize, model.decode(z).")
    if not model.codes:
        raise CheckFailed("model.decode was never called: the reconstruction term needs the decoder's logits for a code z.")
    if len(model.codes) > 1:
        raise CheckFailed(f"model.decode ran {len(model.codes)} times for one batch: decode one sampled code per image, once.")
    z = model.codes[0]
    if tuple(z.shape) != (x.shape[0], model.latent_dim):
        raise CheckFailed(f"The code given to model.decode has shape {tuple(z.shape)}, expected (B, D) = {(x.shape[0], model.latent_dim)}.")
    return loss, z


@check
def check_vae_loss(fn: Callable) -> None:
    """``vae_loss(model, x, beta=1.0) -> scalar``: encode, sample z with the reparameterization, decode, and return the
    batch mean of (Bernoulli NLL summed over pixels + beta * KL), in nats per image: negative_elbo's convention."""
    torch.manual_seed(0)
    model = LossVAE()
    b = 512  # enough codes to measure the spread of z - mu per dimension within about 3%
    x = torch.bernoulli(torch.full((b, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(1))
    kept = Unchanged(x)
    loss, z = _vae_loss_call(fn, model, x, None)
    kept.verify("vae_loss changed x in place: leave the batch as it is.")
    with torch.no_grad():
        mu, logvar = (t.double() for t in model.encode(x))
    zd = z.double()
    noise = zd - mu
    if noise.abs().max() < 1e-6:
        raise CheckFailed("The decoder got mu itself: no noise, so this is an autoencoder's loss plus a KL. Decode a sample "
                          "z ~ q(z|x) drawn with your reparameterize(mu, logvar).")
    if torch.corrcoef(torch.stack([zd.flatten(), mu.flatten()]))[0, 1] < 0.2:
        raise CheckFailed("The decoded code z ignores mu: it looks drawn from the prior N(0, I), not from q(z|x) = N(mu, sigma^2). "
                          "Use your reparameterize(mu, logvar).")
    # each catalogued scale s: the spread of (z - mu) / s per dimension, 1 everywhere (within 0.12) if z = mu + s * eps
    ones, spread = torch.ones(model.latent_dim, dtype=torch.float64), (noise / (0.5 * logvar).exp()).std(0)
    if not close(ones, spread, rtol=0, atol=0.12):
        found = named(ones, [
            ("z - mu has spread 1 in every dimension: the noise is not scaled by the standard deviation (torch.randn without sigma). "
             "Sample with your reparameterize(mu, logvar), z = mu + exp(logvar / 2) * eps", noise.std(0)),
            ("the variance exp(logvar) is used as the standard deviation; sigma = exp(logvar / 2). Sample with your "
             "reparameterize(mu, logvar)", (noise / logvar.exp()).std(0)),
            ("logvar itself is used as the standard deviation; sigma = exp(logvar / 2). Sample with your reparameterize(mu, logvar)",
             (noise / logvar.abs()).std(0)),
        ], rtol=0, atol=0.12)
        raise CheckFailed(f"The decoded code has the wrong spread: {found}." if found else
                          f"The spread of (z - mu) / exp(logvar / 2) per latent dimension is {[round(v, 2) for v in spread.tolist()]}, "
                          "expected 1 everywhere: z should be a draw from N(mu, exp(logvar)). Sample with your reparameterize(mu, logvar).")
    with torch.no_grad():
        rec = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(z), x, reduction="none").flatten(1).sum(1).double()
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    got = loss.detach().double()

    def judge(got: torch.Tensor, beta: float, rec: torch.Tensor, kl: torch.Tensor) -> None:
        want = (rec + beta * kl).mean()
        if close(got, want, rtol=1e-4, atol=1e-3):
            return
        found = named(got, [
            ("the KL term is missing: add KL(q(z|x) || N(0, I)), e.g. with your kl_divergence or negative_elbo", rec.mean()),
            ("the KL has the wrong sign: the negative ELBO ADDS the KL to the reconstruction NLL", (rec - beta * kl).mean()),
            ("the reconstruction term is missing: add the Bernoulli NLL of x under the decoder's logits", kl.mean() * beta),
            ("the sign is flipped: return the NEGATIVE ELBO, which training minimises", -want),
            ("you summed over the batch; negative_elbo averages over it, so take the mean over the batch", (rec + beta * kl).sum()),
            ("the reconstruction term is summed over the batch and the KL averaged: average both over the batch, as negative_elbo does",
             rec.sum() + beta * kl.mean()),
            ("the KL is summed over the batch and the reconstruction averaged: average both over the batch, as negative_elbo does",
             rec.mean() + beta * kl.sum()),
            ("the reconstruction term is a per-pixel mean; sum it over the 784 pixels, as negative_elbo does", (rec / 784 + beta * kl).mean()),
            (f"beta is ignored: with beta = {beta:g} the KL term is multiplied by beta", (rec + kl).mean() if beta != 1.0 else None),
            ("beta multiplies the reconstruction term; it weights the KL", (beta * rec + kl).mean() if beta != 1.0 else None),
            ("beta multiplies the whole loss; it weights the KL term only", beta * (rec + kl).mean() if beta != 1.0 else None),
        ], rtol=1e-4, atol=1e-3)
        if found:
            raise CheckFailed(f"vae_loss is off: {found}.")
        raise CheckFailed(f"vae_loss(model, x{'' if beta == 1.0 else f', beta={beta:g}'}) gives {got.item():.3f}, expected {want.item():.3f} "
                          f"(reconstruction {rec.mean().item():.2f} + {beta:g} * KL {kl.mean().item():.2f}, batch means, for the z you "
                          f"decoded).{ratio_hint(got, want)}")

    judge(got, 1.0, rec, kl)
    carries_gradient(loss, "The loss does not track gradients (.item(), numpy, torch.no_grad or .detach() inside?): training needs them.")
    for p in model.parameters():
        p.grad = None
    loss.backward()
    enc, dec = model.encoder_params(), model.decoder_params()
    got_enc, got_dec = (flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]) for ps in (enc, dec))

    def reference(detach_z: bool = False, detach_kl: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        m, lv = model.encode(x)
        eps = ((z - m) / (0.5 * lv).exp()).detach()
        code = m + (0.5 * lv).exp() * eps
        code = code.detach() if detach_z else code
        km, klv = (m.detach(), lv.detach()) if detach_kl else (m, lv)
        r = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(code), x, reduction="none").flatten(1).sum(1)
        total = (r + 0.5 * (km.pow(2) + klv.exp() - 1 - klv).sum(1)).mean()
        grads = torch.autograd.grad(total, enc + dec, allow_unused=True)
        return flat([g if g is not None else torch.zeros_like(p) for g, p in zip(grads, enc + dec)]).split([got_enc.numel(), got_dec.numel()])

    want_enc, want_dec = reference()
    scale = float(want_enc.abs().max())
    if got_enc.abs().max() < 1e-8 * max(scale, 1.0):
        raise CheckFailed("No gradient reaches the encoder: mu and logvar were detached (or computed under torch.no_grad). "
                          "The loss must train the encoder through both the sampled z and the KL.")
    if not close(got_dec, want_dec, rtol=1e-3, atol=1e-4 * float(want_dec.abs().max())):
        raise CheckFailed("The loss value is right but the decoder's gradients are not: is the reconstruction term detached?")
    if not close(got_enc, want_enc, rtol=1e-3, atol=1e-4 * scale):
        if close(got_enc, reference(detach_z=True)[0], rtol=1e-3, atol=1e-4 * scale):
            raise CheckFailed("The reconstruction's gradient does not reach the encoder: the sample z is detached from mu and logvar "
                              "(drawn with .sample(), torch.normal, under torch.no_grad or .detach()). Use your reparameterize.")
        if close(got_enc, reference(detach_kl=True)[0], rtol=1e-3, atol=1e-4 * scale):
            raise CheckFailed("The KL's gradient does not reach the encoder: mu and logvar were detached before the KL term.")
        raise CheckFailed("The loss value is right but the encoder's gradients are not: is part of mu or logvar detached?")
    for beta in (3.0, 0.25):
        loss_b, z_b = _vae_loss_call(fn, model, x, beta)
        with torch.no_grad():
            rec_b = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(z_b), x, reduction="none").flatten(1).sum(1).double()
        judge(loss_b.detach().double(), beta, rec_b, kl)
    if torch.equal(z_b, z):
        raise CheckFailed("Two calls decoded exactly the same z: draw fresh noise every call (no fixed seed inside).")
    passed("vae_loss", f"{got.item():.1f} nats on a test batch; sample, both terms, beta and gradients as negative_elbo's convention")
