"""The course's reference losses, written once: training, metrics and the exercise checks all use these.

Pure tensor functions (no networks are built here). Shapes in each docstring; ``B`` is the batch.
The notebooks ask students to write several of these themselves: the grader refuses an exercise
answered by calling one of them (see ``labsupport.grading``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

# --- VAEs ------------------------------------------------------------------------------------------


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``: ``mu, logvar: (B, D)`` -> ``z: (B, D)``.

    The noise is an input of a deterministic function, so gradients reach ``mu`` and ``logvar``.
    """
    return mu + (0.5 * logvar).exp() * torch.randn_like(mu)


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in closed form, summed over the latent dims: ``(B, D)`` -> ``(B,)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def bernoulli_nll(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """-log p(x | logits) of independent Bernoulli pixels, summed over ``(C, H, W)``: ``(..., C, H, W)`` -> ``(...)``.

    ``x`` in {0, 1} (or grey levels, for the cross-entropy); ``x`` broadcasts against ``logits``.
    """
    return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)


def vae_objective(vae: torch.nn.Module, x: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Negative (beta-)ELBO in nats per image, batch mean, and its two terms for the history: ``(loss, {"rec", "kl"})``.

    The training objective of :func:`labsupport.train.train_vae` (notebook 03's exercise ``vae_loss`` returns the scalar only).

    ``vae`` has ``encode(x) -> (mu, logvar)`` and ``decode(z) -> logits``; ``x: (B, 1, 28, 28)`` in {0, 1}.
    ``rec`` = Bernoulli NLL summed over pixels, ``kl`` = :func:`kl_normal`.
    """
    mu, logvar = vae.encode(x)
    rec = bernoulli_nll(x, vae.decode(reparameterize(mu, logvar)))
    kl = kl_normal(mu, logvar)
    return (rec + beta * kl).mean(), {"rec": rec.mean().item(), "kl": kl.mean().item()}


# --- GANs -------------------------------------------------------------------------------------------


def gan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss -E[log D(x)] - E[log(1 - D(G(z)))] from logits ``(B,)`` (stable BCE)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def gan_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss -E[log D(G(z))] from logits ``(B,)``: softplus(-l) = -log sigmoid(l)."""
    return F.softplus(-fake_logits).mean()


def gan_g_loss_saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """The min-max game's own generator loss E[log(1 - D(G(z)))] from logits ``(B,)``: -softplus(l)."""
    return -F.softplus(fake_logits).mean()


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss E[f(G(z))] - E[f(x)] from scores ``(B,)`` (the critic minimises it)."""
    return fake_scores.mean() - real_scores.mean()


def wgan_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss -E[f(G(z))] from the critic's scores ``(B,)``."""
    return -fake_scores.mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty: mean of (||grad critic(x_hat)||_2 - 1)^2 at x_hat = eps*real + (1-eps)*fake, one eps ~ U[0,1] per example.

    ``real, fake: (B, ...)`` -> scalar; ``create_graph=True`` so the penalty itself can be minimised.
    """
    eps = torch.rand(len(real), *[1] * (real.dim() - 1), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores, x_hat, grad_outputs=torch.ones_like(scores), create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def least_squares(scores: torch.Tensor, target: float) -> torch.Tensor:
    """LSGAN loss E[(D(x) - target)^2] from scores ``(B,)`` (CycleGAN's adversarial loss)."""
    return (scores - target).pow(2).mean()


def cycle_l1(G_AB: Callable, G_BA: Callable, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """CycleGAN's cycle-consistency loss E|G_BA(G_AB(a)) - a| + E|G_AB(G_BA(b)) - b| (per-pixel means)."""
    return (G_BA(G_AB(a)) - a).abs().mean() + (G_AB(G_BA(b)) - b).abs().mean()


# --- semi-supervised VAEs (Kingma et al., 2014, "M2") -------------------------------------------------


def gaussian_nll(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """-log N(x; mu, diag exp(logvar)) summed over the last dim: ``(..., D)`` each -> ``(...)``, in nats."""
    return 0.5 * ((x - mu).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


def marginal_over_labels(labelled: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """M2's unlabelled negative ELBO from its labelled ones: ``U(x) = sum_y q(y|x) L(x, y) - H(q(y|x))``.

    ``labelled: (B, K)`` holds ``L(x, y)`` (the negative ELBO with the label y filled in) for every class,
    ``logits: (B, K)`` those of the classifier q(y|x); returns ``(B,)``. The label becomes one more latent
    variable whose posterior is q(y|x), hence the expectation, and the entropy its KL to a uniform prior
    adds (the ``log K`` of that KL is in ``L`` already, as ``-log p(y)``).
    """
    log_q = F.log_softmax(logits, dim=-1)
    q = log_q.exp()
    return (q * labelled).sum(-1) + (q * log_q).sum(-1)
