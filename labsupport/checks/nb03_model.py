"""Notebook 03, the model the student builds: the ``VAE`` class and the importance-weighted bound ``iw_nll``.

``check_VAE`` judges a class in three stages of partial credit (``interface``: shapes, contract and ranges;
``gradients``: every weight learns from the negative ELBO, and eval mode does not mix the images of a batch;
then the whole check: it *trains*, CS236-style, for a fixed budget on fixed data, beside a reference VAE trained
the same way). ``check_iw_nll`` compares the student's estimate with the exact ``-log p(x)`` of a model whose
marginal likelihood is known by quadrature (one latent dimension), so every missing term shows as a known offset.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .. import losses
from .core import CheckFailed, call, carries_gradient, check, describe, expect_tensor, named, passed, stage
from .fakes import discs

TRAIN_STEPS, TRAIN_BATCH, TRAIN_LR = 200, 64, 2e-3
REFERENCE_PARAMS = 784 * 256 + 256 + 256 * 256 + 256 + 256 * 64 + 64 + 32 * 256 + 256 + 256 * 256 + 256 + 256 * 784 + 784  # 784-256-256-(32+32) and back


class _ReferenceVAE(torch.nn.Module):
    """The statement's VAE, written once here so the check can train it beside the student's (checks do not import models)."""

    def __init__(self, latent_dim: int = 32, hidden: int = 256):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                           torch.nn.ReLU(), torch.nn.Linear(hidden, 2 * latent_dim))
        self.decoder = torch.nn.Sequential(torch.nn.Linear(latent_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, 784), torch.nn.Unflatten(1, (1, 28, 28)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def _negative_elbo(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference objective through the model's own ``encode``/``decode``: batch mean of Bernoulli NLL + KL, in nats."""
    mu, logvar = model.encode(x)
    return (losses.bernoulli_nll(x, model.decode(losses.reparameterize(mu, logvar))) + losses.kl_normal(mu, logvar)).mean()


def _train(model: torch.nn.Module, x: torch.Tensor, x_test: torch.Tensor) -> tuple[float, float]:
    """Train for the check's fixed budget (seeded); returns the held-out negative ELBO before and after, in nats."""
    def score() -> float:
        model.eval()
        with torch.no_grad():
            torch.manual_seed(1)
            value = _negative_elbo(model, x_test).item()
        model.train()
        return value

    before = score()
    opt = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    for _ in range(TRAIN_STEPS):
        batch = x[torch.randint(len(x), (TRAIN_BATCH,), generator=g)]
        loss = _negative_elbo(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, score()


def _build(cls: Callable, latent_dim: int, hidden: int) -> torch.nn.Module:
    model = call(cls, latent_dim=latent_dim, hidden=hidden)
    if not isinstance(model, torch.nn.Module):
        raise CheckFailed(f"VAE(latent_dim={latent_dim}, hidden={hidden}) is a {describe(model)}, not a torch.nn.Module: "
                          "subclass torch.nn.Module and call super().__init__().")
    for name in ("encode", "decode"):
        if not callable(getattr(model, name, None)):
            raise CheckFailed(f"VAE has no method `{name}`: the notebook calls model.encode(x) and model.decode(z).")
    return model


def _interface(cls: Callable) -> torch.nn.Module:
    torch.manual_seed(0)
    model = _build(cls, 5, 64)
    if not list(model.parameters()):
        raise CheckFailed("VAE(latent_dim=5, hidden=64) has no parameters: build its layers in __init__ as attributes (self.encoder = ...).")
    x = discs(8, 0)
    out = call(model.encode, x)
    if isinstance(out, torch.Tensor):
        raise CheckFailed(f"encode(x) returned one tensor {describe(out)}: it must return two, (mu, logvar), each (B, latent_dim). "
                          "Split the encoder's output in two.")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"encode(x) should return (mu, logvar), got {describe(out)}.")
    mu, logvar = out
    if isinstance(mu, torch.Tensor) and mu.dim() == 2 and mu.shape[0] == 8 and mu.shape[1] != 5:
        raise CheckFailed(f"VAE(latent_dim=5).encode gives mu of shape {tuple(mu.shape)}: the code size must be the latent_dim the "
                          "constructor got (here 5), not a fixed number.")
    expect_tensor(mu, (8, 5), "mu from VAE(latent_dim=5).encode(x) for x of shape (8, 1, 28, 28)")
    expect_tensor(logvar, (8, 5), "logvar from VAE(latent_dim=5).encode(x)")
    if bool((logvar >= 0).all()) and bool((logvar.detach() != logvar.detach()[0, 0]).any()):
        raise CheckFailed("logvar is never negative: a log-variance may be any real number (a variance below 1 has a negative log). "
                          "Do not pass it through a ReLU, softplus or exp: the encoder's raw output is the log-variance.")
    z = torch.randn(8, 5) * 3
    x_logits = call(model.decode, z)
    if isinstance(x_logits, torch.Tensor) and tuple(x_logits.shape) == (8, 784):
        raise CheckFailed("decode(z) has shape (8, 784): reshape the output to images, (B, 1, 28, 28).")
    expect_tensor(x_logits, (8, 1, 28, 28), "decode(z) for z of shape (8, 5)")
    if x_logits.min() >= 0 and x_logits.max() <= 1:
        raise CheckFailed(f"decode(z) lies in [{x_logits.min().item():.2f}, {x_logits.max().item():.2f}]: those look like probabilities. "
                          "The decoder must return *logits* (any real number): the loss applies the sigmoid itself, so drop the final sigmoid.")
    n_params = sum(p.numel() for p in _build(cls, 32, 256).parameters())
    if not REFERENCE_PARAMS / 4 <= n_params <= REFERENCE_PARAMS * 4:
        raise CheckFailed(f"VAE(latent_dim=32, hidden=256) has {n_params:,} parameters, far from the statement's network "
                          f"(about {REFERENCE_PARAMS:,}): check the layer sizes against the statement.")
    return model


