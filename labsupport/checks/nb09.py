"""Notebook 09, flow matching: flow_matching_loss, euler_sample, heun_step, guided_velocity.

The convention checked is :mod:`labsupport.flow`'s: t = 0 noise, t = 1 data, ``x_t = (1 - t) x0 + t x1``, target ``x1 - x0``,
sampling forward from t = 0 to 1 over ``t_k = k / steps``. Mistakes that belong to the other convention (t = 0 data) are named.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import flow
from .core import CheckFailed, Unchanged, call, call_explained, check, close, describe, expect_tensor, named, passed, ratio_hint

_CONVENTION = "(this course: t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1)"


class _RecordingVelocity(torch.nn.Module):
    """``v(x, t, y) = a x + b t`` (t broadcast over each row) with learnable a, b, recording every call's inputs and output."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.tensor(0.5)), torch.nn.Parameter(torch.tensor(0.3))
        self.calls: list[tuple] = []

    def forward(self, x, t, y=None):
        tt = t.reshape(-1, *[1] * (x.dim() - 1)) if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.numel() == len(x) else t
        out = self.a * x + self.b * tt
        self.calls.append((x.detach().clone(), t.detach().clone() if isinstance(t, torch.Tensor) else t, y, out.detach().clone()))
        return out


def _broadcast_explain(message: str, err: Exception) -> str | None:
    if "must match the size" in str(err) or "broadcast" in str(err):
        return (message + "\n  A (B,) t cannot multiply a batch (B, ...) directly: torch lines up the LAST axes. Give a copy of t "
                "one axis per data axis, (B, 1) for points, (B, 1, 1, 1) for images, and pass the (B,) t to the network.")
    return None


