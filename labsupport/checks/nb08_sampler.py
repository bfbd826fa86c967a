"""Notebook 08, the sampler the student writes: ddim_step, guided_eps and the sampling loop sample.

Each is compared with :mod:`labsupport.diffusion`'s reference on a short chain (T = 50) where alpha_t and
alpha_bar_t, t and t - 1, the conditional and the unconditional prediction all give clearly different numbers.
The loop is judged on the time grid it chose itself (read from the calls it makes), so any evenly spaced grid
from T down to 1 passes, and its result is compared with the reference chain on that grid.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .. import diffusion
from .core import CheckFailed, Unchanged, call, check, close, describe, expect_tensor, named, passed

T_CHECK = 50


def _case(B: int, seed: int) -> tuple[diffusion.Schedule, torch.Tensor, torch.Tensor]:
    """A T = 50 linear chain, x_t far enough out that some predicted x_0 leave [-1, 1] (so clipping shows), and eps."""
    s = diffusion.linear_schedule(T_CHECK)
    g = torch.Generator().manual_seed(seed)
    return s, 1.5 * torch.randn(B, 1, 28, 28, generator=g), torch.randn(B, 1, 28, 28, generator=g)


def _ddim(eps, x_t, t, t_prev, s, clip=True, recompute=True, bar=True, root=True):
    """The reference DDIM step and its catalogued variants (each switch off is one mistake)."""
    table = s.alpha_bar if bar else s.alpha
    ab, ab_prev = table[t].item(), table[t_prev].item()
    f = math.sqrt if root else (lambda v: v)
    x0 = (x_t - f(1 - ab) * eps) / f(ab)
    if clip:
        x0 = x0.clamp(-1, 1)
    if recompute:
        eps = (x_t - f(ab) * x0) / f(1 - ab)
    return f(ab_prev) * x0 + f(1 - ab_prev) * eps


@check
def check_ddim_step(fn: Callable) -> None:
    """``ddim_step(eps, x_t, t, t_prev, schedule) -> x_{t_prev}``: predict x_0, clip it to [-1, 1], re-noise it to ``t_prev``
    with the noise consistent with the clipped x_0 (eta = 0, deterministic)."""
    s, x_t, eps = _case(6, 0)
    kept = Unchanged(eps, x_t)
    t, t_prev = 30, 20
    out = call(fn, eps, x_t, t, t_prev, s)
    kept.verify("ddim_step changed eps or x_t in place: return a new tensor.")
    got = expect_tensor(out, tuple(x_t.shape), f"ddim_step(eps, x_t, {t}, {t_prev}, schedule)")
    if got.dtype != x_t.dtype:
        raise CheckFailed(f"ddim_step returned {str(got.dtype).replace('torch.', '')} for float32 images: take plain numbers from the "
                          "schedule (`.item()`) or convert them to the images' dtype.")
    want = diffusion.ddim_step(eps, x_t, t, t_prev, s)
    if not close(got, want, rtol=1e-4, atol=1e-4):
        raise CheckFailed(named(got, [
            ("The predicted x_0 is not clipped: some of its pixels lie outside [-1, 1], where no image lives. Clip x_0 to [-1, 1] "
             "before re-noising it.", _ddim(eps, x_t, t, t_prev, s, clip=False)),
            ("After clipping x_0 the step re-noises it with the network's eps; use the noise consistent with the clipped x_0 instead, "
             "eps' = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t), so that the step stays on the line from x_0 through x_t.",
             _ddim(eps, x_t, t, t_prev, s, recompute=False)),
            ("You used alpha_t (one step's factor) where DDIM needs alpha_bar_t, the product over all steps up to t "
             "(schedule.alpha_bar).", _ddim(eps, x_t, t, t_prev, s, bar=False)),
            ("A square root is missing: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, so x_0 and eps are weighted by the "
             "square roots.", _ddim(eps, x_t, t, t_prev, s, root=False)),
            ("t and t_prev are swapped: the step goes from x_t (noisier) to x_{t_prev} (less noisy).", _ddim(eps, x_t, t_prev, t, s)),
            ("That is the clipped x_0 itself: re-noise it to t_prev (at t_prev = 0 the two agree, not before).",
             _ddim(eps, x_t, t, 0, s)),
            ("That is the result clipped to [-1, 1]: clip the predicted x_0, not x_{t_prev}, which still holds noise.",
             _ddim(eps, x_t, t, t_prev, s, clip=False).clamp(-1, 1)),
        ], rtol=1e-4, atol=1e-4) or f"ddim_step's values are off (mean |difference| {(got - want).abs().mean().item():.4f}).")
    last = expect_tensor(call(fn, eps, x_t, 1, 0, s), tuple(x_t.shape), "ddim_step(eps, x_t, 1, 0, schedule)")
    if not close(last, diffusion.ddim_step(eps, x_t, 1, 0, s), rtol=1e-4, atol=1e-4):
        raise CheckFailed("The last step, t = 1 -> t_prev = 0, is wrong: alpha_bar_0 = 1 (schedule.alpha_bar[0]), so it must return the "
                          "clipped x_0 itself.")
    passed("ddim_step")


class _FakeDenoiser(torch.nn.Module):
    """A stand-in eps-model whose answer depends on x, t and the label, and that records every call's t and labels."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.calls: list[tuple[list[int], list[int] | None, int]] = []
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # so that it has a device and parameters like a real network

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or t.shape != (len(x),):
            raise CheckFailed(f"The network was called with t = {describe(t)}: it takes one integer time per image, a (B,) int64 "
                              f"tensor, e.g. torch.full((B,), t, dtype=torch.long). (x was {describe(x)}.)")
        self.calls.append((t.tolist(), None if y is None else y.tolist(), len(x)))
        label = torch.zeros(len(x)) if y is None else (y.float() + 1) / (self.num_classes + 1)
        return 0.4 * x + (t.float() / 100 + label).view(-1, 1, 1, 1) + self.anchor


