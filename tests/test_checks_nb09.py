"""Checks of notebook 09 (flow matching): three correct ways of writing each exercise pass, each catalogued mistake fails with its own message."""

import random

import numpy
import pytest
import torch
import torch.nn.functional as F

from labsupport import checks, flow
from labsupport.checks import CheckFailed


def _fails(check, fn, fragment: str) -> None:
    with pytest.raises(CheckFailed) as err:
        check(fn)
    assert fragment in str(err.value), str(err.value)


def _col(t, x):
    return t.view(-1, *[1] * (x.dim() - 1))


# --- flow_matching_loss ------------------------------------------------------------------------------

def loss_view(v_model, x1, y=None):
    t = torch.rand(len(x1))
    x0 = torch.randn_like(x1)
    tt = _col(t, x1)
    return ((v_model((1 - tt) * x0 + tt * x1, t, y) - (x1 - x0)) ** 2).mean()


def loss_mse(v_model, x1, y=None):
    noise = torch.randn(x1.shape)
    t = torch.rand(x1.shape[0], dtype=x1.dtype)
    tt = t.reshape(-1, *([1] * (x1.ndim - 1)))
    xt = x1 * tt + noise * (1 - tt)
    return F.mse_loss(v_model(xt, t, y), x1 - noise)


def loss_lerp(v_model, x1, y=None):
    x0 = torch.randn_like(x1)
    t = torch.empty(len(x1)).uniform_(0, 1)
    xt = torch.lerp(x0, x1, t[(...,) + (None,) * (x1.dim() - 1)])
    err = v_model(xt, t, y) + x0 - x1
    return err.pow(2).flatten(1).mean(1).mean()


@pytest.mark.parametrize("fn", [loss_view, loss_mse, loss_lerp, lambda m, x1, y=None: flow.loss(m, x1, y)])
def test_flow_matching_loss_accepts_correct_answers(fn):
    checks.check_flow_matching_loss(fn)


def _loss(path="right", target="right", reduce="mean", t_shape="col", same_t=False, fresh_noise=False, t_int=False):
    def fn(v_model, x1, y=None):
        B = len(x1)
        t = torch.randint(0, 2, (B,)).float() if t_int else torch.rand(B)
        if same_t:
            t = torch.full((B,), 0.3)
        x0 = torch.randn_like(x1)
        tt = _col(t, x1) if t_shape != "flat" else t
        xt = (1 - tt) * x0 + tt * x1 if path == "right" else tt * x0 + (1 - tt) * x1
        if path == "clean":
            xt = x1.clone()
        t_in = tt if t_shape == "model_col" else t
        if t_shape == "model_col":
            t_in = _col(t, x1)
        pred = v_model(xt, t_in, y)
        x0t = torch.randn_like(x1) if fresh_noise else x0
        goal = {"right": x1 - x0t, "flipped": x0t - x1, "data": x1, "x1-xt": x1 - xt}[target]
        sq = (pred - goal) ** 2
        if reduce == "mean":
            return sq.mean()
        if reduce == "sum_coords":
            return sq.flatten(1).sum(1).mean()
        if reduce == "sum_all":
            return sq.sum()
        if reduce == "sum_batch":
            return sq.flatten(1).mean(1).sum()
        if reduce == "per_example":
            return sq.flatten(1).mean(1)
    return fn