def _loss_case(fn: Callable, x1: torch.Tensor, y: torch.Tensor | None, where: str) -> None:
    name = f"flow_matching_loss(v_model, x1, y) on {where}"
    B = len(x1)
    model = _RecordingVelocity()
    out = call_explained(fn, _broadcast_explain, model, x1.clone(), None if y is None else y.clone())
    if isinstance(out, torch.Tensor) and out.dim() > 0 and out.shape[0] == B:
        raise CheckFailed(f"{name} returned shape {tuple(out.shape)}, one loss per example: the loss is ONE number, the mean over "
                          "the batch and every coordinate.")
    out = expect_tensor(out, (), name)
    if not model.calls:
        raise CheckFailed("v_model was never called: the loss compares the network's velocity v_model(x_t, t, y) with the target.")
    if len(model.calls) > 1:
        raise CheckFailed(f"v_model was called {len(model.calls)} times; call it once, on the whole batch x_t.")
    xt, t, y_seen, pred = model.calls[0]
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise CheckFailed(f"The network got t = {describe(t)}: t is a continuous time, a float tensor of shape (B,) = ({B},) with "
                          "values in [0, 1], one per example.")
    if t.shape != (B,):
        raise CheckFailed(f"The network got t of shape {tuple(t.shape)}; it takes t of shape (B,) = ({B},), one time per example. "
                          "Reshape a copy of t to scale x0 and x1, and pass the (B,) t itself to the network.")
    if len(t.unique()) == 1:
        raise CheckFailed("Every example got the same t: draw one time per example, shape (B,), so that one batch teaches the "
                          "network every part of the path.")
    if float(t.min()) < 0 or float(t.max()) > 1:
        raise CheckFailed(f"t went from {float(t.min()):.3g} to {float(t.max()):.3g}; the path runs over t in [0, 1] (uniformly).")
    if (y is None) != (y_seen is None) or (y is not None and not torch.equal(torch.as_tensor(y_seen), y)):
        raise CheckFailed("v_model did not receive the labels y as given: pass them through, v_model(x_t, t, y).")
    col = t.view(-1, *[1] * (x1.dim() - 1))
    if torch.allclose(xt, x1):
        raise CheckFailed(f"v_model was given the data x1 itself: give it the point x_t on the path from noise to data {_CONVENTION}.")
    looks_normal = lambda z: abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1) < 0.1  # noqa: E731
    x0 = (xt - col * x1) / (1 - col)  # the noise that made the x_t the network saw, if x_t is built right
    if not looks_normal(x0):
        flipped = (xt - (1 - col) * x1) / col
        if looks_normal(flipped):
            raise CheckFailed(f"x_t is built toward the wrong endpoint: you made t x0 + (1 - t) x1, which is the data at t = 0. "
                              f"Here t = 0 is the noise and t = 1 the data {_CONVENTION}; the other convention (SD3's) belongs to "
                              "other code, and mixing the two makes the sampler run the wrong way.")
        if x1.dim() > 2 and B == x1.shape[-1]:
            wide = t.view(1, *[1] * (x1.dim() - 2), B)
            if looks_normal((xt - wide * x1) / (1 - wide)):
                raise CheckFailed("t has shape (B,) and was not reshaped: it broadcast along the images' last axis (the width), not "
                                  "over the batch. Give the copy that scales x0 and x1 shape (B, 1, 1, 1).")
        if looks_normal(xt):
            raise CheckFailed("v_model was given pure noise: x_t must move from the noise (t = 0) to the data (t = 1) as t grows.")
        raise CheckFailed(f"The x_t given to v_model is not (1 - t) x0 + t x1 with x0 ~ N(0, I) and the t it received: solving for "
                          f"x0 gives mean {x0.mean().item():.3f} and std {x0.std().item():.3f} (expected 0 and 1). Draw x0 as a "
                          "standard normal of x1's shape.")
    want = ((pred - (x1 - x0)) ** 2).mean()
    if close(out, want, rtol=1e-3, atol=1e-5):
        (grad,) = torch.autograd.grad(out, model.a, allow_unused=True) if out.requires_grad else (None,)
        if grad is None:
            raise CheckFailed("No gradient reaches the network's parameters: did you compute the prediction under torch.no_grad(), "
                              "or use .detach() / .item() on it?")
        return
    n_coords = x1[0].numel()
    mistakes = [
        ("The target velocity points the wrong way: along x_t = (1 - t) x0 + t x1 the velocity is d x_t / dt = x1 - x0, from the "
         "noise toward the data, the direction the sampler follows as t grows. x0 - x1 belongs to the convention where t runs from "
         "data to noise, and a sampler going forward in t would then walk away from the data.", ((pred - (x0 - x1)) ** 2).mean()),
        ("The target is the data x1; the network regresses the VELOCITY of the path, x1 - x0.", ((pred - x1) ** 2).mean()),
        ("The target is x1 - x_t, which is (1 - t) (x1 - x0): the path's velocity is the same at every t, x1 - x0.",
         ((pred - (x1 - xt)) ** 2).mean()),
        ("You summed over the coordinates and averaged over the batch: average over both (as F.mse_loss does), so the loss does "
         "not scale with the data's dimension.", want * n_coords),
        ("You summed over everything: take the mean over the batch and every coordinate.", want * n_coords * B),
        ("You averaged over the coordinates but summed over the batch: take the mean over the batch too.", want * B),
    ]
    found = named(out.detach(), mistakes)
    if found:
        raise CheckFailed(found)
    independent = ((pred - x1) ** 2).mean() + 1  # E (pred - x1 + x0')^2 per coordinate when x0' is a fresh draw, independent of x_t
    if abs(out.item() - independent.item()) < 0.1 * independent.item():
        raise CheckFailed("The target is built from a different noise than the one in x_t: you drew a second x0 for the target. Draw "
                          "x0 once and use it both in x_t and in x1 - x0; with an independent draw the network can only learn the "
                          "average velocity.")
    raise CheckFailed(f"{name} gave {out.item():.4f}, expected {want.item():.4f} = mean((v_model(x_t, t, y) - (x1 - x0))^2) over the "
                      f"batch and every coordinate.{ratio_hint(out, want)}")


@check
def check_flow_matching_loss(fn: Callable) -> None:
    """``flow_matching_loss(v_model, x1: (B, ...), y: (B,) or None) -> scalar`` = mean over the batch and coordinates of
    (v_model(x_t, t, y) - (x1 - x0))^2, with t ~ U[0, 1] (B,), x0 ~ N(0, I), x_t = (1 - t) x0 + t x1."""
    g = torch.Generator().manual_seed(0)
    points = torch.randn(256, 2, generator=g) * 0.5 + 1.5                  # 2D data, no labels (the notebook's first use)
    images = torch.rand(28, 1, 28, 28, generator=g) * 2 - 1                # as many images as pixels in a row: see _loss_case
    labels = torch.randint(0, 10, (28,), generator=g)
    torch.manual_seed(1)
    _loss_case(fn, points, None, "2D points (256, 2)")
    _loss_case(fn, images, labels, "images (28, 1, 28, 28)")
    passed("flow_matching_loss", "2D points and images: x_t, the target x1 - x0 and the mean")


