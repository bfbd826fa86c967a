"""Notebook 08, diffusion models: q_sample, diffusion_loss, ddpm_step."""

from __future__ import annotations

import math
from typing import Callable

import torch

from .. import diffusion
from .core import CheckFailed, call, check, close, describe, expect_tensor, named, passed, ratio_hint


# A short linear chain (T = 50) so that alpha_t and alpha_bar_t, and t and t - 1, give clearly different numbers.


def _diffusion_case(B: int, seed: int = 0):
    s = diffusion.linear_schedule(50)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(B, 1, 28, 28, generator=g) * 2 - 1
    noise = torch.randn(B, 1, 28, 28, generator=g)
    return s, g, x0, noise


def _float_output(out: torch.Tensor, like: torch.Tensor, name: str) -> None:
    if out.dtype != like.dtype:
        raise CheckFailed(f"{name} returned {str(out.dtype).replace('torch.', '')}, but its inputs are "
                          f"{str(like.dtype).replace('torch.', '')}. The schedule is stored in float64 for accuracy: convert what you "
                          "take from it to the images' dtype (`.to(x.dtype)` or `.float()`), or the network will refuse the input.")


@check
def check_q_sample(fn: Callable) -> None:
    """``q_sample(x0: (B, 1, 28, 28), t: (B,) int64 in 1..T, noise: (B, 1, 28, 28), schedule) -> x_t: (B, 1, 28, 28)``
    = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
    name = "q_sample(x0, t, noise, schedule)"
    B = 28  # as many images as pixels in a row: a (B,) factor that is not reshaped would broadcast along the width
    s, g, x0, noise = _diffusion_case(B)
    t = torch.randint(2, s.T, (B,), generator=g)
    t[:2] = torch.tensor([1, s.T])
    out = expect_tensor(call(fn, x0.clone(), t.clone(), noise.clone(), s), (B, 1, 28, 28), f"{name}")
    _float_output(out, x0, name)
    want = diffusion.q_sample(x0, t, noise, s)
    if not close(out, want, rtol=1e-4, atol=1e-5):
        col = lambda v: v.float().view(-1, 1, 1, 1)  # noqa: E731
        ab, a = s.alpha_bar.float(), s.alpha.float()
        form = lambda cs, cn: col(cs) * x0 + col(cn) * noise  # noqa: E731
        mistakes = [
            ("You used alpha_t = 1 - beta_t, one step's keep-rate, where the closed form needs alpha_bar_t = prod_{s<=t} alpha_s: "
             "q(x_t | x_0) jumps all t steps at once, so its signal is scaled by the product of all of them.",
             form(a[t].sqrt(), (1 - a[t]).sqrt())),
            ("Missing square roots: sqrt(alpha_bar_t) scales the signal and sqrt(1 - alpha_bar_t) the noise. (1 - alpha_bar_t) is the "
             "noise's VARIANCE; a standard normal times s has variance s^2.",
             form(ab[t], 1 - ab[t])),
            ("The noise term is missing its square root: the noise's variance is 1 - alpha_bar_t, so it is scaled by sqrt(1 - alpha_bar_t).",
             form(ab[t].sqrt(), 1 - ab[t])),
            ("The signal term is missing its square root: x_0 is scaled by sqrt(alpha_bar_t).",
             form(ab[t], (1 - ab[t]).sqrt())),
            ("t is off by one: you read alpha_bar at t - 1. The schedule arrays have T + 1 entries with index 0 = no noise, so "
             "alpha_bar[t] is already the value for step t.",
             form(ab[t - 1].sqrt(), (1 - ab[t - 1]).sqrt())),
            ("t is off by one: you read alpha_bar at t + 1. The schedule arrays have T + 1 entries with index 0 = no noise, so "
             "alpha_bar[t] is already the value for step t.",
             form(ab[(t + 1).clamp(max=s.T)].sqrt(), (1 - ab[(t + 1).clamp(max=s.T)]).sqrt())),
            ("x0 and noise are swapped: the SIGNAL is scaled by sqrt(alpha_bar_t) (near 1 for small t) and the noise by sqrt(1 - alpha_bar_t).",
             col(ab[t].sqrt()) * noise + col((1 - ab[t]).sqrt()) * x0),
            ("alpha_bar[t] has shape (B,) and was not reshaped: it broadcast along the images' last axis (the width), not over the batch. "
             "Give it shape (B, 1, 1, 1), e.g. with .view(-1, 1, 1, 1).",
             ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * noise),
        ]
        found = named(out, mistakes)
        if found:
            raise CheckFailed(found)
        first = int((~torch.isclose(out, want, rtol=1e-4, atol=1e-5)).flatten(1).any(1).nonzero()[0])
        raise CheckFailed(f"{name} is wrong for image {first} (t = {int(t[first])}): expected sqrt(alpha_bar_t) * x0 + "
                          f"sqrt(1 - alpha_bar_t) * noise, with alpha_bar_t = schedule.alpha_bar[t].")
    passed("q_sample", "the closed form of q(x_t | x_0)")


class _RecordingDenoiser(torch.nn.Module):
    """eps(x_t, t, y) = w * x_t with one learnable w, recording every call's inputs and output."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.calls: list[tuple] = []

    def forward(self, x, t, y=None):
        out = self.w * x
        self.calls.append((x.detach().clone(), t.detach().clone() if isinstance(t, torch.Tensor) else t, y, out.detach().clone()))
        return out