@pytest.mark.parametrize("fn, fragment", [
    (_loss(target="flipped"), "target velocity points the wrong way"),
    (_loss(path="flipped"), "wrong endpoint"),
    (_loss(path="flipped", target="flipped"), "wrong endpoint"),
    (_loss(t_shape="flat"), "lines up the LAST axes"),              # 2D: (B,) * (B, 2) cannot broadcast; the crash names the fix
    (_loss(t_shape="model_col"), "of shape (B,)"),
    (_loss(same_t=True), "same t"),
    (_loss(reduce="sum_coords"), "summed over the coordinates"),
    (_loss(reduce="sum_all"), "summed over everything"),
    (_loss(reduce="sum_batch"), "summed over the batch"),
    (_loss(reduce="per_example"), "one loss per example"),
    (_loss(fresh_noise=True), "different noise"),
    (_loss(target="data"), "target is the data x1"),
    (_loss(target="x1-xt"), "(1 - t) (x1 - x0)"),
    (_loss(path="clean"), "data x1 itself"),
    (lambda m, x1, y=None: loss_view(lambda x, t, yy: m(x, t, None), x1, y) if y is not None else loss_view(m, x1, y), "labels"),
    (lambda m, x1, y=None: loss_view(lambda x, t, yy: m(x, t, yy).detach(), x1, y), "No gradient"),
])
def test_flow_matching_loss_names_each_mistake(fn, fragment):
    _fails(checks.check_flow_matching_loss, fn, fragment)


def test_flow_matching_loss_not_broadcast_on_images_is_named():
    """On images of a batch as wide as a row, a (B,) t broadcasts along the width: the 2D case crashes, so test the images case alone."""
    model_calls = []

    def fn(v_model, x1, y=None):
        if x1.dim() == 2:
            return loss_view(v_model, x1, y)
        t = torch.rand(len(x1))
        x0 = torch.randn_like(x1)
        model_calls.append(1)
        return ((v_model((1 - t) * x0 + t * x1, t, y) - (x1 - x0)) ** 2).mean()

    _fails(checks.check_flow_matching_loss, fn, "broadcast along the images' last axis")


# --- euler_sample ---------------------------------------------------------------------------------------

def euler_list(v, x0, steps):
    dt, x, path = 1 / steps, x0, [x0]
    for k in range(steps):
        x = x + dt * v(x, torch.full((len(x),), k / steps))
        path.append(x)
    return torch.stack(path)


def euler_linspace(v, x0, steps):
    ts = torch.linspace(0, 1, steps + 1)
    path = [x0]
    for t0, t1 in zip(ts[:-1], ts[1:]):
        path.append(path[-1] + (t1 - t0) * v(path[-1], t0.repeat(x0.shape[0])))
    return torch.stack(path)


def euler_prealloc(v, x0, steps):
    out = torch.empty(steps + 1, *x0.shape, dtype=x0.dtype)
    out[0] = x0
    h = 1.0 / steps
    for k in range(steps):
        t = torch.ones(x0.shape[0]) * (k * h)
        out[k + 1] = out[k] + v(out[k], t) * h
    return out


@pytest.mark.parametrize("fn", [euler_list, euler_linspace, euler_prealloc,
                                lambda v, x0, steps: flow.integrate(v, x0, steps, "euler", trajectory=True)[1]])
def test_euler_sample_accepts_correct_answers(fn):
    checks.check_euler_sample(fn)


def _euler(grid="right", sign=1.0, at="start", keep_x0=True, final_only=False, float_t=False):
    def fn(v, x0, steps):
        if grid == "right":
            ts = [k / steps for k in range(steps + 1)]
        elif grid == "short":   # linspace(0, 1, steps): steps - 1 steps
            ts = torch.linspace(0, 1, steps).tolist()
        elif grid == "long":
            ts = [k / steps for k in range(steps + 1)] + [1.0 + 1 / steps]
        elif grid == "backward":
            ts = [1 - k / steps for k in range(steps + 1)]
        x, path = x0, [x0] if keep_x0 else []
        for t0, t1 in zip(ts[:-1], ts[1:]):
            te = t0 if at == "start" else t1
            tin = te if float_t else torch.full((len(x),), te)
            dt = t1 - t0
            x = x + sign * dt * v(x, tin)
            path.append(x)
        return x if final_only else torch.stack(path)
    return fn


@pytest.mark.parametrize("fn, fragment", [
    (_euler(sign=-1.0), "dt has the wrong sign"),
    (_euler(grid="backward"), "from t = 1 down to t = 0"),
    (_euler(grid="backward", sign=-1.0), "from t = 1 down to t = 0"),
    (_euler(grid="short"), "off by one"),
    (_euler(grid="long"), "once too often"),
    (_euler(at="end"), "END of each step"),
    (_euler(keep_x0=False), "steps + 1"),
    (_euler(final_only=True), "whole path"),
    (_euler(float_t=True), "tensor of shape (B,)"),
])
def test_euler_sample_names_each_mistake(fn, fragment):
    _fails(checks.check_euler_sample, fn, fragment)