class _Field:
    """``v(x, t) = -x (1 + 2 t) + t^2``, recording the times (each call's t must be a (B,) tensor of one value)."""

    def __init__(self, B: int):
        self.B, self.times, self.bad = B, [], None

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.shape != (self.B,):
            self.bad = self.bad or f"v(x, t) was called with t = {describe(t)}; it takes t as a tensor of shape (B,) = ({self.B},), " \
                                   "one time per row (the network needs a tensor), here all equal."
            t = torch.as_tensor(t, dtype=x.dtype).reshape(-1).expand(self.B) if torch.as_tensor(t).numel() in (1, self.B) else \
                torch.zeros(self.B, dtype=x.dtype)
        self.times.append(float(t[0]))
        tt = t.to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        return -x * (1 + 2 * tt) + tt ** 2


def _times_message(got: list[float], steps: int) -> str | None:
    want = [k / steps for k in range(steps)]
    same = lambda a, b: len(a) == len(b) and all(abs(p - q) < 1e-5 for p, q in zip(a, b))  # noqa: E731
    if same(got, want):
        return None
    if same(got, [1 - k / steps for k in range(steps)]) or (got and got[0] > 0.5 and got == sorted(got, reverse=True)):
        return (f"You integrated from t = 1 down to t = 0. That is the direction of the other convention (t = 0 data, SD3); here "
                f"t = 0 is the noise x0 {_CONVENTION}, so the sampler starts at t = 0 and runs forward to t = 1.")
    if same(got, [(k + 1) / steps for k in range(steps)]):
        return "The velocity was evaluated at the END of each step (t + dt). Euler uses the velocity where the step starts, t_k = k / steps."
    if len(got) == steps - 1:
        return (f"With steps = {steps} the velocity was evaluated only {len(got)} times: the time grid is off by one. {steps} steps "
                f"need {steps + 1} grid points t_k = k / {steps}, k = 0..{steps} (e.g. a linspace of {steps + 1} points).")
    if len(got) == steps + 1:
        return (f"With steps = {steps} the velocity was evaluated {len(got)} times, once too often: the time grid is off by one. "
                f"Take one step from each t_k, k = 0..{steps - 1}; the last grid point t = 1 is where you arrive.")
    if len(got) == steps and got and abs(got[0]) < 1e-6 and abs(got[-1] - 1) < 1e-5:
        return (f"The times were {[round(v, 3) for v in got]}: the grid ends at t = 1 but a step starts there; it is off by one. "
                f"{steps} steps need {steps + 1} grid points t_k = k / {steps}, and steps start at k = 0..{steps - 1}.")
    return (f"The velocity was evaluated at t = {[round(v, 3) for v in got]}; Euler with {steps} steps evaluates it once at the start "
            f"of each step, t = {[round(v, 3) for v in want]}.")