@check
def check_diffusion_loss(fn: Callable) -> None:
    """``diffusion_loss(eps_model, x0: (B, 1, 28, 28), schedule, y: (B,) or None) -> scalar``
    = mean over the batch and pixels of (eps - eps_model(x_t, t, y))^2, with t ~ U{1..T} and x_t = q_sample(x0, t, eps)."""
    name = "diffusion_loss(eps_model, x0, schedule, y)"
    B = 512  # enough draws of t in 1..50 that each end of the range shows up
    s, _, x0, _ = _diffusion_case(B, seed=1)
    y = torch.randint(0, 10, (B,), generator=torch.Generator().manual_seed(2))
    model = _RecordingDenoiser()
    torch.manual_seed(3)
    out = expect_tensor(call(fn, model, x0.clone(), s, y.clone()), (), f"{name}")
    if not model.calls:
        raise CheckFailed("eps_model was never called: the loss compares the network's prediction eps_model(x_t, t, y) with the noise.")
    if len(model.calls) > 1:
        raise CheckFailed(f"eps_model was called {len(model.calls)} times; call it once, on the whole noisy batch x_t.")
    xt, t, y_seen, pred = model.calls[0]
    if not isinstance(t, torch.Tensor) or t.shape != (B,) or t.dtype not in (torch.int64, torch.int32):
        raise CheckFailed(f"t should be a (B,) = ({B},) integer tensor, one time step per image; got {describe(t)}.")
    if len(t.unique()) == 1:
        raise CheckFailed("Every image got the same t: draw one time step per image, shape (B,).")
    if int(t.min()) == 0:
        raise CheckFailed("t is off by one: you drew t = 0, which means no noise at all (alpha_bar[0] = 1). Draw t from 1..T, e.g. "
                          "torch.randint(1, schedule.T + 1, ...): randint's upper bound is exclusive.")
    if int(t.max()) > s.T:
        raise CheckFailed(f"t went up to {int(t.max())}, beyond T = {s.T}: draw t from 1..T.")
    if int(t.max()) < s.T:
        raise CheckFailed("t never reached T: randint's upper bound is exclusive, so draw with torch.randint(1, schedule.T + 1, ...).")
    if y_seen is None or not torch.equal(torch.as_tensor(y_seen), y):
        raise CheckFailed("eps_model did not receive the labels y: pass them through, eps_model(x_t, t, y), so the network can learn "
                          "to draw the digit it is asked for.")
    if torch.allclose(xt, x0):
        raise CheckFailed("eps_model was given the clean x0: give it the noisy x_t = q_sample(x0, t, noise, schedule).")
    ab = s.alpha_bar.float()[t].view(-1, 1, 1, 1)
    eps = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()  # the noise that made the x_t the network saw
    if abs(eps.mean().item()) > 0.02 or abs(eps.std().item() - 1) > 0.02:
        raise CheckFailed(f"The x_t given to eps_model is not sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps with eps ~ N(0, I) and the same t: "
                          f"solving for eps gives mean {eps.mean().item():.3f} and std {eps.std().item():.3f} (expected 0 and 1). "
                          "Use your q_sample with a standard normal noise (torch.randn_like(x0)) and the t you pass to the model.")
    want = ((eps - pred) ** 2).mean()
    if not close(out, want, rtol=1e-3, atol=1e-5):
        independent = 1 + (pred ** 2).mean()  # E||eps' - pred||^2 per pixel when eps' is a fresh draw, independent of x_t
        mistakes = [
            ("You summed over the pixels (and averaged over the batch): average over pixels AND batch, so the loss does not scale "
             "with the image size (F.mse_loss does this).",
             want * 784),
            ("You summed over everything: take the mean over the batch and the pixels.",
             want * 784 * B),
            ("The loss compares the prediction with x0: the network predicts the NOISE eps that made x_t (DDPM's simple loss).",
             ((x0 - pred) ** 2).mean()),
            ("The prediction is compared with x_t: the target is the noise eps that made x_t.",
             ((xt - pred) ** 2).mean()),
        ]
        found = named(out.detach(), [(k, v.detach()) for k, v in mistakes])
        if found:
            raise CheckFailed(found)
        if abs(out.item() - independent.item()) < 0.02 * independent.item():
            raise CheckFailed("The target is not the noise that made x_t: you drew a second, independent noise for the loss. Draw eps "
                              "once, use it in q_sample AND as the target, or the network can only learn to predict zero.")
        raise CheckFailed(f"{name} gave {out.item():.4f}, expected {want.item():.4f} = mean((eps - eps_model(x_t, t, y))^2) over the batch "
                          f"and pixels.{ratio_hint(out, want)}")
    (grad,) = torch.autograd.grad(out, model.w, allow_unused=True) if out.requires_grad else (None,)
    if grad is None:
        raise CheckFailed("No gradient reaches the network's parameters: did you compute the prediction under torch.no_grad(), or use "
                          ".detach() / .item() on it?")
    passed("diffusion_loss", "the noise-prediction loss, with t from 1..T")