# --- heun_step -------------------------------------------------------------------------------------------

def heun_plain(v, x, t, dt):
    tb = lambda s: torch.full((len(x),), s)  # noqa: E731
    k1 = v(x, tb(t))
    return x + dt / 2 * (k1 + v(x + dt * k1, tb(t + dt)))


def heun_two_stage(v, x, t, dt):
    t0 = torch.ones(x.shape[0]) * t
    v0 = v(x, t0)
    x_euler = x + dt * v0
    v1 = v(x_euler, t0 + dt)
    return x + 0.5 * dt * v0 + 0.5 * dt * v1


def heun_average(v, x, t, dt):
    tt = torch.tensor([t] * len(x))
    slopes = [v(x, tt)]
    slopes.append(v(x + slopes[0] * dt, tt + dt))
    return x + dt * torch.stack(slopes).mean(0)


@pytest.mark.parametrize("fn", [heun_plain, heun_two_stage, heun_average, flow.heun_step])
def test_heun_step_accepts_correct_answers(fn):
    checks.check_heun_step(fn)


def _heun(t2="end", at_x="pred", combine="avg", extra_eval=False):
    def fn(v, x, t, dt):
        tb = lambda s: torch.full((len(x),), s)  # noqa: E731
        k1 = v(x, tb(t))
        if extra_eval:
            v(x, tb(t))
        if combine == "euler":
            return x + dt * k1
        if combine == "midpoint":
            return x + dt * v(x + dt / 2 * k1, tb(t + dt / 2))
        s = {"end": t + dt, "start": t, "half": t + dt / 2}[t2]
        k2 = v(x + dt * k1 if at_x == "pred" else x, tb(s))
        return {"avg": x + dt / 2 * (k1 + k2), "sum": x + dt * (k1 + k2), "k2": x + dt * k2, "neg": x - dt / 2 * (k1 + k2)}[combine]
    return fn


@pytest.mark.parametrize("fn, fragment", [
    (_heun(t2="start"), "at time t; it belongs at the END"),
    (_heun(t2="half"), "at t + dt / 2"),
    (_heun(at_x="start"), "START point x"),
    (_heun(combine="sum"), "added, not averaged"),
    (_heun(combine="k2"), "Only the corrector"),
    (_heun(combine="midpoint"), "midpoint method"),
    (_heun(combine="euler"), "Euler step"),
    (_heun(combine="neg"), "dt has the wrong sign"),
    (_heun(extra_eval=True), "exactly two evaluations"),
    (lambda v, x, t, dt: x + dt / 2 * (v(x, t) + v(x + dt * v(x, t), t + dt)), "tensor of shape (B,)"),
])
def test_heun_step_names_each_mistake(fn, fragment):
    _fails(checks.check_heun_step, fn, fragment)


@pytest.mark.parametrize("check, fn", [(checks.check_flow_matching_loss, loss_view), (checks.check_euler_sample, euler_list),
                                       (checks.check_heun_step, heun_plain), (checks.check_flow_matching_loss, _loss(target="flipped"))])
def test_checks_leave_the_callers_random_state_alone(check, fn):
    torch.manual_seed(123), random.seed(4), numpy.random.seed(5)
    want = (torch.rand(3), random.random(), numpy.random.rand())
    torch.manual_seed(123), random.seed(4), numpy.random.seed(5)
    try:
        check(fn)
    except CheckFailed:
        pass
    got = (torch.rand(3), random.random(), numpy.random.rand())
    assert torch.equal(got[0], want[0]) and got[1:] == want[1:]


# --- guided_velocity ---------------------------------------------------------------------------------

def guided_batched(v_model, x, t, y, w, num_classes=10):
    if w == 0:
        return v_model(x, t, y)
    v_cond, v_uncond = v_model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, num_classes)])).chunk(2)
    return (1 + w) * v_cond - w * v_uncond