@check
def check_euler_sample(fn: Callable) -> None:
    """``euler_sample(v, x0: (B, ...), steps: int) -> path: (steps + 1, B, ...)``: path[0] = x0, path[k + 1] = path[k] + dt v(path[k], t_k),
    t_k = k / steps, dt = 1 / steps; ``v(x, t: (B,))``."""
    name = "euler_sample(v, x0, steps)"
    g = torch.Generator().manual_seed(2)
    for steps, x0 in ((4, torch.randn(5, 2, generator=g)), (7, torch.randn(3, 1, 4, 4, generator=g))):
        B = len(x0)
        v = _Field(B)
        out = call(fn, v, x0.clone(), steps)
        if v.bad:
            raise CheckFailed(v.bad)
        msg = _times_message(v.times, steps)
        if isinstance(out, torch.Tensor) and tuple(out.shape) == tuple(x0.shape):
            raise CheckFailed(f"{name} returned one state of shape {tuple(out.shape)}; return the whole path, shape "
                              f"(steps + 1, *x0.shape) = {(steps + 1, *x0.shape)}: the start x0, then the state after each step "
                              "(torch.stack of a list). The figures draw it." + (f"\n  Also: {msg}" if msg else ""))
        if msg:
            raise CheckFailed(msg)
        if isinstance(out, torch.Tensor) and out.dim() == x0.dim() + 1 and out.shape[0] == steps:
            raise CheckFailed(f"{name} returned {steps} states; the path has steps + 1 = {steps + 1}: the start x0 first, then one "
                              "state per step.")
        out = expect_tensor(out, (steps + 1, *x0.shape), f"{name} with steps = {steps}")
        if not torch.allclose(out[0], x0):
            raise CheckFailed("path[0] should be the starting noise x0 itself (the state at t = 0).")
        want = flow.integrate(lambda x, t: _Field(B)(x, t), x0, steps, "euler", trajectory=True)[1]
        if close(out, want, rtol=1e-4, atol=1e-5):
            continue
        dt = 1 / steps
        back = [x0]
        for k in range(steps):
            back.append(back[-1] - dt * _Field(B)(back[-1], torch.full((B,), k / steps)))
        found = named(out, [
            ("dt has the wrong sign: time runs forward from t = 0 (noise) to t = 1 (data), so each step ADDS dt * v with dt = "
             "1 / steps > 0. Subtracting walks against the velocity, away from the data.", torch.stack(back)),
        ])
        raise CheckFailed(found or f"{name} is wrong from step {int((~torch.isclose(out, want, rtol=1e-4, atol=1e-5)).flatten(1).any(1).nonzero()[0])}"
                          f" on: each step is x + dt * v(x, t_k) with dt = 1 / steps and t_k = k / steps.")
    passed("euler_sample", "the time grid, the step and the path, with 4 and 7 steps")


@check
def check_heun_step(fn: Callable) -> None:
    """``heun_step(v, x: (B, ...), t: float, dt: float) -> x_next: (B, ...)`` = x + dt / 2 (v(x, t) + v(x + dt v(x, t), t + dt))."""
    name = "heun_step(v, x, t, dt)"
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 2, generator=g)
    for t, dt in ((0.25, 0.25), (0.5, 0.1)):
        B = len(x)
        v = _Field(B)
        out = expect_tensor(call(fn, v, x.clone(), t, dt), x.shape, f"{name} at t = {t}, dt = {dt}")
        if v.bad:
            raise CheckFailed(v.bad)
        want = flow.heun_step(_Field(B), x, t, dt)
        if close(out, want, rtol=1e-4, atol=1e-5):
            if len(v.times) != 2:
                raise CheckFailed(f"The velocity was evaluated {len(v.times)} times; Heun's step needs exactly two evaluations "
                                  "(the predictor's and the corrector's): reuse the first one in the average.")
            continue
        if len(v.times) == 1:
            raise CheckFailed("The velocity was evaluated once: that is an Euler step. Heun takes the Euler step as a predictor, "
                              "evaluates the velocity again where it lands, and averages the two velocities.")
        f = _Field(B)
        tb = lambda s: torch.full((B,), s)  # noqa: E731
        k1 = f(x, tb(t))
        mistakes = [
            ("The corrector's velocity was evaluated at time t; it belongs at the END of the step, t + dt, where the predictor lands.",
             x + dt / 2 * (k1 + f(x + dt * k1, tb(t)))),
            ("The corrector's velocity was evaluated at the START point x; evaluate it where the predictor lands, x + dt * v(x, t), "
             "at time t + dt.", x + dt / 2 * (k1 + f(x, tb(t + dt)))),
            ("The two velocities were added, not averaged: the step is dt times their MEAN, (v1 + v2) / 2.",
             x + dt * (k1 + f(x + dt * k1, tb(t + dt)))),
            ("Only the corrector's velocity was used: Heun averages the velocities at both ends of the step.",
             x + dt * f(x + dt * k1, tb(t + dt))),
            ("That is the midpoint method (the velocity at t + dt / 2 after half an Euler step); this exercise asks for Heun's "
             "step: predictor to t + dt, then the average of the two end velocities.", x + dt * f(x + dt / 2 * k1, tb(t + dt / 2))),
            ("The corrector was evaluated at t + dt / 2; it belongs at the end of the step, t + dt, where the predictor lands.",
             x + dt / 2 * (k1 + f(x + dt * k1, tb(t + dt / 2)))),
            ("dt has the wrong sign: time runs forward (t = 0 noise to t = 1 data), so the step adds dt times the averaged velocity.",
             x - dt / 2 * (k1 + f(x + dt * k1, tb(t + dt)))),
        ]
        found = named(out, mistakes)
        if found:
            raise CheckFailed(found + f"\n  (seen at t = {t}, dt = {dt})")
        if len(v.times) != 2:
            raise CheckFailed(f"The velocity was evaluated {len(v.times)} times at t = {v.times}; Heun's step evaluates it twice, at t "
                              "and at t + dt.")
        raise CheckFailed(f"{name} at t = {t}, dt = {dt} is wrong: expected x + dt / 2 * (v(x, t) + v(x_pred, t + dt)) with the "
                          f"predictor x_pred = x + dt * v(x, t).{ratio_hint(out - x, want - x)}")
    passed("heun_step", "predictor, corrector at t + dt, averaged")