def _gradients(model: torch.nn.Module) -> None:
    x = discs(16, 1)
    torch.manual_seed(0)
    loss = _negative_elbo(model, x)
    carries_gradient(loss, "The negative ELBO of your VAE does not track gradients (a .detach(), torch.no_grad() or .item() inside "
                           "encode or decode?): nothing could train.")
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    if dead:
        raise CheckFailed(f"These parameters get no gradient from the negative ELBO: {dead[:4]}. Every layer you create must be "
                          "used in encode or decode.")
    model.eval()
    with torch.no_grad():
        alone, together = model.encode(x[:4])[0], model.encode(x)[0][:4]
    model.train()
    if not torch.allclose(alone, together, atol=1e-4, rtol=1e-3):
        raise CheckFailed("In eval mode, encode(x[:4]) differs from encode(x)[:4]: the code of an image depends on the other images "
                          "in its batch. Batch norm or another batch statistic in eval mode? A VAE's encoder must treat each image on its own.")


@check
def check_VAE(cls: Callable) -> None:
    """``VAE(latent_dim=32, hidden=256)``: ``encode(x: (B, 1, 28, 28)) -> (mu, logvar)``, each ``(B, latent_dim)``, and
    ``decode(z) -> logits (B, 1, 28, 28)``; it must train about as well as the statement's network in the same budget."""
    model = _interface(cls)
    stage("interface")
    _gradients(model)
    stage("gradients")
    x, x_test = discs(512, 2), discs(256, 3)
    torch.manual_seed(0)
    ref_before, ref_after = _train(_ReferenceVAE(latent_dim=8, hidden=128), x, x_test)
    torch.manual_seed(0)
    before, after = _train(_build(cls, 8, 128), x, x_test)
    if not math.isfinite(after):
        raise CheckFailed("Training your VAE for a few steps gave a NaN or inf negative ELBO: look for an exp that overflows in encode or decode.")
    tolerance = max(6.0, 0.1 * ref_after)  # measured: a linear VAE lands 11 nats above the reference, correct variants within 3
    if after > ref_after + tolerance:
        fell = "did not fall" if after > 0.95 * before else f"fell from {before:.1f} to {after:.1f} nats"
        raise CheckFailed(f"Trained for {TRAIN_STEPS} Adam steps on fixed data, your VAE's held-out negative ELBO {fell}; the statement's "
                          f"network reaches {ref_after:.1f} nats (from {ref_before:.1f}) in the same steps, and yours must be within "
                          f"{tolerance:.1f}. Compare your layers, activations and output with the statement.")
    passed("VAE", f"trained {TRAIN_STEPS} steps: negative ELBO {before:.1f} -> {after:.1f} nats, the statement's network {ref_after:.1f}")


# --- iw_nll: the importance-weighted bound ---------------------------------------------------------------------------

_GRID = torch.linspace(-12, 12, 4001, dtype=torch.float64)  # quadrature over the one latent dimension


class _OneDimensionalVAE(torch.nn.Module):
    """A VAE with one latent dimension whose ``p(x)`` is known by quadrature. Its decoder's logits are linear in ``z``;
    its encoder returns a Gaussian a little off the true posterior (shifted by half a standard deviation, 1.5 times
    as wide), so the ELBO is visibly looser than the importance-weighted bound."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w = torch.nn.Parameter(0.6 * torch.randn(784, generator=g))
        self.b = torch.nn.Parameter(torch.randn(784, generator=g) - 1.0)
        self.latent_dim = 1

    def log_px_given_grid(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, 1, 28, 28)`` -> ``log p(x | z)`` at every grid point, ``(N, G)`` float64."""
        logits = _GRID[:, None] * self.w.detach().double() + self.b.detach().double()  # (G, 784)
        xs = x.flatten(1).double()  # (N, 784)
        return xs @ F.logsigmoid(logits).T + (1 - xs) @ F.logsigmoid(-logits).T

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_joint = self.log_px_given_grid(x) - 0.5 * _GRID**2
        post = torch.softmax(log_joint, 1)
        mean = (post * _GRID).sum(1)
        var = (post * (_GRID - mean[:, None]) ** 2).sum(1)
        return mean, var

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = self.posterior(x)
        mu, logvar = mean + 0.5 * var.sqrt(), (2.25 * var).log()
        return mu[:, None].float(), logvar[:, None].float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self.w + self.b).view(-1, 1, 28, 28)