def guided_two_calls(v_model, x, t, y, w, num_classes=10):
    v_cond = v_model(x, t, y)
    if not w:
        return v_cond
    v_uncond = v_model(x, t, y.new_full(y.shape, num_classes))
    return v_cond + w * (v_cond - v_uncond)


def guided_repeat(v_model, x, t, y, w, num_classes=10):
    if w == 0.0:
        return v_model(x, t, y)
    B = x.shape[0]
    null = torch.ones_like(y) * num_classes
    out = v_model(x.repeat(2, *[1] * (x.dim() - 1)), t.repeat(2), torch.stack([y, null]).flatten())
    return torch.lerp(out[B:], out[:B], 1 + w)


@pytest.mark.parametrize("fn", [guided_batched, guided_two_calls, guided_repeat])
def test_guided_velocity_accepts_correct_answers(fn, capsys):
    checks.check_guided_velocity(fn)
    assert "\u2713 guided_velocity" in capsys.readouterr().out


def _guided(combine="right", null="k", at="same", always_both=False, twice=False):
    """The two-call answer with one switch per known mistake."""

    def fn(v_model, x, t, y, w, num_classes=10):
        cond = v_model(x, t, y)
        if twice:
            v_model(x, t, y)
        if w == 0 and not always_both:
            return cond
        label = {"k": num_classes, "zero": 0, "last": num_classes - 1, "ten": 10}
        if null == "none":
            xs, ts = x, t
            uncond = v_model(x, t)
        else:
            xs = {"same": x, "x": x.flip(0), "t": x}[at]
            ts = {"same": t, "x": t, "t": torch.zeros_like(t)}[at]
            uncond = v_model(xs, ts, y if null == "y" else torch.full_like(y, label.get(null, num_classes)))
        return {"right": (1 + w) * cond - w * uncond, "s": w * cond + (1 - w) * uncond, "swap": (1 + w) * uncond - w * cond,
                "reverse": cond + w * (uncond - cond), "plus": (1 + w) * cond + w * uncond, "cond_only_w": (1 + w) * cond - uncond,
                "no_extra": cond - w * uncond, "plain": cond, "uncond": uncond}[combine]
    return fn


def guided_interleaved(v_model, x, t, y, w, num_classes=10):
    if w == 0:
        return v_model(x, t, y)
    out = v_model(x.repeat_interleave(2, 0), t.repeat_interleave(2), torch.cat([y, torch.full_like(y, num_classes)]))
    return (1 + w) * out[: len(x)] - w * out[len(x):]


@pytest.mark.parametrize("fn, fragment", [
    (_guided(combine="s"), "the convention where w = 1 means no guidance"),
    (_guided(combine="swap"), "The two velocities are swapped"),
    (_guided(combine="reverse"), "moves AWAY from the label"),
    (_guided(combine="plus"), "it is subtracted"),
    (_guided(combine="cond_only_w"), "w multiplies only the conditional velocity"),
    (_guided(combine="no_extra"), "missing its extra w"),
    (_guided(combine="plain"), "w is ignored"),
    (_guided(null="y"), "w is ignored, or the 'unconditional' evaluation got the labels y"),
    (_guided(combine="uncond"), "the unconditional velocity alone"),
    (_guided(null="zero"), "used label 0, a real digit"),
    (_guided(null="last"), "the last real class"),
    (_guided(null="ten"), "not a fixed 10"),
    (_guided(null="none"), "asked with y = None"),
    (_guided(at="t"), "evaluated at other times t than the ones given"),
    (_guided(at="x"), "evaluated at other points x than the ones given"),
    (guided_interleaved, "stack x, t and the labels the same way"),
    (_guided(always_both=True), "With w = 0 the network saw 10 rows for a batch of 5"),
    (_guided(twice=True), "Compute each once"),
])
def test_guided_velocity_names_each_mistake(fn, fragment):
    _fails(checks.check_guided_velocity, fn, fragment)