def _ddpm_reference(eps, xt, t: int, s, noise, var: str = "tilde", at: int | None = None, mean_denominator: str = "alpha",
                    coef: str = "sqrt", sign: float = 1.0, std_of: str = "sqrt"):
    """The reverse step with one ingredient changed (for the mistake catalogue); the defaults are the right step."""
    k = t if at is None else at
    beta, alpha, ab = (float(v) for v in (s.beta[k], s.alpha[k], s.alpha_bar[k]))
    c = beta / math.sqrt(1 - ab) if coef == "sqrt" else (beta / (1 - ab) if coef == "nosqrt" else beta / math.sqrt(1 - alpha))
    d = {"alpha": math.sqrt(alpha), "alpha_bar": math.sqrt(ab), "nosqrt": alpha}[mean_denominator]
    mean = (xt - sign * c * eps) / d
    v = float(s.posterior_variance()[k]) if var == "tilde" else (beta if var == "beta" else 0.0)
    return mean + (math.sqrt(v) if std_of == "sqrt" else v) * noise


# notebook 08's reverse step: each mistake of the catalogue, and the one ingredient of _ddpm_reference it changes
_DDPM_MISTAKES: list[tuple[str, dict]] = [
    ("The mean divides by sqrt(alpha_bar_t); one reverse step undoes ONE forward step, so it divides by sqrt(alpha_t) "
     "(alpha_bar belongs only in the noise coefficient beta_t / sqrt(1 - alpha_bar_t)).",
     dict(mean_denominator="alpha_bar")),
    ("The noise coefficient uses alpha_t where alpha_bar_t belongs: eps is the noise of the whole path from x_0, so the "
     "coefficient is beta_t / sqrt(1 - alpha_bar_t).",
     dict(coef="alpha")),
    ("Missing square root in the noise coefficient: it is beta_t / sqrt(1 - alpha_bar_t).",
     dict(coef="nosqrt")),
    ("Missing square root: the mean divides by sqrt(alpha_t), not alpha_t.",
     dict(mean_denominator="nosqrt")),
    ("The sign of the noise term is flipped: the step REMOVES the predicted noise, x_t - beta_t / sqrt(1 - alpha_bar_t) * eps.",
     dict(sign=-1.0)),
    ("The added noise is scaled by the variance beta_tilde_t; a standard normal must be scaled by the standard deviation "
     "sqrt(beta_tilde_t).",
     dict(std_of="variance")),
    ("You used sigma_t^2 = beta_t. Ho et al. allow it (an upper bound), but this exercise and the course's sampler use the "
     "posterior's variance beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t (schedule.posterior_variance()).",
     dict(var="beta")),
    ("The variance beta_t is used as a standard deviation, and it is not the posterior's variance: scale the noise by "
     "sqrt(beta_tilde_t).",
     dict(var="beta", std_of="variance")),
    ("No noise was added: DDPM's reverse step samples x_{t-1} ~ N(mean, beta_tilde_t I); only the last step (t = 1) is the "
     "plain mean. (Noise-free steps are DDIM's, with a different mean.)",
     dict(var="none")),
]
_DDPM_OFF_BY_ONE = ("t is off by one: you read the schedule at t - 1. Index 0 of every schedule array means no noise, so step t uses "
                    "beta[t], alpha[t] and alpha_bar[t].")  # read at t - 1: only for t > 1