def _log_integral(log_f: torch.Tensor) -> torch.Tensor:
    """``log of the integral over the grid`` of ``exp(log_f)``, rowwise: ``(N, G) -> (N,)``."""
    return torch.logsumexp(log_f, 1) + math.log(float(_GRID[1] - _GRID[0]))


@check
def check_iw_nll(fn: Callable) -> None:
    """``iw_nll(model, x, k) -> (B,)``: ``-log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)``, ``z_k ~ q(z|x)``, per image, in nats."""
    model = _OneDimensionalVAE()
    with torch.no_grad():
        x = (torch.rand(4, 784, generator=torch.Generator().manual_seed(6)) < torch.sigmoid(model.decode(torch.tensor([[-1.0], [0.3], [1.2], [2.0]])).flatten(1))).float().view(4, 1, 28, 28)
    k = 2000
    with torch.no_grad():
        out = call(fn, model, x, k)
    if isinstance(out, torch.Tensor) and out.dim() == 0:
        raise CheckFailed("iw_nll returned a single number: return one estimate per image, shape (B,) (no mean over the batch).")
    if isinstance(out, torch.Tensor) and out.is_floating_point() and bool(torch.isinf(out).any()):
        raise CheckFailed("iw_nll returned inf: the log-weights of an image are hundreds of nats below 0, so exp() underflows to 0 "
                          "and the log of their mean is -inf. Average the weights in log space with a stable log-sum-exp (shift by the largest).")
    got = expect_tensor(out, (4,), "iw_nll(model, x, k) for x of shape (4, 1, 28, 28)").detach().double()
    log_lik = model.log_px_given_grid(x)  # (4, G)
    log_prior = -0.5 * _GRID**2 - 0.5 * math.log(2 * math.pi)
    mu, logvar = (t.double()[:, 0] for t in model.encode(x))
    log_q = -0.5 * (_GRID - mu[:, None]) ** 2 / logvar.exp()[:, None] - 0.5 * logvar[:, None] - 0.5 * math.log(2 * math.pi)  # (4, G)
    exact = -_log_integral(log_lik + log_prior)  # -log p(x)
    q = log_q.exp() * float(_GRID[1] - _GRID[0])
    elbo = -((log_lik + log_prior - log_q) * q).sum(1)  # -E_q[log w]: the K = 1 bound
    if close_enough(got, exact):
        passed("iw_nll", f"within 0.05 nats of the exact -log p(x) on a model with one latent dimension (K = {k}; the ELBO is "
                         f"{(elbo - exact).mean().item():.2f} nats looser)")
        return
    log_k = math.log(k)
    raise CheckFailed(named(got, [
        ("Your estimate is -log p(x) (it should be close to it) but with the sign flipped: return the *negative* log of the mean weight.", -exact),
        ("That is the negative ELBO (about the same for every K): you averaged the log-weights. The bound takes the log of the *mean weight*: "
         "log-mean-exp over the K samples, not the mean of the logs.", elbo),
        (f"Off by log K = {log_k:.2f}: you took the log of the *sum* of the weights. The mean divides by K: subtract log K inside the log.", exact - log_k),
        (f"Off by 2 log K = {2 * log_k:.2f}: log K went in with the wrong sign. -log((1/K) sum w) = log K - log sum w.", exact - 2 * log_k),
        ("The prior term is missing: the weight is p(x|z) p(z) / q(z|x), with log p(z) the standard normal log-density of z.", -_log_integral(log_lik)),
        ("The proposal term is missing: the weight divides by q(z|x); subtract its log-density at the sampled z.",
         -_log_integral(log_lik + log_prior + log_q)),
        ("log q(z|x) went in with the wrong sign: the weight *divides* by q(z|x), so subtract log q.", -_log_integral(log_lik + log_prior + 2 * log_q)),
    ], rtol=0.0, atol=0.15) or f"Your estimates {[round(v, 2) for v in got.tolist()]} are not the importance-weighted bound: on this model "
                                f"-log p(x) is exactly {[round(v, 2) for v in exact.tolist()]} (and the ELBO {[round(v, 2) for v in elbo.tolist()]}).")


def close_enough(got: torch.Tensor, exact: torch.Tensor) -> bool:
    """The estimate is random: with K = 2000 samples from a proposal this close, it lies within 0.05 nats of the exact value."""
    return bool(((got - exact).abs() <= 0.05).all())