def _guided_reference(model, x, t, y, w, num_classes):
    null = torch.full_like(y, num_classes)
    return (1 + w) * model(x, t, y) - w * model(x, t, null)


@check
def check_guided_eps(fn: Callable) -> None:
    """``guided_eps(eps_model, x, t, y, w, num_classes) -> (1 + w) eps(x, t, y) - w eps(x, t, no label)``, the label
    ``num_classes`` meaning "no label"; w = 0 is the plain conditional prediction."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 1, 28, 28, generator=g)
    t = torch.tensor([7, 7, 7, 7, 7])
    y = torch.tensor([0, 3, 9, 3, 1])
    model = _FakeDenoiser()
    kept = Unchanged(x, y)
    with torch.no_grad():
        out = call(fn, model, x, t, y, 2.0, 10)
    kept.verify("guided_eps changed x or y in place: build new tensors (e.g. the 'no label' batch) instead.")
    got = expect_tensor(out, tuple(x.shape), "guided_eps(eps_model, x, t, y, 2.0, 10)").detach()
    seen = {label for _, labels, _ in model.calls if labels is not None for label in labels}  # the labels the student's code asked for
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 10))
        want = 3.0 * cond - 2.0 * uncond
        zero_label = model(x, t, torch.zeros_like(y))
    if not close(got, want, rtol=1e-5, atol=1e-5):
        raise CheckFailed(named(got, [
            ("With w = 2 that is w eps_cond + (1 - w) eps_uncond: the convention where w = 1 means no guidance. This course's w "
             "is the extra weight: (1 + w) eps_cond - w eps_uncond, so w = 0 is the plain conditional model.", 2.0 * cond - 1.0 * uncond),
            ("The two predictions are swapped: guidance moves *towards* the conditional one, (1 + w) eps_cond - w eps_uncond.",
             3.0 * uncond - 2.0 * cond),
            ("You added w times the unconditional prediction; it is subtracted: (1 + w) eps_cond - w eps_uncond.", 3.0 * cond + 2.0 * uncond),
            ("That is the plain conditional prediction: w is ignored.", cond),
            ("The 'no label' prediction used label 0, a real digit. 'No label' is the extra label num_classes (here 10) that the "
             "network was trained with when the label was dropped.", 3.0 * cond - 2.0 * zero_label),
        ], rtol=1e-5, atol=1e-5) or ("The 'no label' prediction was not asked with label num_classes (10): the labels the network saw were "
                                     f"{sorted(set(seen))}." if 10 not in seen else "guided_eps's values are off."))
    plain = expect_tensor(call(fn, model, x, t, y, 0.0, 10), tuple(x.shape), "guided_eps(..., w=0.0, ...)").detach()
    if not close(plain, cond, rtol=1e-5, atol=1e-5):
        raise CheckFailed("With w = 0 the result must be the plain conditional prediction eps(x, t, y).")
    passed("guided_eps")


def _reference_chain(model, s, x_T, times, y, w, num_classes, stop_early=False):
    x = x_T.clone()
    for i, t in enumerate(times):
        if stop_early and i == len(times) - 1:
            break
        tt = torch.full((len(x),), t, dtype=torch.long)
        eps = model(x, tt, y) if y is None or w == 0 else _guided_reference(model, x, tt, y, w, num_classes)
        x = diffusion.ddim_step(eps, x, t, times[i + 1] if i + 1 < len(times) else 0, s)
    return x


@check
def check_sample(fn: Callable) -> None:
    """``sample(eps_model, schedule, x_T, steps, y=None, w=0.0, num_classes=10) -> x_0``: DDIM from the given noise ``x_T``
    over ``steps`` times evenly spaced from T down to 1 (then 0), each with your guided_eps and ddim_step; images in [-1, 1]."""
    s = diffusion.linear_schedule(T_CHECK)
    x_T = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([2, 5, 7, 0])
    model = _FakeDenoiser()
    kept = Unchanged(x_T, y)
    with torch.no_grad():
        out = call(fn, model, s, x_T, 6, y, 1.5, 10)
    kept.verify("sample changed x_T or y in place: start from a copy of the noise.")
    times: list[int] = []  # the grid the student chose, read from the network calls (two calls at one t: guidance)
    for ts, _, _ in model.calls:
        if not times or ts[0] != times[-1]:
            times.append(ts[0])
    if not times:
        raise CheckFailed("sample never called the network: each step asks eps_model for its prediction at the current x and t.")
    if times[0] != s.T:
        raise CheckFailed(f"The first network call is at t = {times[0]}: the chain starts from pure noise x_T, so the first step is at t = T = {s.T}.")
    if any(b >= a for a, b in zip(times, times[1:])):
        raise CheckFailed(f"The times of the network calls, {times}, do not go strictly down: the chain runs from t = T towards 0.")
    if times[-1] == 0:
        raise CheckFailed(f"The last network call is at t = 0 (times {times}): t runs from T down to 1; the last step goes from t = 1 to 0.")
    if times[-1] != 1:
        raise CheckFailed(f"The last network call is at t = {times[-1]} (times {times}): the grid must end at t = 1, whose step "
                          "goes to t = 0 (off by one?).")
    if len(times) != 6:
        raise CheckFailed(f"sample(..., steps=6, ...) evaluated the network at {len(times)} different times {times}: steps counts the "
                          "network evaluations, T and 1 included.")
    gaps = [a - b for a, b in zip(times, times[1:])]
    if max(gaps) - min(gaps) > 1:
        raise CheckFailed(f"The time grid {times} is not evenly spaced (gaps {gaps}): space the steps evenly from T down to 1.")
    got = expect_tensor(out, tuple(x_T.shape), "sample(eps_model, schedule, x_T, 6, y, 1.5, 10)").detach()
    with torch.no_grad():
        want = _reference_chain(model, s, x_T, times, y, 1.5, 10)
    if close(got, want, rtol=1e-4, atol=1e-4):
        passed("sample", f"DDIM over {times} with guidance, from the given x_T")
        return
    with torch.no_grad():
        mistakes = [
            ("That is the chain without guidance: pass w (and the labels) to your guided_eps at every step.",
             _reference_chain(model, s, x_T, times, y, 0.0, 10)),
            ("The last step, from t = 1 to t = 0, is missing: its DDIM step returns the clean x_0.",
             _reference_chain(model, s, x_T, times, y, 1.5, 10, stop_early=True)),
            ("The result is in [0, 1]: return the signal in [-1, 1], as the chain computes it (the notebook converts it to an image).",
             diffusion.to_image(want)),
        ]
    raise CheckFailed(named(got, mistakes, rtol=1e-4, atol=1e-4) or
                      f"sample's result differs from DDIM on the grid it used, {times} (mean |difference| {(got - want).abs().mean().item():.4f}): "
                      "each step should be x = ddim_step(guided_eps(...), x, t, next t or 0, schedule).")
