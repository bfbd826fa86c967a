"""Notebook 03, variational autoencoders: the training step, vae_train_step (the loss pieces: ``nb03``, the model: ``nb03_model``)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .core import CheckFailed, Unchanged, call, check, close, describe, named, passed
from .fakes import LossVAE, StepSGD, expect_dict, flat, grads, ref_grad

KEYS = ("loss", "rec", "kl")


def _terms(model: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, for the noise ``eps`` the student drew: the Bernoulli NLL summed over pixels and the KL, ``(B,)`` each."""
    mu, logvar = model.encode(x)
    rec = F.binary_cross_entropy_with_logits(model.logits(mu + (0.5 * logvar).exp() * eps), x, reduction="none").flatten(1).sum(1)
    return rec, 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


class _Watched:
    """One call of the student's step on ``model`` and ``opt``: what it returned, the gradients at each optimizer step,
    and the noise behind the one code it decoded, read back at the weights before the step."""

    def __init__(self, fn: Callable, model: LossVAE, opt: StepSGD, x: torch.Tensor, beta: float | None) -> None:
        self.before = flat(model.parameters())
        self.at_step: list[torch.Tensor] = []
        opt.on_step = lambda: self.at_step.append(grads(model))
        model.codes.clear()
        model.forward_calls = 0
        kept = Unchanged(x)
        try:
            self.out = call(fn, model, opt, x) if beta is None else call(fn, model, opt, x, beta=beta)
        finally:
            opt.on_step = None
        kept.verify("vae_train_step changed x in place (e.g. x.bernoulli_() or x.clamp_()): the batch is the caller's, leave it as it is.")
        if model.forward_calls:
            raise CheckFailed("You called model(x): its forward pass samples z with the course's own reparameterization, not yours. "
                              "Compute the loss with your own functions (vae_loss, or encode, your reparameterize, decode).")
        if not self.at_step:
            if torch.equal(self.before, flat(model.parameters())):
                raise CheckFailed("The parameters did not change: call optimizer.step() after loss.backward().")
            raise CheckFailed("The parameters changed but not through the optimizer you were given: call optimizer.step().")
        if len(self.at_step) > 1:
            raise CheckFailed(f"optimizer.step() was called {len(self.at_step)} times: one training step is one optimizer step.")
        if not model.codes:
            raise CheckFailed("model.decode was never called: the reconstruction term needs the decoder's logits for a code z.")
        if len(model.codes) > 1:
            raise CheckFailed(f"model.decode ran {len(model.codes)} times in one step: draw one code per image and decode it once; "
                              "read the reconstruction and KL terms off that one pass (a second draw gives a reconstruction "
                              "term that is not the one you stepped on).")
        with torch.no_grad():  # the noise of the decoded code, at the weights before the step
            params = list(model.parameters())
            now = flat(params)
            torch.nn.utils.vector_to_parameters(self.before.float(), params)
            mu, logvar = model.encode(x)
            self.eps = (model.codes[0] - mu) / (0.5 * logvar).exp()
            rec, kl = _terms(model, x, self.eps)
            torch.nn.utils.vector_to_parameters(now.float(), params)
        self.rec, self.kl = rec.double(), kl.double()
        self.model, self.x = model, x

    def grad_of(self, combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The gradient, at the weights before the step, of ``combine(rec, kl)`` (per-image terms) for the student's noise."""
        def loss_of(m: torch.nn.Module) -> torch.Tensor:
            rec, kl = _terms(m, self.x, self.eps)
            return combine(rec, kl) + 0 * rec.sum()  # keeps the decoder in the graph when a mistake drops its term

        return ref_grad(self.model, self.before, loss_of)


def _judge_gradients(w: _Watched, beta: float, leftover: torch.Tensor | None) -> None:
    got = w.at_step[0]
    want = w.grad_of(lambda r, k: (r + beta * k).mean())
    cleared_after = all(p.grad is None or not p.grad.any() for p in w.model.parameters())
    if close(got, want, rtol=1e-3, atol=1e-6) or (leftover is not None and cleared_after and close(got, want + leftover, rtol=1e-3, atol=1e-5)):
        return
    if got.abs().max() == 0:
        raise CheckFailed("At optimizer.step() every gradient was zero: optimizer.zero_grad() ran after loss.backward() and "
                          "erased them. Order: zero_grad, loss, backward, step (or: loss, backward, step, zero_grad).")
    found = named(got, [
        ("At optimizer.step() the gradients were this step's plus those left from before: PyTorch adds gradients up, so two "
         "calls accumulate. Call optimizer.zero_grad() before loss.backward() (or right after optimizer.step()).",
         None if leftover is None else want + leftover),
    ], rtol=1e-3, atol=1e-5) or named(got, [
        (f"The step ignores beta: its gradients are those of rec + KL, with beta = {beta:g} the KL term is beta * KL.",
         (lambda: w.grad_of(lambda r, k: (r + k).mean())) if beta != 1.0 else None),
        ("beta multiplies the reconstruction term in the loss you stepped on; it weights the KL term only.",
         (lambda: w.grad_of(lambda r, k: (beta * r + k).mean())) if beta != 1.0 else None),
        ("beta multiplies the whole loss you stepped on; it weights the KL term only.",
         (lambda: w.grad_of(lambda r, k: beta * (r + k).mean())) if beta != 1.0 else None),
        ("The step was taken on rec - beta * KL: the KL has the wrong sign in the loss you called backward on. The negative "
         "ELBO ADDS the KL; the step must descend the loss you return.", lambda: w.grad_of(lambda r, k: (r - beta * k).mean())),
        ("The step's gradients are those of the loss summed over the batch: average it over the images (nats per image), "
         "as vae_loss does.", lambda: w.grad_of(lambda r, k: (r + beta * k).sum())),
        ("The step's gradients are those of the reconstruction term alone: the KL term is missing from the loss you called "
         "backward on.", lambda: w.grad_of(lambda r, k: r.mean())),
        ("The step's gradients are those of the KL term alone: the reconstruction term is missing from the loss you called "
         "backward on.", lambda: w.grad_of(lambda r, k: beta * k.mean())),
    ], rtol=1e-3, atol=1e-7)
    raise CheckFailed(found or "The gradients at optimizer.step() are not those of the batch mean of rec + beta * KL for the code "
                      "you decoded: call backward on the loss you return, vae_loss(model, x, beta) or its two terms recombined.")


def _judge_values(out: dict, w: _Watched, beta: float) -> None:
    expect_dict(out, KEYS, "vae_train_step", "")
    for key in KEYS:
        value = out[key]
        if isinstance(value, torch.Tensor):
            if value.requires_grad:
                raise CheckFailed(f"out['{key}'] is a tensor that still holds the autograd graph: the notebook keeps every "
                                  "step's numbers, so every step's graph would stay in memory. Return a Python float (.item()).")
            raise CheckFailed(f"out['{key}'] is a {describe(value)}: return Python floats (.item()), the numbers of this step.")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise CheckFailed(f"out['{key}'] is {describe(value)}: return a Python float (.item()).")
    b = len(w.x)
    rec, kl = w.rec, w.kl
    want = {"loss": (rec + beta * kl).mean(), "rec": rec.mean(), "kl": kl.mean()}
    got = {k: torch.tensor(float(out[k]), dtype=torch.float64) for k in KEYS}
    for key in KEYS:
        if close(got[key], want[key], rtol=1e-4, atol=1e-3):
            continue
        found = named(got[key], [
            (f"out['{key}'] is summed over the batch: return the batch mean, nats per image", want[key] * b),
            ("out['loss'] ignores beta: return the loss you stepped on, rec + beta * KL",
             (rec + kl).mean() if key == "loss" and beta != 1.0 else None),
            ("out['kl'] is beta * KL: return the KL itself (the figure reads the two terms of the ELBO apart, in nats)",
             beta * kl.mean() if key == "kl" and beta != 1.0 else None),
            ("out['rec'] is beta * the reconstruction term: return the reconstruction NLL itself",
             beta * rec.mean() if key == "rec" and beta != 1.0 else None),
            ("out['rec'] is the whole loss: return the reconstruction NLL alone (Bernoulli, summed over pixels)",
             want["loss"] if key == "rec" else None),
            ("out['kl'] is averaged over the latent dimensions too: sum the KL over them, average over the batch only",
             kl.mean() / w.model.latent_dim if key == "kl" else None),
        ], rtol=1e-4, atol=1e-3)
        if found:
            raise CheckFailed(f"{found}.")
        total = float(got["rec"] + beta * got["kl"])
        if key == "loss" or not close(total, got["loss"], rtol=1e-4, atol=1e-3):
            raise CheckFailed(f"The returned numbers do not fit together: rec + beta * kl = {float(got['rec']):.3f} + {beta:g} * "
                              f"{float(got['kl']):.3f} = {total:.3f}, but loss = {float(got['loss']):.3f}; expected loss "
                              f"{want['loss'].item():.3f}, rec {want['rec'].item():.3f}, kl {want['kl'].item():.3f} (batch means, "
                              "before the step, for the code you decoded). Return the terms of the loss you stepped on.")
        raise CheckFailed(f"out['{key}'] is {float(got[key]):.3f}, expected {want[key].item():.3f} (batch mean per image, before the "
                          "step, for the code you decoded): return the terms of the loss you called backward on.")


@check
def check_vae_train_step(fn: Callable) -> None:
    """``vae_train_step(model, optimizer, x, beta=1.0) -> {"loss", "rec", "kl"}``: one optimizer step on the batch mean of
    (Bernoulli NLL summed over pixels + beta * KL) for one code per image; returns that loss and its two terms (batch means,
    nats per image, before the step) as Python floats."""
    torch.manual_seed(0)
    model = LossVAE(seed=5)
    opt = StepSGD(model.parameters(), lr=1e-3)
    x = torch.bernoulli(torch.full((16, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(6))
    junk = torch.Generator().manual_seed(7)
    for p in model.parameters():  # gradients left over from an earlier step, as in a real loop
        p.grad = torch.randn(p.shape, generator=junk)
    leftover = flat([p.grad for p in model.parameters()])
    beta = 3.0
    w = _Watched(fn, model, opt, x, beta)
    _judge_gradients(w, beta, leftover)
    _judge_values(w.out, w, beta)
    # A second step, with the default beta: one optimizer step on this step's gradients only, whatever zero_grad style.
    again = _Watched(fn, model, opt, x, None)
    got, want = again.at_step[0], again.grad_of(lambda r, k: (r + k).mean())
    if not close(got, want, rtol=1e-3, atol=1e-6):
        if close(got, again.grad_of(lambda r, k: (r + beta * k).mean()), rtol=1e-3, atol=1e-6):
            raise CheckFailed(f"Called without beta, the step still weighted the KL by {beta:g}: the default is beta = 1.0.")
        raise CheckFailed("In a second call the gradients at optimizer.step() were not this step's alone (the first call's were "
                          "still there?): PyTorch adds gradients up. Call optimizer.zero_grad() at the start of every step (or right "
                          "after optimizer.step()).")
    _judge_values(again.out, again, 1.0)
    passed("vae_train_step", f"one step on rec + beta * KL; returned loss {w.out['loss']:.1f} = rec {w.out['rec']:.1f} + "
           f"{beta:g} * kl {w.out['kl']:.2f} nats per image")