@check
def check_ddpm_step(fn: Callable) -> None:
    """``ddpm_step(eps: (B, 1, 28, 28), x_t: (B, 1, 28, 28), t: int in 1..T, schedule, noise: (B, 1, 28, 28)) -> x_{t-1}``
    = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sqrt(beta_tilde_t) noise (no noise at t = 1)."""
    name = "ddpm_step(eps, x_t, t, schedule, noise)"
    B = 6
    s, g, xt, noise = _diffusion_case(B, seed=4)
    eps = torch.randn(B, 1, 28, 28, generator=g)
    for t in (2, 25, s.T, 1):  # small t first: there beta_tilde_t and beta_t, alpha_t and alpha_bar_t differ most
        out = expect_tensor(call(fn, eps.clone(), xt.clone(), t, s, noise.clone()), (B, 1, 28, 28), f"{name} at t = {t}")
        _float_output(out, xt, name)
        want = diffusion.ddpm_step(eps, xt, t, s, noise=noise)
        if close(out, want, rtol=1e-4, atol=1e-5):
            continue
        mistakes = [(message, _ddpm_reference(eps, xt, t, s, noise, **change)) for message, change in _DDPM_MISTAKES]
        mistakes.append((_DDPM_OFF_BY_ONE, _ddpm_reference(eps, xt, t, s, noise, at=t - 1) if t > 1 else None))
        found = named(out, mistakes)
        if found:
            raise CheckFailed(found + f"\n  (seen at t = {t})")
        raise CheckFailed(f"{name} at t = {t} is wrong: expected (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t) "
                          f"+ sqrt(beta_tilde_t) * noise{' (beta_tilde_1 = 0: no noise at the last step)' if t == 1 else ''}.")
    passed("ddpm_step", "mean and posterior variance at t = 2, 25, T and 1")
