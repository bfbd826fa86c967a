"""Notebook 06, what a VAE is for: impute (filling in missing pixels by reconstruct-then-clamp).

The exercise: start from the known pixels with the unknown ones black, then ``rounds`` times encode the guess, decode
the code's mean ``mu`` into pixel probabilities and put the known pixels back. The stand-in VAE is linear with fixed
weights and wide logits, so that probabilities and logits, one round and several, a kept and an overwritten pixel all
give different images.
"""

from __future__ import annotations

from typing import Callable

import torch

from .core import CheckFailed, Unchanged, call, check, close, expect_tensor, named, passed


class _LinearVAE(torch.nn.Module):
    """A stand-in MLPVAE: ``encode(x (B, 1, 28, 28)) -> (mu, logvar) (B, D)``, ``decode(z (B, D)) -> logits (B, 1, 28, 28)``,
    ``forward(x) -> (logits, mu, logvar)`` with a sampled code, like the course's VAEs. Fixed weights from ``seed``."""

    def __init__(self, latent_dim: int = 4, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.latent_dim = latent_dim
        self.encoder = torch.nn.Linear(784, 2 * latent_dim)
        self.decoder = torch.nn.Linear(latent_dim, 784)
        with torch.no_grad():
            for lin, scale in ((self.encoder, 0.1), (self.decoder, 2.0)):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * scale)
                lin.bias.copy_(torch.randn(lin.bias.shape, generator=g))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, 1, 28, 28)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(mu + torch.randn_like(mu) * (0.5 * logvar).exp()), mu, logvar


@torch.no_grad()
def _impute(vae: _LinearVAE, x: torch.Tensor, known: torch.Tensor, rounds: int, *, start: str = "black", keep: str = "known",
            squash: bool = True, feed_back: bool = True) -> torch.Tensor:
    """The reference (defaults) and its known mistakes: ``start`` "black" or "truth" (the hidden pixels' true values), ``keep``
    "known", "unknown" (mask inverted) or "none" (the decoder everywhere), ``squash=False`` (logits), ``feed_back=False``
    (every round encodes the first guess: one round's result)."""
    first = x * known if start == "black" else x.clone()
    guess = first
    for _ in range(rounds):
        mean = vae.decode(vae.encode(guess if feed_back else first)[0])
        mean = torch.sigmoid(mean) if squash else mean
        guess = {"known": known * x + (1 - known) * mean, "unknown": (1 - known) * x + known * mean, "none": mean}[keep]
    return guess


def _case(seed: int = 0, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 28, 28) images in [0, 1] and a mask of the same shape, 1 = known, a different random hole per image."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    known = (torch.rand(n, 1, 28, 28, generator=g) < 0.6).float()
    return x, known


@check
def check_impute(fn: Callable) -> None:
    """``impute(vae, x: (B, 1, 28, 28), known: (B or 1, 1, 28, 28), rounds) -> (B, 1, 28, 28)``: reconstruct-then-clamp."""
    vae, (x, known), rounds = _LinearVAE(), _case(), 3
    kept = Unchanged(x, known)
    out = call(fn, vae, x, known, rounds)
    kept.verify("impute changed x or known in place (e.g. x[known == 0] = ... or x.mul_(known)): the caller still needs its images "
                "and its mask. Start from a new tensor.")
    out = expect_tensor(out, tuple(x.shape), f"impute(vae, x, known, rounds={rounds}) for x of shape {tuple(x.shape)}")
    if out.requires_grad:
        raise CheckFailed("The result still carries a gradient graph through every round: imputation trains nothing, so run the "
                          "rounds without recording gradients (it also saves the memory of all the rounds).")
    want = _impute(vae, x, known, rounds)
    if not close(out, want, rtol=1e-4, atol=1e-5):
        hole = known == 0
        message = named(out, [
            ("The known pixels were overwritten by the decoder's output: after every round, put the observed pixels back "
             "(known = 1 keeps x, known = 0 takes the decoder's mean).", lambda: _impute(vae, x, known, rounds, keep="none")),
            ("The mask is inverted: known = 1 marks the pixels we *observe* (keep x there); the decoder fills the pixels where known = 0.",
             lambda: _impute(vae, x, known, rounds, keep="unknown")),
            ("The filled pixels are outside [0, 1]: the decoder returns Bernoulli *logits*; turn them into pixel probabilities "
             "(the decoder's mean image) before filling the hole.", lambda: _impute(vae, x, known, rounds, squash=False)),
            (f"This is the result of one round, but rounds = {rounds}: each round must encode the *previous round's* guess, "
             "so that the filled pixels improve round after round.", lambda: _impute(vae, x, known, 1)),
            (f"Off by one round: rounds = {rounds} means {rounds} encode-decode-clamp passes.",
             lambda: _impute(vae, x, known, rounds - 1)),
            (f"Off by one round: rounds = {rounds} means {rounds} encode-decode-clamp passes.",
             lambda: _impute(vae, x, known, rounds + 1)),
            ("The first guess uses the hidden pixels' true values (x itself): the imputation must never see them. Start from x "
             "with the unknown pixels set to 0 (black).", lambda: _impute(vae, x, known, rounds, start="truth")),
        ])
        if message:
            raise CheckFailed(message)
        if not close(out[~hole], x[~hole], rtol=0, atol=1e-6):
            raise CheckFailed("Some known pixels changed: the result must equal x wherever known = 1.")
        again = call(fn, vae, x, known, rounds)
        if not torch.equal(torch.as_tensor(again), out):
            raise CheckFailed("Two calls on the same inputs gave different images: decode the code's mean mu, not a sampled z "
                              "(vae(x) and a reparameterized sample add noise).")
        worst = (out - want).abs().amax(dim=(1, 2, 3)).argmax().item()
        raise CheckFailed(f"Wrong filled pixels (image {worst}, largest error {(out - want).abs().max().item():.4f}). Each round: "
                          "mu of q(z | current guess), pixel probabilities of decode(mu), known pixels put back.")
    # the same mask for every image, broadcast as the notebook passes it, and rounds = 1
    x2, known2 = _case(seed=1, n=4)
    known2 = known2[:1]
    out2 = expect_tensor(call(fn, vae, x2, known2, 1), tuple(x2.shape), "impute with one mask (1, 1, 28, 28) for 4 images")
    if not close(out2, _impute(vae, x2, known2, 1), rtol=1e-4, atol=1e-5):
        raise CheckFailed("Right with one mask per image, wrong with one mask of shape (1, 1, 28, 28) shared by all the images "
                          "(as the notebook passes it), rounds = 1: let broadcasting apply the mask to every image.")
    passed("impute", f"{rounds} rounds on {len(x)} images with random holes, and one shared mask")


__all__ = ["check_impute"]