class _LabelledVelocity(torch.nn.Module):
    """A stand-in ``v(x, t, y)`` whose answer depends on the point, the time and the label (``None`` differs from every label),
    recording each call's inputs; it has a parameter, so it sits on a device like a real network."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.shape != (len(x),):
            raise CheckFailed(f"The network was called with t = {describe(t)} for x of {describe(x)}: it takes one time per row, a (B,) "
                              "float tensor, the t you were given (repeated as often as x is).")
        self.calls.append((x.detach().clone(), t.detach().clone(), None if y is None else y.detach().clone()))
        code = torch.full((len(x),), -0.5) if y is None else (y.float() + 1) / (self.num_classes + 1)
        col = lambda v: v.view(-1, *[1] * (x.dim() - 1))  # noqa: E731
        return 0.4 * x + col(0.7 * t + code) + self.anchor


def _evaluated_apart(calls: list, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, num_classes: int) -> str | None:
    """Which of the two evaluations was not taken at the given (x, t), row for row, read from the recorded calls."""
    xs, ts = torch.cat([c[0] for c in calls]), torch.cat([c[1] for c in calls])
    ys = torch.cat([c[2] if c[2] is not None else torch.full((len(c[0]),), -1) for c in calls])
    for rows, which in ((ys == num_classes, "unconditional ('no label')"), ((ys >= 0) & (ys < num_classes), "conditional")):
        if int(rows.sum()) != len(x):
            continue
        same_x, same_t = torch.allclose(xs[rows], x), torch.allclose(ts[rows], t)
        if which == "conditional" and not torch.equal(ys[rows], y):
            return ("The conditional rows did not get the labels y in order: row i of the conditional batch is x[i] at t[i] with "
                    "label y[i]; stack the copies so that they line up (whole batches one after the other).")
        if not (same_x and same_t):
            what = "points x" if not same_x and same_t else "times t" if same_x else "points and times"
            return (f"The {which} velocity was evaluated at other {what} than the ones given: both velocities are taken at the SAME "
                    "(x, t), row for row, and only the label differs. When you stack two copies of the batch, stack x, t and the labels "
                    "the same way (whole batches one after the other).")
    return None


def _guided_case(fn: Callable, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, w: float, num_classes: int) -> None:
    name = f"guided_velocity(v_model, x, t, y, w={w:g}, num_classes={num_classes})"
    B = len(x)
    model = _LabelledVelocity(num_classes)
    kept = Unchanged(x, t, y)
    with torch.no_grad():
        out = call(fn, model, x, t, y, w, num_classes)
    kept.verify("guided_velocity changed x, t or y in place: build new tensors (e.g. the 'no label' batch) instead.")
    got = expect_tensor(out, tuple(x.shape), name).detach()
    rows = sum(len(c[0]) for c in model.calls)
    v = _LabelledVelocity(num_classes)
    with torch.no_grad():
        label = lambda k: torch.full_like(y, k)  # noqa: E731
        cond, uncond = v(x, t, y), v(x, t, label(num_classes))
        want = (1 + w) * cond - w * uncond
        if close(got, want, rtol=1e-5, atol=1e-5):
            if w == 0 and rows != B:
                raise CheckFailed(f"With w = 0 the network saw {rows} rows for a batch of {B}: w = 0 is the plain conditional velocity, "
                                  "one evaluation. Evaluating the unconditional one too doubles the cost of every sample for nothing "
                                  "(flow.nfe counts w = 0 as one evaluation per step).")
            if w != 0 and rows != 2 * B:
                raise CheckFailed(f"The network saw {rows} rows for a batch of {B}: guidance costs exactly two evaluations per sample, "
                                  "the conditional and the unconditional velocity. Compute each once and reuse it.")
            return
        other = lambda k: (1 + w) * cond - w * v(x, t, label(k))  # noqa: E731
        found = named(got, [
            (f"With w = {w:g} that is w v_cond + (1 - w) v_uncond: the convention where w = 1 means no guidance. This course's w is the "
             "extra weight: (1 + w) v_cond - w v_uncond, so w = 0 is the plain conditional velocity.", w * cond + (1 - w) * uncond),
            ("The two velocities are swapped: guidance moves *towards* the conditional one, (1 + w) v_cond - w v_uncond.",
             (1 + w) * uncond - w * cond),
            ("The difference points the wrong way: v_cond + w (v_uncond - v_cond) moves AWAY from the label. Guidance adds "
             "w (v_cond - v_uncond).", cond + w * (uncond - cond)),
            ("You added w times the unconditional velocity; it is subtracted: (1 + w) v_cond - w v_uncond.", (1 + w) * cond + w * uncond),
            ("w multiplies only the conditional velocity: the unconditional one is subtracted w times, (1 + w) v_cond - w v_uncond.",
             (1 + w) * cond - uncond),
            ("The conditional velocity is missing its extra w: (1 + w) v_cond - w v_uncond.", cond - w * uncond),
            ("That is the plain conditional velocity: w is ignored, or the 'unconditional' evaluation got the labels y too.", cond),
            ("That is the unconditional velocity alone: the labels y never steer it.", uncond),
            ("The 'no label' velocity used label 0, a real digit. 'No label' is the extra label num_classes that the network was "
             "trained with when the label was dropped.", other(0)),
            (f"The 'no label' velocity used label num_classes - 1 = {num_classes - 1}, the last real class. 'No label' is the extra "
             f"label num_classes = {num_classes} itself.", other(num_classes - 1)),
            (f"The 'no label' velocity used label 10; here num_classes = {num_classes}: use the argument num_classes, not a fixed 10.",
             other(10) if num_classes != 10 else None),
            ("The unconditional velocity was asked with y = None. This network learned 'no label' as the label num_classes (training "
             "dropped labels to it): pass a batch of that label.", lambda: (1 + w) * cond - w * v(x, t, None)),
        ], rtol=1e-5, atol=1e-5)
    found = found or _evaluated_apart(model.calls, x, t, y, num_classes)
    seen = sorted({int(k) for c in model.calls if c[2] is not None for k in c[2]})
    raise CheckFailed(found or (f"{name} is off: expected (1 + w) v(x, t, y) - w v(x, t, no label), 'no label' being the label "
                                f"num_classes. The labels the network saw were {seen}.{ratio_hint(got, want)}"))


@check
def check_guided_velocity(fn: Callable) -> None:
    """``guided_velocity(v_model, x: (B, ...), t: (B,), y: (B,), w, num_classes=10) -> (1 + w) v(x, t, y) - w v(x, t, no label)``,
    the label ``num_classes`` meaning "no label"; w = 0 is the plain conditional velocity, from one evaluation."""
    g = torch.Generator().manual_seed(4)
    images, t_img = torch.randn(5, 1, 6, 6, generator=g), torch.rand(5, generator=g)
    labels = torch.tensor([0, 3, 9, 3, 1])
    _guided_case(fn, images, t_img, labels, 2.0, 10)
    points, t_pts = torch.randn(6, 2, generator=g), torch.rand(6, generator=g)
    _guided_case(fn, points, t_pts, torch.tensor([0, 1, 2, 3, 2, 1]), 0.5, 4)
    _guided_case(fn, images, t_img, labels, 0.0, 10)
    passed("guided_velocity", "w's convention, the 'no label' batch, the same (x, t) for both, two evaluations (one at w = 0)")
